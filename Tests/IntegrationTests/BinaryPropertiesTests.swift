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
        let own = parkedHeaders.entries.filter { $0.key.text?.hasPrefix("x-warren-") ?? false }
        let theirs = parkedHeaders.entries.filter { !($0.key.text?.hasPrefix("x-warren-") ?? false) }
        // Entries compare key bytes and typed values: 'S' and 'x' are different values.
        #expect(theirs == headers.entries, "the producer's headers, type for type, in order")
        #expect(try FieldTable(theirs).wireEncoding() == headers.wireEncoding(), "and byte for byte")
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
