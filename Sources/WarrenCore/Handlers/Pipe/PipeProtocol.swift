import AMQP
import Foundation

/// The wire protocol between warren and a `pipe` worker (docs/handlers.md, "pipe"), as pure functions so that
/// every framing and validation rule is unit-tested without a process.
///
/// Request: one JSON line (`id`, `queue`, `exchange`, `routing_key`, `redelivered`, `attempt`,
/// `properties`, `body_length`, `traceparent`, `tracestate` when there is one, and
/// `stream_offset` for a stream queue) followed by exactly
/// `body_length` raw body bytes. Response: one JSON line per request, matched by `id`. Anything
/// else the worker writes on stdout is a protocol violation: the worker can no longer be trusted
/// to answer the right request, so the handler fails its in-flight requests and replaces it.
enum PipeProtocol {
    /// One request as written to the worker's stdin: the JSON line (with its newline), then the
    /// body. Kept apart so the body is written as it is, without a copy.
    struct Frame: Sendable {
        var header: [UInt8]
        var body: [UInt8]
    }

    /// A worker's answer to request `id`.
    struct Response: Sendable {
        var id: UInt64
        var outcome: HandlerOutcome
    }

    /// The response line is not what the pipe protocol allows. `description` is the detail that follows
    /// "pipe worker sent an invalid response: ".
    struct Violation: Error, Sendable, Equatable, CustomStringConvertible {
        var description: String
    }

    static let verdicts = ["ack", "reject", "requeue", "retry", "error"]
    /// How much of an offending line an error quotes.
    static let quotedBytes = 200

    /// Encodes request `id` for `input`. Throws only when the message holds a header value JSON
    /// cannot carry (a NaN or infinite float).
    static func request(id: UInt64, _ input: HandlerInput) throws -> Frame {
        var object: [String: MessageJSON.Value] = [
            "id": .uint(id), "queue": .string(input.queue), "redelivered": .bool(input.redelivered), "attempt": .int(Int64(input.attempt)),
            "properties": MessageJSON.properties(input.properties), "body_length": .int(Int64(input.body.count)),
        ]
        // `exchange_base64` / `routing_key_base64` when the bytes are not UTF-8 (`SinkText`).
        MessageJSON.put("exchange", input.exchange, into: &object)
        MessageJSON.put("routing_key", input.routingKey, into: &object)
        if let offset = input.streamOffset { object["stream_offset"] = .int(offset) }
        // The run's trace context (docs/tracing.md).
        object["traceparent"] = .string(input.trace.traceparent)
        if let state = input.trace.state { object["tracestate"] = .string(state) }
        return Frame(header: try MessageJSON.line(object, sortedKeys: false), body: input.body)
    }

    /// Decodes one response line (without its newline).
    static func response(_ line: [UInt8]) throws(Violation) -> Response {
        let wire: ResponseWire
        do {
            wire = try JSONDecoder().decode(ResponseWire.self, from: Data(line))
        } catch let error as DecodingError {
            throw Violation(description: "\(describe(error, line)) in \(quote(line))")
        } catch {
            throw Violation(description: "\(error) in \(quote(line))")
        }
        do throws(Violation) {
            return Response(id: wire.id, outcome: try outcome(wire))
        } catch {
            throw Violation(description: "request \(wire.id): \(error.description)")
        }
    }

    private static func outcome(_ wire: ResponseWire) throws(Violation) -> HandlerOutcome {
        guard verdicts.contains(wire.verdict) else {
            throw Violation(description: "unknown verdict \"\(wire.verdict)\" (expected one of \(verdicts.joined(separator: ", ")))")
        }
        var delay: Duration?
        if let text = wire.delay {
            guard let parsed = DurationText.parse(text) else {
                throw Violation(description: "delay \"\(text)\" is not a duration such as \"30s\"")
            }
            delay = parsed
        }
        let reply = try bytes(text: wire.reply, base64: wire.replyBase64, field: "reply")
        var publishes: [OutgoingMessage] = []
        for (index, entry) in (wire.publish ?? []).enumerated() {
            publishes.append(try message(entry, at: index))
        }
        switch wire.verdict {
        case "ack": return .success(HandlerOutput(reply: reply, publishes: publishes))
        case "reject": return .verdict(.reject, error: wire.error, output: .none)
        case "requeue": return .verdict(.requeue, error: wire.error, output: .none)
        case "retry": return .verdict(.retry(delay: delay), error: wire.error, output: .none)
        default: return .failure(HandlerFailure(wire.error ?? "the pipe worker answered with verdict error"))
        }
    }

