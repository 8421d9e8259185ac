import AMQP
import Foundation
import Logging
import Testing
import WarrenCore

@Suite("Built-in handlers against RabbitMQ", .requiresBroker, .timeLimit(.minutes(2)))
struct BuiltinHandlerTests {
    /// Runs an engine for `source` until `done` holds (checked every 20 ms, at most 90 s).
    /// Returns the queues the engine declared, for the caller to check and delete.
    @discardableResult
    static func withEngine(_ source: String, until done: @Sendable () async throws -> Bool) async throws -> [String] {
        let configuration = try ConfigurationLoader.parse(source: source, file: "builtin-test.toml")
        var logger = Logger(label: "warren.builtin-tests")
        logger.logLevel = .error
        let engine = Engine(configuration: configuration, logger: logger)
        let stop = Latch()
        let ready = Latch()
        let run = Task { await engine.run(stop: stop, ready: ready) }
        await ready.wait()
        // Generous: with the whole suite running in parallel on two cores, a thousand messages
        // through a handler have taken 25 s; the condition ends the wait as soon as it holds.
        let deadline = ContinuousClock.now + .seconds(90)
        var satisfied = false
        while ContinuousClock.now < deadline {
            if try await done() { satisfied = true; break }
            try await Task.sleep(for: .milliseconds(20))
        }
        stop.set()
        #expect(await run.value == .stopped)
        #expect(satisfied, "the condition was not reached within 90 s")
        return TopologyPlan(configuration).queues.map(\.declaration.name)
    }

    static func delete(_ queues: [String]) async {
        for name in queues { try? await TestBroker.deleteQueue(name) }
    }

    @Test func theFileHandlerAppendsOneJSONObjectPerMessage() async throws {
        let queue = TestBroker.uniqueName("file")
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("warren-\(UUID().uuidString).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        let source = """
            [broker]
            urls = ["\(TestBroker.url)"]
            [[queues]]
            name = "\(queue)"
            durable = false
            concurrency = 1
            handler = "archive"
            [handlers.archive]
            kind = "file"
            path = "\(path)"
            fsync = "batch"
            """
        @Sendable func lines() -> [[String: Any]] {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
            return text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        }
        let sent = Latch()
        let declared = try await Self.withEngine(source) {
            if !sent.isSet {
                sent.set()
                _ = try await publisher.publish(
                    routingKey: queue, body: Array("text body".utf8),
                    properties: BasicProperties(contentType: "text/plain", headers: ["k": "v", "n": .int32(3)], messageID: "m1", type: "T"))
                _ = try await publisher.publish(routingKey: queue, body: [0xFF, 0x00, 0xFE], properties: BasicProperties(messageID: "m2"))
            }
            return lines().count >= 2
        }
        let written = lines()
        #expect(written.count == 2)
        let text = try #require(written.first { ($0["properties"] as? [String: Any])?["message_id"] as? String == "m1" })
        #expect(text["queue"] as? String == queue)
        #expect(text["exchange"] as? String == "")
        #expect(text["routing_key"] as? String == queue)
        #expect(text["redelivered"] as? Bool == false)
        #expect(text["attempt"] as? Int == 1)
        #expect(text["body"] as? String == "text body")
        #expect((text["received_at"] as? String)?.contains("T") == true)
        let properties = try #require(text["properties"] as? [String: Any])
        #expect(properties["type"] as? String == "T")
        #expect(properties["content_type"] as? String == "text/plain")
        #expect((properties["headers"] as? [String: Any])?["k"] as? String == "v")
        #expect((properties["headers"] as? [String: Any])?["n"] as? Int == 3)
        let binary = try #require(written.first { ($0["properties"] as? [String: Any])?["message_id"] as? String == "m2" })
        #expect(binary["body_base64"] as? String == Data([0xFF, 0x00, 0xFE]).base64EncodedString())
        #expect(binary["body"] == nil)
        await Self.delete(declared)
        await connection.close()
    }

    @Test func theRepublishHandlerCopiesWithTemplatesAndAcksAfterTheConfirm() async throws {
        let queue = TestBroker.uniqueName("shovel")
        let target = "\(queue).OrderCreated.copy"
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: target, durable: false))
        let publisher = try await connection.openPublisher()
        let source = """
            [broker]
            urls = ["\(TestBroker.url)"]
            [[queues]]
            name = "\(queue)"
            durable = false
            handler = "shovel"
            [handlers.shovel]
            kind = "republish"
            routing_key = "{queue}.{type}.copy"
            """
        let sent = Latch()
        let declared = try await Self.withEngine(source) {
            if !sent.isSet {
                sent.set()
                _ = try await publisher.publish(
                    routingKey: queue, body: Array("order".utf8), properties: BasicProperties(headers: ["h": "1"], messageID: "o1", type: "OrderCreated"))
            }
            return try await connection.declareQueue(QueueDeclaration(name: target, passive: true)).messageCount == 1
        }
        let consumer = try await connection.consume(ConsumeOptions(queue: target, prefetch: 1))
        let copy = try #require(try await collect(1, from: consumer).first)
        consumer.ack(copy)
        #expect(copy.body == Array("order".utf8))
        #expect(copy.properties.messageID == "o1")
        #expect(copy.properties.type == "OrderCreated")
        #expect(copy.properties.headers?["h"] == .string("1"))
        try await consumer.close()
        #expect(try await connection.declareQueue(QueueDeclaration(name: queue, passive: true)).messageCount == 0, "the input was acked")
        try await connection.deleteQueue(target)
        await Self.delete(declared)
        await connection.close()
    }
}
