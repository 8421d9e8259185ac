import TestSupport
import Testing

@testable import AMQP

/// What the publisher refuses before sending: content headers that cannot fit in a frame, and
/// values RabbitMQ cannot decode. Both would otherwise break the connection, and a message that
/// holds them would be published, refused and redelivered forever.
@Suite("Publish validation")
struct PublishValidationTests {
    static let everyKind: FieldTable = [
        "bool": .boolean(true), "i8": .int8(-1), "u8": .uint8(1), "i16": .int16(-2), "u16": .uint16(2), "i32": .int32(-3),
        "u32": .uint32(3), "i64": .int64(-4), "u64": .uint64(4), "f": .float(1.5), "d": .double(2.5),
        "dec": .decimal(scale: 2, value: 1234), "s": .string("text é"), "x": .bytes([0, 255]), "t": .timestamp(7), "v": .void,
        "a": .array([.int32(1), .string("two"), .array([])]), "tbl": .table(["inner": .table(["deeper": .int8(1)])]),
    ]

    @Test func theComputedWireSizeIsWhatLibrabbitmqWrites() throws {
        var random = SplitMix64(seed: 0x5749_5245)
        let samples: [BasicProperties] = [
            BasicProperties(),
            BasicProperties(headers: Self.everyKind),
            BasicProperties(
                contentType: "application/json", contentEncoding: "gzip", headers: ["k": "v"], deliveryMode: 2, priority: 9,
                correlationID: "c", replyTo: "r", expiration: "60000", messageID: "m", timestamp: 1, type: "t", userID: "guest",
                appID: "a", clusterID: "cl"),
            BasicProperties(headers: ["big": .bytes((0..<5000).map { _ in UInt8(truncatingIfNeeded: random.next()) })], messageID: AMQPString(String(repeating: "é", count: 127))),
        ]
        let arena = CArena()
        for properties in samples {
            #expect(try arena.librabbitmqPropertiesSize(properties) == properties.wireSize)
        }
    }

    static func message(_ properties: BasicProperties) -> OutgoingMessage {
        OutgoingMessage(exchange: "", routingKey: "q", mandatory: true, properties: properties, body: [1])
    }

    @Test func aContentHeaderLargerThanTheFrameIsRefusedBeforeSending() throws {
        let fits = Self.message(BasicProperties(headers: ["h": .bytes(Array(repeating: 1, count: 1000))]))
        try Publisher.validateHeaderFrame(fits, frameMax: 131_072)
        let tooBig = Self.message(BasicProperties(headers: ["h": .bytes(Array(repeating: 1, count: 131_072))]))
        #expect(throws: AMQPError.self) { try Publisher.validateHeaderFrame(tooBig, frameMax: 131_072) }
        try Publisher.validateHeaderFrame(tooBig, frameMax: 0)  // 0: the broker set no limit
    }

    @Test func nonFiniteNumbersInHeadersAreRefused() throws {
        try Publisher.validate(Self.message(BasicProperties(headers: Self.everyKind)))
        for value: FieldValue in [.double(.nan), .float(.infinity), .array([.double(-.infinity)]), .table(["x": .float(.nan)])] {
            #expect(throws: AMQPError.self) { try Publisher.validate(Self.message(BasicProperties(headers: ["n": value]))) }
        }
    }

    @Test func tablesNestedPastTheLimitAreNotEncoded() throws {
        var table: FieldTable = ["leaf": 1]
        for _ in 0..<(FieldTable.maximumDepth + 1) { table = ["n": .table(table)] }
        #expect(throws: AMQPError.self) { _ = try CArena().table(table) }
        var shallow: FieldTable = ["leaf": 1]
        for _ in 0..<(FieldTable.maximumDepth - 1) { shallow = ["n": .table(shallow)] }
        _ = try CArena().table(shallow)
    }
}
