import AMQP
import Foundation
import Synchronization
import TestSupport
import Testing
import WarrenCore

/// What the broker itself would never deliver, injected by a proxy that rewrites the content
/// header of deliveries on their way to warren: decoding paths that a real producer cannot reach
/// through RabbitMQ, and the last-resort paths they lead to.
@Suite("Mutated frames through a proxy", .serialized, .requiresBroker, .timeLimit(.minutes(3)))
struct FrameMutationTests {
    /// Appends `"nan": <double NaN>` to the headers of a content header whose properties start
    /// with the headers table (no content type or encoding), which `EngineHarness.publish` sends.
    /// RabbitMQ refuses such a value from a producer (it closes the connection), so no copy warren
    /// makes of the message can be published either.
    @Sendable static func injectNaN(_ payload: [UInt8]) -> [UInt8]? {
        guard payload.count >= 18 else { return nil }
        let flags = UInt16(payload[12]) << 8 | UInt16(payload[13])
        guard flags & 0x2000 != 0, flags & 0xC000 == 0 else { return nil }
        let length = payload[14..<18].reduce(0) { $0 << 8 | Int($1) }
        let entry: [UInt8] = [3] + Array("nan".utf8) + [UInt8(ascii: "d")] + withUnsafeBytes(of: Double.nan.bitPattern.bigEndian) { Array($0) }
        var out = Array(payload[0..<14])
        out += withUnsafeBytes(of: UInt32(length + entry.count).bigEndian) { Array($0) }
        out += payload[18..<18 + length] + entry + payload[(18 + length)...]
        return out
    }

    static func proxy() throws -> LoopbackProxy {
        try LoopbackProxy(upstreamHost: TestBroker.endpoint.host, upstreamPort: TestBroker.endpoint.port)
    }

    static func url(_ proxy: LoopbackProxy) -> String { "amqp://guest:guest@127.0.0.1:\(proxy.port)/" }

    static let failingLadder = """
        ack_policy = "nack_on_error"
        [queues.retry]
        max_attempts = 2
        delay = "100ms"
        """

    @Test func aDeliveryNoCopyOfWhichCanBePublishedIsRejectedToTheQueuesDeadLetterExchange() async throws {
        let proxy = try Self.proxy()
        defer { proxy.stop() }
        proxy.mutateDeliveryHeaders(Self.injectNaN)
        let queue = TestBroker.uniqueName("mutated-dlx")
        let target = "\(queue).broker-dlx"
        let connection = try await TestBroker.connect()
        _ = try await connection.declareQueue(QueueDeclaration(name: target, durable: false))
        let harness = try EngineHarness(
            queueSettings: """
                arguments = { "x-dead-letter-exchange" = "", "x-dead-letter-routing-key" = "\(target)" }
                \(Self.failingLadder)
                """, queue: queue, brokerURL: Self.url(proxy))
        try await harness.start()
        try await harness.publish("uncopyable", test: "fail", headers: ["x-test-always": true, "tenant": "acme"], on: connection)
        let consumer = try await connection.consume(ConsumeOptions(queue: target, prefetch: 10))
        let rejected = try await collect(1, from: consumer, within: .seconds(30)) { consumer.ack($0) }
        try await consumer.close()
        #expect(await harness.stopAndWait() == .stopped)
        #expect(rejected.first?.properties.messageID == "uncopyable")
        #expect(rejected.first?.properties.headers?["tenant"] == "acme", "the broker dead-lettered its own, intact copy")
        #expect(harness.recorder.snapshot.calls(for: "uncopyable").count == 1, "one run: the ladder could not take it, nor the parking queue")
        #expect(try await harness.messageCount(queue, on: connection) == 0)
        await harness.cleanUp()
        try? await TestBroker.deleteQueue(target)
        await connection.close()
    }

    @Test func withoutADeadLetterExchangeSuchADeliveryIsHeldUnackedAndLoggedOnce() async throws {
        let proxy = try Self.proxy()
        defer { proxy.stop() }
        proxy.mutateDeliveryHeaders(Self.injectNaN)
        let log = CapturedLog()
        let harness = try EngineHarness(queueSettings: Self.failingLadder, brokerURL: Self.url(proxy), log: log)
        let connection = try await TestBroker.connect()
        try await harness.start()
        try await harness.publish("held", test: "fail", headers: ["x-test-always": true], on: connection)
        #expect(await log.wait(for: "message held unacked: no copy could be parked and the queue has no dead-letter exchange"))
        // Another message still goes through: the held one occupies one prefetch slot only.
        proxy.mutateDeliveryHeaders(nil)
        try await harness.publish("next", on: connection)
        #expect(await harness.recorder.wait { $0.calls(for: "next").count == 1 })
        #expect(harness.recorder.snapshot.calls(for: "held").count == 1, "held, not looping")
        #expect(log.matching("message held unacked: no copy could be parked and the queue has no dead-letter exchange").count == 1)
        #expect(await harness.stopAndWait() == .stopped)
        #expect(try await harness.messageCount(harness.queue, on: connection) == 1, "the broker still has the held message: nothing lost")
        await harness.cleanUp()
        await connection.close()
    }

    @Test func bodyFramesBeyondTheAnnouncedSizeCostAReconnectNotACrash() async throws {
        let proxy = try Self.proxy()
        defer { proxy.stop() }
        let once = Atomic<Bool>(false)
        proxy.mutateDeliveryHeaders { payload in
            // The first delivery announces one byte less than its body frames carry.
            guard payload.count >= 12, !once.exchange(true, ordering: .relaxed) else { return nil }
            var out = payload
            let size = out[4..<12].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            withUnsafeBytes(of: (size - 1).bigEndian) { out.replaceSubrange(4..<12, with: $0) }
            return out
        }
        let harness = try EngineHarness(brokerURL: Self.url(proxy))
        let connection = try await TestBroker.connect()
        try await harness.start()
        try await harness.publish("oversized-frames", on: connection)
        #expect(await harness.recorder.wait { $0.calls(for: "oversized-frames").count == 1 })
        let call = harness.recorder.snapshot.calls(for: "oversized-frames").first
        #expect(call?.redelivered == true, "the corrupt delivery never reached the handler; the broker redelivered it after the reconnect")
        #expect(await harness.stopAndWait() == .stopped)
        #expect(try await harness.messageCount(harness.queue, on: connection) == 0)
        await harness.cleanUp()
        await connection.close()
    }
}