    private static func message(_ entry: PublishWire, at index: Int) throws(Violation) -> OutgoingMessage {
        let field = "publish[\(index)]"
        guard let body = try bytes(text: entry.body, base64: entry.bodyBase64, field: "\(field).body") else {
            throw Violation(description: "\(field) has neither body nor body_base64")
        }
        let wire = entry.properties ?? PropertiesWire()
        if let mode = wire.deliveryMode, mode != 1, mode != 2 {
            throw Violation(description: "\(field).properties.delivery_mode must be 1 or 2, got \(mode)")
        }
        var headers: FieldTable?
        if let written = wire.headers {
            headers = FieldTable(written.keys.sorted().compactMap { key in written[key].map { FieldTable.Entry(key, $0.fieldValue) } })
        }
        let properties = BasicProperties(
            contentType: wire.contentType.map { AMQPString($0) }, contentEncoding: wire.contentEncoding.map { AMQPString($0) }, headers: headers,
            deliveryMode: wire.deliveryMode ?? 2, priority: wire.priority, correlationID: wire.correlationID.map { AMQPString($0) },
            replyTo: wire.replyTo.map { AMQPString($0) }, expiration: wire.expiration.map { AMQPString($0) },
            messageID: wire.messageID.map { AMQPString($0) }, timestamp: wire.timestamp, type: wire.type.map { AMQPString($0) },
            userID: wire.userID.map { AMQPString($0) }, appID: wire.appID.map { AMQPString($0) })
        return OutgoingMessage(exchange: entry.exchange ?? "", routingKey: entry.routingKey, mandatory: true, properties: properties, body: body)
    }

    /// `field` as UTF-8 text, or `field_base64` as bytes; never both.
    private static func bytes(text: String?, base64: String?, field: String) throws(Violation) -> [UInt8]? {
        switch (text, base64) {
        case (nil, nil):
            return nil
        case (let text?, nil):
            return Array(text.utf8)
        case (nil, let encoded?):
            guard let data = Data(base64Encoded: encoded) else {
                throw Violation(description: "\(field)_base64 is not valid base64")
            }
            return Array(data)
        case (.some, .some):
            throw Violation(description: "\(field) and \(field)_base64 are both set")
        }
    }

    static func quote(_ line: [UInt8]) -> String {
        let head = String(decoding: line.prefix(quotedBytes), as: UTF8.self)
        let text = head.debugDescription
        return line.count > quotedBytes ? "\(text)… (\(line.count) bytes)" : text
    }

    static func describe(_ error: DecodingError, _ line: [UInt8]) -> String {
        func path(_ context: DecodingError.Context, _ last: (any CodingKey)? = nil) -> String {
            let keys = context.codingPath + (last.map { [$0] } ?? [])
            guard !keys.isEmpty else { return "the line" }
            let text = keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return text.hasPrefix(".") ? String(text.dropFirst()) : text
        }
        switch error {
        case .typeMismatch(let type, let context):
            return context.codingPath.isEmpty ? "the line is not a JSON object" : "\(path(context)) is not \(typeName(type))"
        case .valueNotFound(let type, let context):
            return "\(path(context)) is null, expected \(typeName(type))"
        case .keyNotFound(let key, let context):
            return "\(path(context, key)) is missing"
        case .dataCorrupted(let context):
            guard context.codingPath.isEmpty else { return "\(path(context)) is invalid" }
            // JSONDecoder reports a number out of its field's range (a negative id, a
            // priority of 300) like a syntax error, without a path; tell the two apart.
            let isJSON = (try? JSONSerialization.jsonObject(with: Data(line), options: [.fragmentsAllowed])) != nil
            return isJSON ? "a number is out of range (id, delivery_mode, priority and timestamp take non-negative integers)" : "not JSON"
        @unknown default:
            return "\(error)"
        }
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is UInt64.Type, is UInt8.Type: return "a non-negative integer"
        default:
            let name = String(describing: type)
            return name.hasPrefix("Array") ? "an array" : "an object"
        }
    }
}
