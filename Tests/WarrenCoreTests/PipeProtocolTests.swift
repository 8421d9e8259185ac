import AMQP
import Foundation
import Testing

@testable import WarrenCore

@Suite("The pipe protocol: request framing and response decoding")
struct PipeProtocolTests {
    static func input(body: [UInt8], properties: BasicProperties = BasicProperties()) -> HandlerInput {
        HandlerInput(
            queue: "orders", exchange: "shop", routingKey: "order.created", redelivered: true, attempt: 3, properties: properties, body: body,
            deliveryTag: 7)
    }

    static func decode(_ line: String) throws -> PipeProtocol.Response {
        try PipeProtocol.response(Array(line.utf8))
    }

    static func violation(_ line: String) -> String? {
        do {
            _ = try decode(line)
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func aRequestIsOneJSONLineWithTheSpecFieldsFollowedByTheRawBody() throws {
        let body: [UInt8] = [0x7B, 0x0A, 0x00, 0xFF, 0x0A]  // a newline and non-UTF-8 bytes in the body
        let properties = BasicProperties(
            contentType: "application/json", headers: ["k": "v", "n": .int32(3), "flag": true], correlationID: "c1", replyTo: "replies",
            messageID: "m1", timestamp: 1_763_700_000, type: "OrderCreated")
        let frame = try PipeProtocol.request(id: 42, Self.input(body: body, properties: properties))
        #expect(frame.header.last == 0x0A)
        #expect(frame.header.dropLast().contains(0x0A) == false, "the JSON line holds no raw newline")
        #expect(frame.body == body)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(frame.header.dropLast())) as? [String: Any])
        #expect(Set(object.keys) == ["id", "queue", "exchange", "routing_key", "redelivered", "attempt", "properties", "body_length", "traceparent"])
        #expect(object["id"] as? Int == 42)
        #expect(object["queue"] as? String == "orders")
        #expect(object["exchange"] as? String == "shop")
        #expect(object["routing_key"] as? String == "order.created")
        #expect(object["redelivered"] as? Bool == true)
        #expect(object["attempt"] as? Int == 3)
        #expect(object["body_length"] as? Int == 5)
        let props = try #require(object["properties"] as? [String: Any])
        #expect(Set(props.keys) == ["message_id", "correlation_id", "reply_to", "content_type", "type", "timestamp", "headers"])
        #expect(props["message_id"] as? String == "m1")
        #expect(props["correlation_id"] as? String == "c1")
        #expect(props["reply_to"] as? String == "replies")
        #expect(props["content_type"] as? String == "application/json")
        #expect(props["type"] as? String == "OrderCreated")
        #expect(props["timestamp"] as? Int == 1_763_700_000)
        let headers = try #require(props["headers"] as? [String: Any])
        #expect(headers["k"] as? String == "v")
        #expect(headers["n"] as? Int == 3)
        #expect(headers["flag"] as? Bool == true)
    }

    @Test func absentPropertiesAreNullAndAnEmptyBodyHasLengthZero() throws {
        let frame = try PipeProtocol.request(id: 1, Self.input(body: []))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(frame.header)) as? [String: Any])
        let props = try #require(object["properties"] as? [String: Any])
        #expect(props["message_id"] is NSNull)
        #expect(props["reply_to"] is NSNull)
        #expect((props["headers"] as? [String: Any])?.isEmpty == true)
        #expect(object["body_length"] as? Int == 0)
        #expect(frame.body.isEmpty)
    }

