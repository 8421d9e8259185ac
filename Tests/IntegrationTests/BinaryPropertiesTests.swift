import AMQP
import Foundation
import Testing
import WarrenCore

extension EngineSuites {
/// A hostile producer's bytes: short strings and header keys that are not UTF-8 survive warren's
/// retry and dead-letter copies unchanged, and every header keeps its wire type.
@Suite("Binary properties against RabbitMQ", .timeLimit(.minutes(2)))
struct BinaryPropertiesTests {
    static let ff100 = [UInt8](repeating: 0xFF, count: 100)

    @Test func nonUTF8PropertiesAndHeadersSurviveTheRetryLadderAndParkingByteForByte() async throws {
        let harness = try EngineHarness(queueSettings: """
            [queues.retry]
            max_attempts = 2
            delay = "200ms"
            """)
        let connection = try await TestBroker.connect()
        try await harness.start()

        let headers = FieldTable([
            .init("x-test", .string("fail")),
            .init("x-test-always", .boolean(true)),
            .init(AMQPString(bytes: [0x6B, 0xFF, 0xFE]), .nonUTF8String([0xC3, 0x28, 0x00, 0xFF])),
            .init("raw", .bytes([0x00, 0xFF])),
            .init("text-bytes", .bytes(Array("text".utf8))),
            .init("nested", .table(FieldTable([
                .init(AMQPString(bytes: [0x80, 0x81]), .string("inner")),
                .init("deeper", .table(FieldTable([.init(AMQPString(bytes: [0xF8]), .nonUTF8String([0xFF]))]))),
            ]))),
            .init("list", .array([.nonUTF8String([0xFE]), .string("ok")])),
        ])
        let original = BasicProperties(
            contentType: "application/octet-stream", headers: headers, deliveryMode: 2,
            correlationID: AMQPString(bytes: [0xFE, 0x00, 0x41]), replyTo: AMQPString(bytes: [0xC0, 0xAF]),
            messageID: AMQPString(bytes: Self.ff100), type: AMQPString(bytes: [0x74, 0xFF]), appID: AMQPString(bytes: [0xED, 0xA0, 0x80]))
        let publisher = try await connection.openPublisher()
        let outcome = try await publisher.publish(routingKey: harness.queue, body: [0x00, 0x01], properties: original)
        #expect(outcome == .confirmed)

        let parked = try await harness.drainParked(expecting: 1, on: connection)
        #expect(await harness.stopAndWait() == .stopped)
        #expect(harness.recorder.snapshot.calls.map(\.attempt) == [1, 2], "the first run failed, the retry copy ran and failed")

        let copy = try #require(parked.first).properties
        #expect(copy.messageID?.bytes == Self.ff100)
        #expect(copy.messageID == original.messageID)
        #expect(copy.correlationID == original.correlationID)
        #expect(copy.replyTo == original.replyTo)
        #expect(copy.type == original.type)
        #expect(copy.appID == original.appID)
        #expect(copy.contentType == original.contentType)
        #expect(copy.deliveryMode == original.deliveryMode)

        let parkedHeaders = try #require(copy.headers)
        func isWarrens(_ key: AMQPString) -> Bool { key.text?.hasPrefix("x-warren-") ?? false }
        // The delay queue dead-letters the retry copy back through the broker, which adds its
        // `x-death` record and sorts the table: entries are compared one by one, each in its
        // AMQP encoding, so key bytes, value bytes and value types must all be the same.
        func isBrokers(_ key: AMQPString) -> Bool { key == "x-death" || (key.text?.hasPrefix("x-first-death-") ?? false) }
        func encoded(_ entries: [FieldTable.Entry]) throws -> [AMQPString: [UInt8]] {
            var result: [AMQPString: [UInt8]] = [:]
            for entry in entries { result[entry.key] = try FieldTable([entry]).wireEncoding() }
            return result
        }
        // The copies carry the trace warren started for the message (docs/tracing.md).
        func isTrace(_ key: AMQPString) -> Bool { key == "traceparent" || key == "tracestate" }
        let own = parkedHeaders.entries.filter { isWarrens($0.key) }
        let theirs = parkedHeaders.entries.filter { !isWarrens($0.key) && !isBrokers($0.key) && !isTrace($0.key) }
        #expect(parkedHeaders["traceparent"]?.stringValue?.count == 55)
        #expect(theirs.count == headers.count)
        #expect(try encoded(theirs) == encoded(headers.entries), "the producer's headers, byte for byte, type for type")
        #expect(parkedHeaders[AMQPString(bytes: [0x6B, 0xFF, 0xFE])] == .nonUTF8String([0xC3, 0x28, 0x00, 0xFF]), "'S' stays 'S'")
        #expect(parkedHeaders["raw"] == .bytes([0x00, 0xFF]), "'x' stays 'x'")
        #expect(parkedHeaders["text-bytes"] == .bytes(Array("text".utf8)), "'x' stays 'x' even when it reads as text")
        #expect(Set(own.compactMap(\.key.text)).isSuperset(of: ["x-warren-attempt", "x-warren-reason", "x-warren-attempts"]))
        #expect(parkedHeaders["x-warren-reason"] == .string("attempts_exhausted"))
        #expect(parkedHeaders["x-warren-attempts"]?.integerValue == 2)
        #expect(parkedHeaders["x-warren-original-exchange"] == .string(""))
        #expect(parkedHeaders["x-warren-original-routing-key"] == .string(harness.queue))
        #expect(parked.first?.body == [0x00, 0x01])

        for name in harness.declaredQueues where !name.hasSuffix(".dead") {
            #expect(try await harness.messageCount(name, on: connection) == 0, "\(name) is empty: the message does not loop")
        }
        await harness.cleanUp()
        await connection.close()
    }
}
}
