import AMQP
import Foundation
import TestSupport
import Testing
import WarrenCore

extension EngineSuites {
/// `max_body_size` is decided from the content header: a body over it is spooled to a
/// temporary file as it arrives and parked from there, whole, without a handler run.
@Suite("max_body_size against RabbitMQ", .timeLimit(.minutes(3)))
struct MaxBodySizeTests {
    /// A body whose bytes depend on `seed` and position, so a copy cut, shifted or mixed with
    /// another message's bytes does not compare equal. Megabytes of them are CPU-bound work:
    /// made off the cooperative pool.
    static func body(count: Int, seed: UInt8) async -> [UInt8] {
        await offPool { (0..<count).map { UInt8(truncatingIfNeeded: ($0 &* 131) ^ ($0 >> 9)) &+ seed } }
    }

    @Test func aBodyExactlyAtTheLimitIsHandledAndOneByteOverIsParkedWhole() async throws {
        let limit = 1 << 20
        let harness = try EngineHarness(queueSettings: "max_body_size = \"1MiB\"")
        let connection = try await TestBroker.connect()
        try await harness.start()
        let over = await Self.body(count: limit + 1, seed: 3)
        try await harness.publish("at-limit", on: connection, body: await Self.body(count: limit, seed: 1))
        try await harness.publish("over-limit", on: connection, body: over)
        let parked = try await harness.drainParked(expecting: 1, on: connection)
        #expect(await harness.recorder.wait { $0.finished == 1 })
        #expect(await harness.stopAndWait() == .stopped)
        #expect(harness.recorder.snapshot.calls.map(\.messageID) == ["at-limit"], "the handler ran for the body at the limit only")
        let copy = try #require(parked.first)
        #expect(copy.properties.messageID == "over-limit")
        #expect(copy.properties.headers?["x-warren-reason"] == .string("too_large"))
        #expect(copy.body == over, "the parked body is byte-identical")
        #expect(try await harness.messageCount(harness.queue, on: connection) == 0)
        await harness.cleanUp()
        await connection.close()
    }

    @Test func atPrefetchEightEveryOversizedMessageIsParkedWholeAndTheOthersHandled() async throws {
        let harness = try EngineHarness(queueSettings: """
            prefetch = 8
            max_body_size = "64KiB"
            """)
        let connection = try await TestBroker.connect()
        try await harness.start()
        var bodies: [String: [UInt8]] = [:]
        for index in 0..<6 {
            let id = "big-\(index)"
            bodies[id] = await Self.body(count: (3 << 20) + index * 4099, seed: UInt8(index))
            try await harness.publish(id, on: connection, body: bodies[id] ?? [])
        }
        for index in 0..<4 {
            try await harness.publish("small-\(index)", on: connection, body: await Self.body(count: 1000, seed: 200))
        }
        let parked = try await harness.drainParked(expecting: 6, on: connection)
        #expect(await harness.recorder.wait { $0.finished == 4 })
        #expect(await harness.stopAndWait() == .stopped)
        #expect(Set(harness.recorder.snapshot.calls.map(\.messageID)) == Set((0..<4).map { "small-\($0)" }))
        #expect(Set(parked.compactMap { $0.properties.messageID?.text }) == Set(bodies.keys))
        for copy in parked {
            let id = copy.properties.messageID?.text ?? ""
            #expect(copy.body == bodies[id], "parked body of \(id) is byte-identical")
            #expect(copy.properties.headers?["x-warren-reason"] == .string("too_large"))
        }
        #expect(try await harness.messageCount(harness.queue, on: connection) == 0)
        #expect(try await harness.messageCount("\(harness.queue).dead", on: connection) == 0, "exactly six were parked")
        await harness.cleanUp()
        await connection.close()
    }

    @Test func withDeadLetterBrokerAnOversizedMessageIsRejectedToTheQueuesExchangeWhole() async throws {
        let queue = TestBroker.uniqueName("big-dlx")
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: "\(queue).broker-dlq", durable: false))
        let harness = try EngineHarness(queueSettings: """
            max_body_size = "1KiB"
            dead_letter = "broker"
            arguments = { "x-dead-letter-exchange" = "", "x-dead-letter-routing-key" = "\(queue).broker-dlq" }
            """, queue: queue)
        try await harness.start()
        let big = await Self.body(count: 300_000, seed: 9)
        try await harness.publish("big", on: connection, body: big)
        let consumer = try await connection.consume(ConsumeOptions(queue: "\(queue).broker-dlq", prefetch: 1))
        let dead = try #require(try await collect(1, from: consumer).first)
        consumer.ack(dead)
        try await consumer.close()
        #expect(await harness.stopAndWait() == .stopped)
        #expect(harness.recorder.snapshot.calls.isEmpty)
        #expect(dead.properties.headers?["x-death"] != nil, "dead-lettered by the broker")
        #expect(dead.body == big)
        try await connection.deleteQueue("\(queue).broker-dlq")
        await harness.cleanUp()
        await connection.close()
    }
}
}

/// The AMQP layer on its own: a consumer opened with a limit gets a body over it in a spool
/// file, not in memory, and the bodies around it as usual.
@Suite("Consumer body limit against RabbitMQ", .requiresBroker, .timeLimit(.minutes(2)))
struct ConsumerBodyLimitTests {
    @Test func aBodyOverTheConsumersLimitArrivesSpooledAndTheOthersInMemory() async throws {
        let connection = try await TestBroker.connect()
        try await TestBroker.withQueue("spool", on: connection) { queue in
            let publisher = try await connection.openPublisher()
            let big = await EngineSuites.MaxBodySizeTests.body(count: 5 * 131_072 + 11, seed: 4)
            let bodies = [Array("small".utf8), big, [UInt8](repeating: 1, count: 4096)]
            for (index, body) in bodies.enumerated() {
                let outcome = try await publisher.publish(routingKey: queue, body: body, properties: BasicProperties(messageID: "m\(index)"))
                #expect(outcome == .confirmed)
            }
            let consumer = try await connection.consume(ConsumeOptions(queue: queue, prefetch: 8, maxBodySize: 4096))
            let deliveries = try await collect(3, from: consumer) { consumer.ack($0) }
            try await consumer.close()
            #expect(deliveries.map(\.properties.messageID) == ["m0", "m1", "m2"])
            #expect(deliveries[0].body == bodies[0] && deliveries[0].oversizedBody == nil)
            #expect(deliveries[2].body == bodies[2] && deliveries[2].oversizedBody == nil, "a body exactly at the limit is in memory")
            let oversized = try #require(deliveries[1].oversizedBody)
            #expect(deliveries[1].body.isEmpty)
            #expect(oversized.size == big.count)
            #expect(try oversized.spool.get().readAll() == big)
        }
        await connection.close()
    }
}
