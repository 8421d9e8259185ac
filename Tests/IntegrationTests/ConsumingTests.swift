@testable import AMQP
import Foundation
import Synchronization
import TestSupport
import Testing

@Suite("Consuming against RabbitMQ", .requiresBroker, .timeLimit(.minutes(3)))
struct ConsumingTests {
    /// Publishes `count` messages with confirms and checks every one was confirmed.
    static func fill(_ queue: String, count: Int, on connection: AMQPConnection, body: @escaping @Sendable (Int) -> [UInt8]) async throws {
        let publisher = try await connection.openPublisher(PublisherOptions(maxInFlight: 500, confirmTimeout: .seconds(30)))
        let confirmed = try await withThrowingTaskGroup(of: PublishOutcome.self) { group in
            for index in 0..<count {
                group.addTask {
                    try await publisher.publish(
                        routingKey: queue, body: body(index), properties: BasicProperties(messageID: "m\(index)"))
                }
            }
            var confirmed = 0
            for try await outcome in group where outcome == .confirmed { confirmed += 1 }
            return confirmed
        }
        #expect(confirmed == count)
    }

    @Test func consumesTenThousandMessagesAndAcksThemAllLeavingNothingUnacked() async throws {
        let connection = try await TestBroker.connect()
        try await TestBroker.withQueue("consume10k", on: connection) { queue in
            try await Self.fill(queue, count: 10_000, on: connection) { Array("message \($0)".utf8) }
            let consumer = try await connection.consume(ConsumeOptions(queue: queue, prefetch: 200))
            let received = try await collect(10_000, from: consumer) { consumer.ack($0) }
            #expect(Set(received.compactMap(\.properties.messageID)).count == 10_000)
            // Closing the channel requeues whatever is unacked; an empty queue afterwards means
            // every ack reached the broker.
            try await consumer.close()
            let state = try await connection.declareQueue(QueueDeclaration(name: queue, passive: true))
            #expect(state.messageCount == 0)
        }
        await connection.close()
    }

    @Test func oneMebibyteBodiesRoundTripByteExact() async throws {
        let connection = try await TestBroker.connect()
        let size = 1 << 20
        // Making and comparing 200 MiB is CPU-bound work: off the cooperative pool.
        let bodies = await offPool {
            (0..<200).map { index in
                var generator = SplitMix64(seed: UInt64(index) &+ 1)
                let words = (0..<(size / 8)).map { _ in generator.next() }
                return words.withUnsafeBytes { Array($0) }
            }
        }
        try await TestBroker.withQueue("large", on: connection) { queue in
            try await Self.fill(queue, count: 200, on: connection) { bodies[$0] }
            let consumer = try await connection.consume(ConsumeOptions(queue: queue, prefetch: 20))
            let received = try await collect(200, from: consumer) { consumer.ack($0) }
            let differing = await offPool {
                received.filter { delivery in
                    guard let index = delivery.properties.messageID.flatMap({ Int($0.lossyText.dropFirst()) }), bodies.indices.contains(index)
                    else { return true }
                    return delivery.body.count != size || delivery.body != bodies[index]
                }.map { $0.properties.messageID?.lossyText ?? "(no message id)" }
            }
            #expect(received.count == 200)
            #expect(differing.isEmpty, "bodies that differ from what was sent: \(differing)")
            try await consumer.close()
        }
        await connection.close()
    }

    @Test func headersOfEveryFieldTypeArriveAsSent() async throws {
        let connection = try await TestBroker.connect()
        let headers: FieldTable = [
            "bool": .boolean(true), "i8": .int8(-8), "i16": .int16(-16), "i32": .int32(-32), "i64": .int64(-64),
            "float": .float(1.5), "double": .double(2.25), "decimal": .decimal(scale: 2, value: 12345),
            "string": .string("héllo"), "bytes": .bytes([0, 255, 1]), "timestamp": .timestamp(1_763_700_000),
            "array": .array([.int32(1), .string("two"), .array([.boolean(false)])]),
            "table": .table(["nested": .table(["deep": .int64(7)])]), "void": .void,
        ]
        try await TestBroker.withQueue("headers", on: connection) { queue in
            let publisher = try await connection.openPublisher()
            let properties = BasicProperties(
                contentType: "application/json", contentEncoding: "identity", headers: headers, deliveryMode: 2, priority: 3,
                correlationID: "corr", replyTo: "reply-queue", expiration: "60000", messageID: "mid", timestamp: 1_763_700_001,
                type: "OrderCreated", userID: "guest", appID: "tests")
            let outcome = try await publisher.publish(routingKey: queue, body: [], properties: properties)
            #expect(outcome == .confirmed)
            let consumer = try await connection.consume(ConsumeOptions(queue: queue, prefetch: 1))
            let delivery = try #require(try await collect(1, from: consumer).first)
            consumer.ack(delivery)
            #expect(delivery.properties == properties)
            #expect(delivery.body.isEmpty)
            #expect(delivery.exchange == "")
            #expect(delivery.routingKey == AMQPString(queue))
            #expect(!delivery.redelivered)
            try await consumer.close()
        }
        await connection.close()
    }

