import AMQP
import Foundation
import Testing

/// `GetChannel`: reading a queue message by message with `basic.get`, leaving what is not acked
/// in the queue, as an operator walking a parking queue does.
@Suite("basic.get against RabbitMQ", .requiresBroker, .timeLimit(.minutes(3)))
struct BasicGetTests {
    enum QueueType: String, CaseIterable, Sendable {
        case classic
        case quorum
    }

    /// Declares a fresh queue of `type`, runs `body`, and deletes the queue whatever happened.
    static func withQueue<T>(_ purpose: String, _ type: QueueType = .classic, on connection: AMQPConnection,
                             _ body: (String) async throws -> T) async throws -> T {
        let name = TestBroker.uniqueName(purpose)
        try await connection.declareQueue(QueueDeclaration(name: name, durable: true, arguments: ["x-queue-type": .string(type.rawValue)]))
        do {
            let result = try await body(name)
            try await TestBroker.deleteQueue(name)
            return result
        } catch {
            try? await TestBroker.deleteQueue(name)
            throw error
        }
    }

    static func publish(_ ids: [String], to queue: String, on connection: AMQPConnection) async throws {
        let publisher = try await connection.openPublisher()
        for id in ids {
            let outcome = try await publisher.publish(routingKey: queue, body: Array("body of \(id)".utf8), properties: BasicProperties(messageID: AMQPString(id)))
            #expect(outcome == .confirmed)
        }
    }

    /// Gets until the queue answers get-empty; returns what came, unacked.
    static func walk(_ queue: String, on channel: GetChannel) async throws -> [Delivery] {
        var got: [Delivery] = []
        while let message = try await channel.get(queue) { got.append(message.delivery) }
        return got
    }

