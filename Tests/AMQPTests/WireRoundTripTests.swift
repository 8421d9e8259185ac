internal import CRabbitMQ
import Testing

@testable import AMQP

/// Properties and tables go through `CArena` (Swift to librabbitmq's C structures) and back
/// through `CBridge` (C structures to Swift) unchanged, byte for byte and type for type; tables
/// also through librabbitmq's wire encoder and decoder.
@Suite("wire round trips")
struct WireRoundTripTests {
    static let ff100 = [UInt8](repeating: 0xFF, count: 100)

    /// Every field type, binary keys and binary long strings at three depths.
    static let hostileHeaders = FieldTable([
        .init("plain", .string("text")),
        .init(AMQPString(bytes: [0x6B, 0xFF]), .nonUTF8String([0xC0, 0x80, 0x00])),
        .init("bytes", .bytes([0xFF, 0xFE])),
        .init("utf8-bytes", .bytes(Array("looks like text".utf8))),
        .init("nested", .table(FieldTable([
            .init(AMQPString(bytes: [0x80]), .string("inner")),
            .init("deeper", .table(FieldTable([.init(AMQPString(bytes: [0xFE, 0x00]), .nonUTF8String([0xFF]))]))),
        ]))),
        .init("array", .array([.nonUTF8String([0xFF]), .bytes([0x01]), .string("s"), .table(FieldTable([.init(AMQPString(bytes: [0xF5]), .void)]))])),
        .init("numbers", .array([.boolean(true), .int8(-1), .uint8(1), .int16(-2), .uint16(2), .int32(-3), .uint32(3), .int64(-4), .uint64(4)])),
        .init("reals", .array([.float(1.5), .double(-2.25), .decimal(scale: 2, value: 12345), .timestamp(1_700_000_000)])),
        .init("composed", .string("\u{E9}")),
        .init("decomposed", .string("e\u{301}")),
    ])

    static let hostileProperties = BasicProperties(
        contentType: AMQPString(bytes: [0x74, 0xFF]), contentEncoding: "gzip", headers: hostileHeaders, deliveryMode: 2, priority: 7,
        correlationID: AMQPString(bytes: [0xFE, 0x00, 0xFE]), replyTo: AMQPString(bytes: [0xC3]), expiration: "60000",
        messageID: AMQPString(bytes: ff100), timestamp: 42, type: AMQPString(bytes: [0x80, 0x81]), userID: "guest",
        appID: AMQPString(bytes: [0xED, 0xA0, 0x80]), clusterID: "c")

    @Test func propertiesSurviveArenaAndBridgeByteForByte() throws {
        let arena = CArena()
        let c = try arena.properties(Self.hostileProperties)
        let back = BasicProperties(amqpProperties: c)
        #expect(back == Self.hostileProperties)
        #expect(back.messageID?.bytes == Self.ff100)
        #expect(back.correlationID?.bytes == [0xFE, 0x00, 0xFE])
        #expect(back.appID?.bytes == [0xED, 0xA0, 0x80], "an encoded surrogate is not UTF-8 and stays as it came")
    }

    @Test func headersSurviveTheWireEncodingWithTheirTypes() throws {
        let wire = try Self.hostileHeaders.wireEncoding()
        let back = try FieldTable(wireEncoding: wire)
        #expect(back == Self.hostileHeaders)
        #expect(back[AMQPString(bytes: [0x6B, 0xFF])] == .nonUTF8String([0xC0, 0x80, 0x00]), "'S' stays 'S'")
        #expect(back["bytes"] == .bytes([0xFF, 0xFE]), "'x' stays 'x'")
        #expect(back["utf8-bytes"] == .bytes(Array("looks like text".utf8)), "'x' stays 'x' even when it is text")
        #expect(back["composed"]?.stringValue.map { Array($0.utf8) } == [0xC3, 0xA9], "no Unicode normalisation")
        #expect(back["decomposed"]?.stringValue.map { Array($0.utf8) } == [0x65, 0xCC, 0x81])
        #expect(try back.wireEncoding() == wire, "and encodes to the same bytes again")
    }

    @Test func aLongStringTypeByteIsWrittenForBothStringCases() throws {
        let arena = CArena()
        #expect(try arena.value(.string("a")).kind == UInt8(ascii: "S"))
        #expect(try arena.value(.nonUTF8String([0xFF])).kind == UInt8(ascii: "S"))
        #expect(try arena.value(.bytes([0xFF])).kind == UInt8(ascii: "x"))
    }

    @Test func aShortStringIsMeasuredInBytes() {
        let arena = CArena()
        #expect(throws: AMQPError.self) { try arena.shortString(AMQPString(bytes: [UInt8](repeating: 0xFF, count: 256)), field: "message_id") }
        #expect((try? arena.shortString(AMQPString(bytes: [UInt8](repeating: 0xFF, count: 255)), field: "message_id"))?.len == 255)
        #expect(throws: AMQPError.self) {
            try Publisher.validate(OutgoingMessage(routingKey: "q", properties: BasicProperties(messageID: AMQPString(bytes: [UInt8](repeating: 0xFF, count: 256))), body: []))
        }
        #expect(throws: Never.self) {
            try Publisher.validate(OutgoingMessage(routingKey: "q", properties: BasicProperties(messageID: AMQPString(bytes: Self.ff100)), body: []))
        }
    }

    @Test func garbageIsNotDecodedAsATable() {
        #expect(throws: AMQPError.self) { try FieldTable(wireEncoding: [0x00, 0x00, 0x00, 0x09, 0x01]) }
    }
}