    @Test func aConsumerWhoseWorkTakesThreeHeartbeatsKeepsItsConnection() async throws {
        let connection = try await TestBroker.connect(heartbeat: .seconds(1))
        #expect(connection.negotiated.heartbeat == 1)
        try await TestBroker.withQueue("slow", on: connection) { queue in
            let publisher = try await connection.openPublisher()
            let outcome = try await publisher.publish(routingKey: queue, body: Array("slow".utf8))
            #expect(outcome == .confirmed)
            let consumer = try await connection.consume(ConsumeOptions(queue: queue, prefetch: 1))
            let delivery = try #require(try await collect(1, from: consumer).first)
            // The "handler": busy for three heartbeat intervals while holding the delivery.
            try await Task.sleep(for: .seconds(3))
            consumer.ack(delivery)
            try await consumer.close()
            #expect(connection.isOpen)
            let state = try await connection.declareQueue(QueueDeclaration(name: queue, passive: true))
            #expect(state.messageCount == 0, "the ack after the slow work reached the broker")
        }
        await connection.close()
    }

    @Test func deletingTheConsumedQueueSurfacesAConsumerCancelledEvent() async throws {
        let connection = try await TestBroker.connect()
        let queue = TestBroker.uniqueName("cancel")
        try await connection.declareQueue(QueueDeclaration(name: queue, durable: false))
        let consumer = try await connection.consume(ConsumeOptions(queue: queue, prefetch: 1))
        try await connection.deleteQueue(queue)
        let error = await #expect(throws: AMQPError.self) {
            for try await _ in consumer.deliveries {}
        }
        #expect(error?.code == .consumerCancelled)
        var sawEvent = false
        for await event in connection.events {
            if case .consumerCancelled(let cancelledQueue, let tag, let channel) = event {
                #expect(cancelledQueue == queue)
                #expect(tag == consumer.consumerTag)
                #expect(channel == consumer.channel)
                sawEvent = true
                break
            }
        }
        #expect(sawEvent)
        await connection.close()
    }

    @Test func settlementsFromAClosedChannelEpochAreDroppedAndDoNotCloseTheNewChannel() async throws {
        let connection = try await TestBroker.connect()
        try await TestBroker.withQueue("epoch", on: connection) { queue in
            try await Self.fill(queue, count: 5, on: connection) { Array("m\($0)".utf8) }
            let first = try await connection.consume(ConsumeOptions(queue: queue, prefetch: 5))
            let old = try await collect(5, from: first)
            try await first.close()  // all five go back to the queue

            let second = try await connection.consume(ConsumeOptions(queue: queue, prefetch: 5))
            #expect(second.channel == first.channel, "the channel id is reused, so only the epoch tells them apart")
            #expect(second.epoch != first.epoch)
            let again = try await collect(5, from: second)
            #expect(again.allSatisfy { $0.redelivered })
            #expect(Set(again.map(\.tag.value)) == Set(old.map(\.tag.value)), "the same tags 1...5 exist on the new channel")
            // Acks for the old incarnation's tags: applied to the new channel they would ack
            // five deliveries nobody has processed.
            for stale in old { connection.settle(stale.tag, .ack) }
            try await second.close()
            var state = try await connection.declareQueue(QueueDeclaration(name: queue, passive: true))
            #expect(state.messageCount == 5, "closing the second channel requeued all five: the stale acks were dropped")

            let third = try await connection.consume(ConsumeOptions(queue: queue, prefetch: 5))
            _ = try await collect(5, from: third) { third.ack($0) }
            try await third.close()
            state = try await connection.declareQueue(QueueDeclaration(name: queue, passive: true))
            #expect(state.messageCount == 0)
        }
        var closedChannels: [ConnectionEvent] = []
        await connection.close()
        for await event in connection.events {
            if case .channelClosed = event { closedChannels.append(event) }
        }
        #expect(closedChannels.isEmpty, "the broker closed no channel: \(closedChannels)")
    }

    @Test func consumingFromAMissingQueueFailsWith404AndTheConnectionCarriesOn() async throws {
        let connection = try await TestBroker.connect()
        let error = await #expect(throws: AMQPError.self) {
            _ = try await connection.consume(ConsumeOptions(queue: TestBroker.uniqueName("missing"), prefetch: 1))
        }
        #expect(error?.code == .channelClosed)
        #expect(error?.replyCode == 404)
        try await TestBroker.withQueue("after404", on: connection) { queue in
            let consumer = try await connection.consume(ConsumeOptions(queue: queue, prefetch: 1))
            try await consumer.close()
        }
        await connection.close()
    }
}

/// Deterministic, fast pseudo-random bytes for test bodies.


@Suite("The I/O thread's executor", .requiresBroker, .timeLimit(.minutes(1)))
struct IOLoopExecutorTests {
    static func currentThread() -> UInt { UInt(pthread_self()) }

    @Test func aTaskPreferringTheExecutorRunsOnTheIOThreadAndStillRunsOnceTheConnectionIsClosed() async throws {
        let connection = try await TestBroker.connect()
        let ioThread = try await connection.perform { _ in Self.currentThread() }
        let executor = connection.executor
        let whileOpen = await withTaskExecutorPreference(executor) {
            await Task.yield()
            return Self.currentThread()
        }
        #expect(whileOpen == ioThread, "jobs of a task preferring the executor run on the connection's I/O thread")
        await connection.close()
        // The loop is gone: its jobs go to the shared pool instead of waiting forever.
        let afterClose = await withTaskExecutorPreference(executor) {
            await Task.yield()
            return Self.currentThread()
        }
        #expect(afterClose != ioThread)
    }
}