    /// Requeueing after a channel close is asynchronous in the broker: waits (polling the
    /// broker's count of ready messages) until `count` are ready again.
    static func waitUntilReady(_ count: UInt32, in queue: String, on connection: AMQPConnection) async throws {
        let deadline = ContinuousClock.now + .seconds(20)
        while try await connection.declareQueue(QueueDeclaration(name: queue, passive: true)).messageCount != count {
            guard ContinuousClock.now < deadline else {
                Issue.record("queue \(queue) never had \(count) ready messages")
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    static func ids(_ deliveries: [Delivery]) -> [String] {
        deliveries.map { $0.properties.messageID?.text ?? "?" }
    }

    @Test func aGetOnAnEmptyQueueReturnsNil() async throws {
        let connection = try await TestBroker.connect()
        try await Self.withQueue("get-empty", on: connection) { queue in
            let channel = try await connection.openGetChannel()
            #expect(try await channel.get(queue) == nil)
            #expect(try await channel.get(queue) == nil, "and again: get-empty leaves the channel usable")
            try await channel.close()
        }
        await connection.close()
    }

    @Test func getsReturnMessagesInOrderWithExactBytesPropertiesAndCount() async throws {
        let connection = try await TestBroker.connect()
        try await Self.withQueue("get-exact", on: connection) { queue in
            let binary = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            let headers: FieldTable = ["x-raw": .bytes([0x00, 0xFF, 0x10]), "x-n": .int32(-5), "x-text": .string("ok")]
            let properties = BasicProperties(contentType: "application/octet-stream", headers: headers, deliveryMode: 2, messageID: "first")
            let publisher = try await connection.openPublisher()
            #expect(try await publisher.publish(routingKey: queue, body: binary, properties: properties) == .confirmed)
            #expect(try await publisher.publish(routingKey: queue, body: [], properties: BasicProperties(messageID: "empty")) == .confirmed)
            #expect(try await publisher.publish(routingKey: queue, body: [0x00], properties: BasicProperties(messageID: "third")) == .confirmed)

            let channel = try await connection.openGetChannel()
            let first = try #require(try await channel.get(queue))
            #expect(first.delivery.body == binary)
            #expect(first.delivery.properties.headers?["x-raw"] == .bytes([0x00, 0xFF, 0x10]))
            #expect(first.delivery.properties.headers?["x-n"] == .int32(-5))
            #expect(first.delivery.properties.headers?["x-text"] == .string("ok"))
            #expect(first.delivery.properties.contentType == "application/octet-stream")
            #expect(first.delivery.properties.deliveryMode == 2)
            #expect(first.delivery.properties.messageID == "first")
            #expect(first.delivery.exchange == "")
            #expect(first.delivery.routingKey == AMQPString(queue))
            #expect(first.delivery.redelivered == false)
            #expect(first.delivery.consumerTag == "")
            #expect(first.delivery.oversizedBody == nil)
            #expect(first.messageCount == 2, "two more are ready behind it")

            let second = try #require(try await channel.get(queue))
            #expect(second.delivery.properties.messageID == "empty")
            #expect(second.delivery.body == [])
            #expect(second.messageCount == 1)
            let third = try #require(try await channel.get(queue))
            #expect(third.delivery.properties.messageID == "third")
            #expect(third.delivery.body == [0x00])
            #expect(third.messageCount == 0)
            #expect(try await channel.get(queue) == nil)

            for message in [first, second, third] { try await channel.ack(message.delivery) }
            try await channel.close()
            #expect(try await connection.declareQueue(QueueDeclaration(name: queue, passive: true)).messageCount == 0)
        }
        await connection.close()
    }

    @Test(arguments: QueueType.allCases)
    func unackedGetsStayInTheQueueAndCloseRequeuesThemInOrder(_ type: QueueType) async throws {
        let connection = try await TestBroker.connect()
        try await Self.withQueue("get-requeue-\(type)", type, on: connection) { queue in
            let sent = (0..<5).map { "m\($0)" }
            try await Self.publish(sent, to: queue, on: connection)

            let walk = try await connection.openGetChannel()
            let firstWalk = try await Self.walk(queue, on: walk)
            #expect(Self.ids(firstWalk) == sent)
            #expect(firstWalk.allSatisfy { !$0.redelivered })
            #expect(try await connection.declareQueue(QueueDeclaration(name: queue, passive: true)).messageCount == 0,
                    "held unacked, none is ready")
            try await walk.close()
            try await Self.waitUntilReady(5, in: queue, on: connection)

            let again = try await connection.openGetChannel()
            let secondWalk = try await Self.walk(queue, on: again)
            #expect(Self.ids(secondWalk) == sent, "the same messages, in the same order")
            #expect(secondWalk.allSatisfy { $0.redelivered })
            #expect(secondWalk.map { $0.body } == sent.map { Array("body of \($0)".utf8) })
            try await again.close()
            try await Self.waitUntilReady(5, in: queue, on: connection)

            let third = try await connection.openGetChannel()
            let thirdWalk = try await Self.walk(queue, on: third)
            #expect(Self.ids(thirdWalk) == sent, "still the same order after a second return")
            try await third.close()

            let counts = [secondWalk, thirdWalk].map { walk in walk.map { $0.properties.headers?["x-delivery-count"]?.integerValue } }
            switch type {
            case .classic:
                #expect(counts == [Array(repeating: nil, count: 5), Array(repeating: nil, count: 5)], "classic queues do not count deliveries")
            case .quorum:
                // RabbitMQ 3.10: every return by a closing channel counts as a delivery
                // attempt, and the next delivery carries the count so far.
                #expect(counts == [Array(repeating: 1, count: 5), Array(repeating: 2, count: 5)], "x-delivery-count per walk: \(counts)")
            }
        }
        await connection.close()
    }

    @Test func ackRemovesExactlyTheAckedMessages() async throws {
        let connection = try await TestBroker.connect()
        try await Self.withQueue("get-ack", on: connection) { queue in
            let sent = (0..<5).map { "m\($0)" }
            try await Self.publish(sent, to: queue, on: connection)
            let walk = try await connection.openGetChannel()
            let got = try await Self.walk(queue, on: walk)
            #expect(Self.ids(got) == sent)
            try await walk.ack(got[1])
            try await walk.ack(got[3])
            await #expect(throws: AMQPError.self, "a second ack is refused before it reaches the broker") {
                try await walk.ack(got[3])
            }
            #expect(try await walk.get(queue) == nil, "the refused ack left the channel open")
            try await walk.close()
            await #expect(throws: AMQPError.self, "an ack after close is refused: that message went back") {
                try await walk.ack(got[0])
            }
            try await Self.waitUntilReady(3, in: queue, on: connection)

            let again = try await connection.openGetChannel()
            #expect(Self.ids(try await Self.walk(queue, on: again)) == ["m0", "m2", "m4"])
            try await again.close()
        }
        await connection.close()
    }