    @Test func anAckWithoutExtrasIsASuccessWithNothingToPublish() throws {
        let response = try Self.decode(#"{"id":42,"verdict":"ack"}"#)
        #expect(response.id == 42)
        guard case .success(let output) = response.outcome else { Issue.record("expected success, got \(response.outcome)"); return }
        #expect(output.reply == nil)
        #expect(output.publishes.isEmpty)
    }

    @Test func anAckCarriesItsReplyAndPublishEntries() throws {
        let line = #"""
            {"id":44,"verdict":"ack","reply":"{\"ok\":true}","publish":[
             {"exchange":"orders","routing_key":"order.billed","body":"text","properties":{"headers":{"s":"x","i":7,"big":5000000000,"b":false,"d":1.5,"l":[1,"a"],"t":{"z":1,"a":null}},
              "content_type":"application/json","message_id":"out-1","correlation_id":"c","type":"Billed","reply_to":"r","delivery_mode":1,
              "priority":5,"expiration":"60000","timestamp":1700000000,"app_id":"billing"}},
             {"routing_key":"raw","body_base64":"AP8K"}]}
            """#.replacingOccurrences(of: "\n", with: "")
        let response = try Self.decode(line)
        guard case .success(let output) = response.outcome else { Issue.record("expected success, got \(response.outcome)"); return }
        #expect(output.reply == Array(#"{"ok":true}"#.utf8))
        #expect(output.publishes.count == 2)
        let first = output.publishes[0]
        #expect(first.exchange == "orders")
        #expect(first.routingKey == "order.billed")
        #expect(first.mandatory)
        #expect(first.body == Array("text".utf8))
        let p = first.properties
        #expect(p.contentType == "application/json")
        #expect(p.messageID == "out-1")
        #expect(p.correlationID == "c")
        #expect(p.type == "Billed")
        #expect(p.replyTo == "r")
        #expect(p.deliveryMode == 1)
        #expect(p.priority == 5)
        #expect(p.expiration == "60000")
        #expect(p.timestamp == 1_700_000_000)
        #expect(p.appID == "billing")
        let headers = try #require(p.headers)
        #expect(headers["s"] == .string("x"))
        #expect(headers["i"] == .int32(7))
        #expect(headers["big"] == .int64(5_000_000_000))
        #expect(headers["b"] == .boolean(false))
        #expect(headers["d"] == .double(1.5))
        #expect(headers["l"] == .array([.int32(1), .string("a")]))
        #expect(headers["t"] == .table(["a": .void, "z": .int32(1)]))
        let second = output.publishes[1]
        #expect(second.exchange == "", "the default exchange when none is given")
        #expect(second.body == [0x00, 0xFF, 0x0A])
        #expect(second.properties.deliveryMode == 2, "persistent unless the worker says otherwise")
        #expect(second.properties.headers == nil)
    }

    @Test func aBinaryReplyComesAsReplyBase64() throws {
        let response = try Self.decode(#"{"id":1,"verdict":"ack","reply_base64":"AAEC/w=="}"#)
        guard case .success(let output) = response.outcome else { Issue.record("expected success"); return }
        #expect(output.reply == [0, 1, 2, 255])
    }

    @Test func verdictsMapToTheHandlerOutcomes() throws {
        guard case .verdict(.reject, let error, _, _) = try Self.decode(#"{"id":1,"verdict":"reject","error":"bad order"}"#).outcome else {
            Issue.record("reject"); return
        }
        #expect(error == "bad order")
        guard case .verdict(.requeue, nil, _, _) = try Self.decode(#"{"id":2,"verdict":"requeue"}"#).outcome else { Issue.record("requeue"); return }
        guard case .verdict(.retry(let delay), let retryError, _, _) = try Self.decode(#"{"id":43,"verdict":"retry","delay":"30s","error":"upstream busy"}"#).outcome
        else { Issue.record("retry"); return }
        #expect(delay == .seconds(30))
        #expect(retryError == "upstream busy")
        guard case .verdict(.retry(nil), _, _, _) = try Self.decode(#"{"id":3,"verdict":"retry"}"#).outcome else { Issue.record("retry without delay"); return }
        guard case .failure(let failure) = try Self.decode(#"{"id":4,"verdict":"error","error":"database down"}"#).outcome else {
            Issue.record("error"); return
        }
        #expect(failure.error == "database down")
        #expect(!failure.isTimeout)
        guard case .failure(let bare) = try Self.decode(#"{"id":5,"verdict":"error"}"#).outcome else { Issue.record("bare error"); return }
        #expect(!bare.error.isEmpty)
    }

    @Test func unknownKeysAndNullOptionalsAreAccepted() throws {
        let response = try Self.decode(#"{"id":9,"verdict":"ack","reply":null,"error":null,"publish":null,"trace":"abc"}"#)
        #expect(response.id == 9)
        guard case .success(let output) = response.outcome else { Issue.record("expected success"); return }
        #expect(output.reply == nil)
    }

    @Test(arguments: [
        ("not json at all", "not JSON"),
        ("", "not JSON"),
        ("[1,2]", "not a JSON object"),
        ("42", "not a JSON object"),
        (#"{"verdict":"ack"}"#, "id is missing"),
        (#"{"id":"7","verdict":"ack"}"#, "id is not a non-negative integer"),
        (#"{"id":-1,"verdict":"ack"}"#, "a number is out of range"),
        (#"{"id":1.5,"verdict":"ack"}"#, "a number is out of range"),
        (#"{"id":1}"#, "verdict is missing"),
        (#"{"id":1,"verdict":"maybe"}"#, #"unknown verdict "maybe""#),
        (#"{"id":1,"verdict":"ACK"}"#, #"unknown verdict "ACK""#),
        (#"{"id":1,"verdict":"retry","delay":"30"}"#, #"delay "30" is not a duration"#),
        (#"{"id":1,"verdict":"retry","delay":30}"#, "delay is not a string"),
        (#"{"id":1,"verdict":"ack","reply":"a","reply_base64":"YQ=="}"#, "reply and reply_base64 are both set"),
        (#"{"id":1,"verdict":"ack","reply_base64":"***"}"#, "reply_base64 is not valid base64"),
        (#"{"id":1,"verdict":"ack","reply":{"a":1}}"#, "reply is not a string"),
        (#"{"id":1,"verdict":"ack","publish":{"routing_key":"x"}}"#, "publish is not an array"),
        (#"{"id":1,"verdict":"ack","publish":[{"body":"x"}]}"#, "publish[0].routing_key is missing"),
        (#"{"id":1,"verdict":"ack","publish":[{"routing_key":"x"}]}"#, "publish[0] has neither body nor body_base64"),
        (#"{"id":1,"verdict":"ack","publish":[{"routing_key":"x","body":"a","body_base64":"YQ=="}]}"#, "publish[0].body and publish[0].body_base64 are both set"),
        (#"{"id":1,"verdict":"ack","publish":[{"routing_key":"x","body":"a","properties":{"delivery_mode":3}}]}"#, "delivery_mode must be 1 or 2"),
        (#"{"id":1,"verdict":"ack","publish":[{"routing_key":"x","body":"a","properties":{"priority":300}}]}"#, "a number is out of range"),
        (#"{"id":1,"verdict":"ack","publish":[{"routing_key":"x","body":"a","properties":{"priority":"high"}}]}"#, "publish[0].properties.priority is not a non-negative integer"),
    ])
    func malformedResponsesAreRejectedWithAnExplanation(line: String, expected: String) {
        let message = Self.violation(line)
        #expect(message?.contains(expected) == true, "\(line) -> \(message ?? "accepted")")
    }

    @Test func aViolationQuotesTheStartOfTheOffendingLine() {
        let long = "Traceback (most recent call last): " + String(repeating: "x", count: 500)
        let message = Self.violation(long) ?? ""
        #expect(message.contains("Traceback (most recent call last)"))
        #expect(message.contains("(535 bytes)"))
        #expect(message.count < 400, "the quote is bounded")
        #expect(Self.violation(#"{"id":5,"verdict":"nope"}"#)?.contains("request 5") == true, "a semantic error names the request")
    }

    @Test func invalidUTF8InALineIsAViolationNotACrash() {
        #expect(throws: PipeProtocol.Violation.self) { try PipeProtocol.response([0x7B, 0xFF, 0xFE, 0x7D]) }
    }
}
