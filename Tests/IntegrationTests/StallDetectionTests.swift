import AMQP
import Foundation
import Logging
import TestSupport
import Testing
import WarrenCore

/// A consumer that looks registered but receives nothing while its queue has ready
/// messages is detected and re-subscribed. The stall is real on the broker's side: a proxy
/// swallows the `basic.deliver` frames, so the broker holds them as delivered and unacked.
@Suite("Stalled consumers against RabbitMQ", .requiresBroker, .timeLimit(.minutes(2)))
struct StallDetectionTests {
    @Test func aConsumerThatReceivesNothingWhileMessagesWaitIsResubscribedAndNothingIsLost() async throws {
        let proxy = try LoopbackProxy(upstreamHost: TestBroker.endpoint.host, upstreamPort: TestBroker.endpoint.port)
        defer { proxy.stop() }
        let queue = TestBroker.uniqueName("stall")
        let configuration = try ConfigurationLoader.parse(source: """
            [broker]
            urls = ["amqp://guest:guest@127.0.0.1:\(proxy.port)/"]
            reconnect_initial_delay = "100ms"
            reconnect_max_delay = "1s"

            [handlers.scripted]
            kind = "noop"

            [[queues]]
            name = "\(queue)"
            durable = false
            prefetch = 5
            concurrency = 2
            handler = "scripted"
            retry = false
            """, file: "stall.toml")
        let recorder = Recorder()
        let log = CapturedLog()
        let engine = Engine(
            configuration: configuration, logger: log.logger(level: .info), handlerOverride: { _ in ScriptedHandler(recorder: recorder) },
            stallCheckInterval: .milliseconds(300))
        let stop = Latch()
        let ready = Latch()
        let run = Task { await engine.run(stop: stop, ready: ready) }
        await ready.wait()

        proxy.dropDeliveries()
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        let ids = (0..<20).map { "m\($0)" }
        for id in ids {
            let properties = BasicProperties(headers: ["x-test": "success"], messageID: AMQPString(id))
            #expect(try await publisher.publish(routingKey: queue, body: Array("x".utf8), properties: properties) == .confirmed)
        }
        #expect(await log.wait(for: "consumer receives nothing while its queue has ready messages; re-subscribing"))
        #expect(recorder.snapshot.calls.isEmpty, "the proxy let a delivery through")
        proxy.resumeDeliveries()

        #expect(await log.wait(for: "consumer up again"))
        #expect(await recorder.wait { Set($0.calls.map(\.messageID)) == Set(ids) && $0.running == 0 })
        #expect(log.matching("connection lost, reconnecting").isEmpty, "the session restarted instead of one consumer")
        // Every id handled once does not mean every delivery acked: under load a second stall
        // check may re-subscribe while a handler runs, and that delivery comes back. Stop only
        // once the broker holds nothing for the queue, ready or unacked.
        #expect(await Self.drained(queue), "the queue kept messages while warren ran")
        stop.set()
        #expect(await run.value == .stopped)
        #expect(try await connection.declareQueue(QueueDeclaration(name: queue, passive: true)).messageCount == 0)
        await connection.close()
        // Warren declared the queue's parking queue too.
        await CommandLineTests.deleteWarrenQueues(queue, ladder: [])
    }

    /// Waits until the broker reports `queue` with no ready and no unacked message.
    private static func drained(_ queue: String, within timeout: Duration = .seconds(60)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        repeat {
            if let counts = await FaultBroker.shared.queueCounts()[queue], counts.messages == 0, counts.unacked == 0 { return true }
            try? await Task.sleep(for: .milliseconds(100))
        } while ContinuousClock.now < deadline
        return false
    }
}