    @Test func aMissingQueueClosesOnlyTheChannelWith404() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openGetChannel()
        let missing = TestBroker.uniqueName("get-missing")
        let error = await #expect(throws: AMQPError.self) { try await channel.get(missing) }
        #expect(error?.code == .channelClosed)
        #expect(error?.replyCode == 404)
        #expect(connection.isOpen)
        let again = await #expect(throws: AMQPError.self, "this handle is done") { try await channel.get(missing) }
        #expect(again?.code == .channelClosed)

        try await Self.withQueue("get-after-404", on: connection) { queue in
            try await Self.publish(["after"], to: queue, on: connection)
            let fresh = try await connection.openGetChannel()
            let message = try #require(try await fresh.get(queue))
            #expect(message.delivery.properties.messageID == "after")
            try await fresh.ack(message.delivery)
            try await fresh.close()
        }
        await connection.close()
    }

    @Test func aBodyOverMaxBodySizeIsSpooledNotBuffered() async throws {
        let connection = try await TestBroker.connect()
        try await Self.withQueue("get-spool", on: connection) { queue in
            let big = (0..<(3 * 131_072 + 17)).map { UInt8(truncatingIfNeeded: ($0 &* 131) ^ ($0 >> 9)) }
            let publisher = try await connection.openPublisher()
            #expect(try await publisher.publish(routingKey: queue, body: big) == .confirmed)
            #expect(try await publisher.publish(routingKey: queue, body: [1, 2, 3]) == .confirmed)
            let channel = try await connection.openGetChannel(maxBodySize: 4096)
            let spooled = try #require(try await channel.get(queue))
            #expect(spooled.delivery.body.isEmpty)
            let oversized = try #require(spooled.delivery.oversizedBody)
            #expect(oversized.size == big.count)
            #expect(try oversized.spool.get().readAll() == big)
            let small = try #require(try await channel.get(queue))
            #expect(small.delivery.body == [1, 2, 3], "the next message is assembled in memory as usual")
            try await channel.close()
        }
        await connection.close()
    }

    @Test func twoThousandMessagesAreWalkedAndAllGoBack() async throws {
        let connection = try await TestBroker.connect()
        try await Self.withQueue("get-2000", on: connection) { queue in
            let total = 2000
            let publisher = try await connection.openPublisher(PublisherOptions(maxInFlight: 500))
            try await withThrowingTaskGroup(of: PublishOutcome.self) { group in
                for index in 0..<total {
                    group.addTask {
                        try await publisher.publish(routingKey: queue, body: Array("\(index)".utf8), properties: BasicProperties(messageID: AMQPString("\(index)")))
                    }
                }
                for try await outcome in group { #expect(outcome == .confirmed) }
            }
            let walk = try await connection.openGetChannel()
            // Nothing is kept: each message is checked and dropped (the broker holds them unacked).
            var seen = 0
            var lastCount = UInt32(total)
            while let message = try await walk.get(queue) {
                #expect(message.delivery.body == message.delivery.properties.messageID.map { Array($0.bytes) })
                #expect(message.messageCount < lastCount)
                lastCount = message.messageCount
                seen += 1
            }
            #expect(seen == total)
            try await walk.close()
            try await Self.waitUntilReady(UInt32(total), in: queue, on: connection)
        }
        await connection.close()
    }
}
