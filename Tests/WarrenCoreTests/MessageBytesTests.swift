import AMQP
import Foundation
import Logging
import Testing

@testable import WarrenCore

/// How short strings and headers that are not UTF-8 (or hold bytes a sink cannot carry) reach
/// each handler sink: unchanged when the sink can carry them, else under a `_base64` name with
/// the plain name absent; never altered silently. And copies keep their exact bytes.
@Suite("message bytes at the sinks")
struct MessageBytesTests {
    static let binaryID = AMQPString(bytes: [UInt8](repeating: 0xFF, count: 100))

    static func input(
        exchange: AMQPString = "ex", routingKey: AMQPString = "rk", properties: BasicProperties = BasicProperties()
    ) -> HandlerInput {
        HandlerInput(
            queue: "q", exchange: exchange, routingKey: routingKey, redelivered: false, attempt: 1, properties: properties,
            body: [], deliveryTag: 1)
    }

    // MARK: the rule

    @Test func eachSinkTakesAsItIsOnlyWhatItCanCarry() {
        #expect(SinkText.json("a\nb\u{0}") == .plain("a\nb\u{0}"), "JSON escapes controls itself")
        #expect(SinkText.json(AMQPString(bytes: [0xFF])) == .base64("/w=="))
        #expect(SinkText.environment("a\nb") == .plain("a\nb"))
        #expect(SinkText.environment("a\u{0}b") == .base64("YQBi"), "an environment string ends at NUL")
        #expect(SinkText.environment(AMQPString(bytes: [0xFF])) == .base64("/w=="))
        #expect(SinkText.httpHeader("a\tb é") == .plain("a\tb é"))
        for bad in ["a\rb", "a\nb", "a\u{0}b", "a\u{7F}"] {
            #expect(SinkText.httpHeader(AMQPString(bad)) == .base64(AMQPString(bad).base64), "\(bad.debugDescription)")
        }
    }

    // MARK: JSON

    static func object(_ value: MessageJSON.Value) -> [String: MessageJSON.Value] {
        if case .object(let object) = value { return object }
        return [:]
    }

    @Test func jsonPropertiesGiveBinaryValuesInBase64UnderTheirOwnName() {
        let properties = BasicProperties(correlationID: "c-1", messageID: Self.binaryID, type: AMQPString(bytes: [0x74, 0xFF]))
        let object = Self.object(MessageJSON.properties(properties))
        #expect(object["message_id"] == nil, "absent, not null: null means the property is not set")
        #expect(object["message_id_base64"] == .string(Self.binaryID.base64))
        #expect(object["type"] == nil)
        #expect(object["type_base64"] == .string("dP8="))
        #expect(object["correlation_id"] == .string("c-1"))
        #expect(object["reply_to"] == .null)
        #expect(object["headers_base64"] == nil, "nothing was left out of the headers")
    }

    @Test func jsonHeadersLeaveOutWhatJSONCannotCarryAndAddTheExactTable() throws {
        let headers = FieldTable([
            .init("plain", .string("v")),
            .init(AMQPString(bytes: [0x6B, 0xFF]), .string("binary key")),
            .init("binary-value", .nonUTF8String([0xFF])),
            .init("nested", .table(FieldTable([.init(AMQPString(bytes: [0x80]), .int32(1)), .init("kept", .int32(2))]))),
        ])
        let object = Self.object(MessageJSON.properties(BasicProperties(headers: headers)))
        #expect(object["headers"] == .object(["plain": .string("v"), "nested": .object(["kept": .int(2)])]))
        guard case .string(let encoded)? = object["headers_base64"] else {
            Issue.record("no headers_base64")
            return
        }
        let table = try FieldTable(wireEncoding: Array(try #require(Data(base64Encoded: encoded))))
        #expect(table == headers, "the exact table, key bytes and value types included")
    }

    @Test func pipeRequestsAndFileLinesGiveABinaryRoutingKeyInBase64() throws {
        let input = Self.input(exchange: "ex", routingKey: AMQPString(bytes: [0x61, 0xFF]))
        let frame = try PipeProtocol.request(id: 1, input)
        let line = try #require(try JSONSerialization.jsonObject(with: Data(frame.header)) as? [String: Any])
        #expect(line["routing_key"] == nil)
        #expect(line["routing_key_base64"] as? String == "Yf8=")
        #expect(line["exchange"] as? String == "ex")
        #expect(frame.header.allSatisfy { $0 != 0xFF }, "the line is valid UTF-8")
    }

    // MARK: exec environment

    static func variables(_ block: CStringBlock) -> [String: String] {
        var result: [String: String] = [:]
        for entry in block.bytes.split(separator: 0) {
            let text = String(decoding: entry, as: UTF8.self)
            guard let equals = text.firstIndex(of: "=") else { continue }
            result[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        return result
    }

    @Test func theExecEnvironmentGivesBase64TwinsForWhatAnEnvironmentStringCannotHold() throws {
        let environment = try ExecEnvironment(
            inherited: ["WARREN_MESSAGE_ID_BASE64": "spoofed", "WARREN_HEADERS_BASE64": "spoofed"], configured: [:])
        let properties = BasicProperties(
            headers: FieldTable([.init(AMQPString(bytes: [0xFF]), .string("x"))]), correlationID: "a\u{0}b", messageID: Self.binaryID,
            type: "plain\nnewline")
        let variables = Self.variables(environment.environment(for: Self.input(routingKey: AMQPString(bytes: [0xFE]), properties: properties)))
        #expect(variables["WARREN_MESSAGE_ID"] == nil)
        #expect(variables["WARREN_MESSAGE_ID_BASE64"] == Self.binaryID.base64)
        #expect(variables["WARREN_CORRELATION_ID"] == nil)
        #expect(variables["WARREN_CORRELATION_ID_BASE64"] == "YQBi")
        #expect(variables["WARREN_ROUTING_KEY_BASE64"] == "/g==")
        #expect(variables["WARREN_TYPE"] == "plain\nnewline")
        #expect(variables["WARREN_TYPE_BASE64"] == nil)
        #expect(variables["WARREN_REPLY_TO"] == "", "an absent property is still an empty variable")
        #expect(variables["WARREN_HEADERS"] == "{}")
        let headers = try #require(variables["WARREN_HEADERS_BASE64"].flatMap { Data(base64Encoded: $0) })
        #expect(try FieldTable(wireEncoding: Array(headers)) == properties.headers)
    }

    @Test func theExecEnvironmentSetsNoBase64TwinForPlainValues() throws {
        let environment = try ExecEnvironment(inherited: ["WARREN_MESSAGE_ID_BASE64": "spoofed"], configured: [:])
        let variables = Self.variables(environment.environment(for: Self.input(properties: BasicProperties(headers: ["k": "v"], messageID: "m-1"))))
        #expect(variables["WARREN_MESSAGE_ID"] == "m-1")
        #expect(variables["WARREN_MESSAGE_ID_BASE64"] == nil, "an inherited twin cannot impersonate message data")
        #expect(variables["WARREN_HEADERS_BASE64"] == nil)
    }

    // MARK: HTTP

    @Test func httpRequestsCarryUnsafeValuesInBase64Headers() async throws {
        let handler = try HTTPHandler(
            name: "h", url: "http://127.0.0.1:9/", method: "POST", headers: [:], poolSize: 1, logger: Logger(label: "test"))
        let properties = BasicProperties(contentType: "text/plain\r\nX-Injected: 1", messageID: "id\r\nX-Injected: 1")
        let request = handler.request(for: Self.input(routingKey: AMQPString(bytes: [0xFF]), properties: properties))
        #expect(request.headers["X-Warren-Message-Id"].isEmpty)
        #expect(request.headers["X-Warren-Message-Id-Base64"] == [AMQPString("id\r\nX-Injected: 1").base64])
        #expect(request.headers["X-Warren-Routing-Key"].isEmpty)
        #expect(request.headers["X-Warren-Routing-Key-Base64"] == ["/w=="])
        #expect(request.headers["Content-Type"] == ["application/octet-stream"])
        #expect(request.headers["X-Warren-Content-Type-Base64"] == [AMQPString("text/plain\r\nX-Injected: 1").base64])
        #expect(request.headers["X-Injected"].isEmpty)
        let plain = handler.request(for: Self.input(properties: BasicProperties(contentType: "text/plain", messageID: "m-1")))
        #expect(plain.headers["X-Warren-Message-Id"] == ["m-1"])
        #expect(plain.headers["Content-Type"] == ["text/plain"])
        #expect(plain.headers["X-Warren-Message-Id-Base64"].isEmpty)
        await handler.shutdown()
    }

    // MARK: copies

    @Test func theOriginHeadersHoldTheDeliverysExactBytesAsLongStrings() {
        let delivery = Delivery(
            tag: DeliveryTag(channel: 1, epoch: 1, value: 1), consumerTag: "c", redelivered: false, exchange: AMQPString(bytes: [0x65, 0xFF]),
            routingKey: AMQPString(bytes: [0x72, 0xFE]), properties: BasicProperties(messageID: Self.binaryID), body: [])
        let copy = RetryPlanner.retryCopy(of: delivery, delayQueue: "q.retry.1s", nextAttempt: 2)
        #expect(copy.properties.headers?[RetryPlanner.originalExchangeHeader] == .nonUTF8String([0x65, 0xFF]))
        #expect(copy.properties.headers?[RetryPlanner.originalRoutingKeyHeader] == .nonUTF8String([0x72, 0xFE]))
        #expect(copy.properties.messageID == Self.binaryID)
    }

    @Test func republishExpandsPlaceholdersWithExactBytesInOnePass() {
        let input = Self.input(routingKey: AMQPString(bytes: [0x7B, 0x71, 0x75, 0x65, 0x75, 0x65, 0x7D, 0xFF]))  // "{queue}\xFF"
        #expect(RepublishHandler.expand("copy.{routing_key}", input) == AMQPString(bytes: Array("copy.{queue}".utf8) + [0xFF]))
        #expect(RepublishHandler.expand("{queue}.{nope}", input) == "q.{nope}")
        #expect(RepublishHandler.expand("fixed", input) == "fixed")
    }

    // MARK: dedup keys

    static func checkDistinctBytesAreDistinctKeys(_ store: any DedupStore) async throws {
        let ff = AMQPString(bytes: [0xFF])
        try await store.record(queue: "q", messageID: ff, handlers: ["a"])
        #expect(try await store.completed(queue: "q", messageID: ff, handlers: ["a"]) == ["a"])
        #expect(try await store.completed(queue: "q", messageID: AMQPString(bytes: [0xFE]), handlers: ["a"]).isEmpty)
        #expect(try await store.completed(queue: "q", messageID: "\u{FFFD}", handlers: ["a"]).isEmpty, "not its lossy text")
        #expect(try await store.completed(queue: "q", messageID: "/w==", handlers: ["a"]).isEmpty, "not its base64")
        try await store.record(queue: "q", messageID: "\u{E9}", handlers: ["a"])
        #expect(try await store.completed(queue: "q", messageID: "e\u{301}", handlers: ["a"]).isEmpty, "not a canonically equal text")
    }

    @Test func theMemoryStoreKeepsBinaryMessageIDsApart() async throws {
        try await Self.checkDistinctBytesAreDistinctKeys(MemoryDedupStore(ttl: .seconds(60)))
    }

    @Test func theSQLiteStoreKeepsBinaryMessageIDsApart() async throws {
        let path = DedupStoreTests.temporaryPath()
        defer { DedupStoreTests.removeDatabase(path) }
        let store = try await SQLiteDedupStore.open(path: path, ttl: .seconds(60))
        try await Self.checkDistinctBytesAreDistinctKeys(store)
        await store.close()
    }
}
