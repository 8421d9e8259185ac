import AMQP
import Foundation

/// The JSON shape of a message shared by every handler kind that shows one: the `file` handler,
/// the `pipe` protocol (SPEC 5.2), `WARREN_HEADERS` of `exec` and `headers_json` of plugins.
/// Properties are `message_id`, `correlation_id`, `reply_to`, `content_type`, `type`,
/// `timestamp`, `headers`.
///
/// Values are built as `MessageJSON.Value` and written with `JSONEncoder`: on Linux,
/// `JSONSerialization` bridges every `[String: Any]` through NSDictionary and dynamic casts,
/// which cost more than the rest of a pipe request's processing together.
enum MessageJSON {
    /// A JSON value, typed so that encoding needs no dynamic casts.
    enum Value: Encodable, Sendable, Equatable {
        case null
        case bool(Bool)
        case int(Int64)
        case uint(UInt64)
        case double(Double)
        case string(String)
        case array([Value])
        case object([String: Value])

        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .null: try container.encodeNil()
            case .bool(let b): try container.encode(b)
            case .int(let i): try container.encode(i)
            case .uint(let u): try container.encode(u)
            case .double(let d): try container.encode(d)
            case .string(let s): try container.encode(s)
            case .array(let values): try container.encode(values)
            case .object(let object): try container.encode(object)
            }
        }
    }

    static func properties(_ p: BasicProperties) -> Value {
        .object([
            "message_id": p.messageID.map(Value.string) ?? .null, "correlation_id": p.correlationID.map(Value.string) ?? .null,
            "reply_to": p.replyTo.map(Value.string) ?? .null, "content_type": p.contentType.map(Value.string) ?? .null,
            "type": p.type.map(Value.string) ?? .null, "timestamp": p.timestamp.map(Value.uint) ?? .null,
            "headers": headers(p.headers),
        ])
    }

    static func headers(_ table: FieldTable?) -> Value {
        var object: [String: Value] = [:]
        for entry in table ?? FieldTable() { object[entry.key] = value(entry.value) }
        return .object(object)
    }

    /// The headers as one JSON object in bytes; `{}` when there are none or one cannot be
    /// written (a NaN float).
    static func headersJSON(_ table: FieldTable?) -> [UInt8] {
        guard let table, !table.isEmpty, let data = try? encode(headers(table), sortedKeys: true) else { return Array("{}".utf8) }
        return Array(data)
    }

    static func value(_ value: FieldValue) -> Value {
        switch value {
        case .boolean(let b): return .bool(b)
        case .float(let f): return .double(Double(f))
        case .double(let d): return .double(d)
        case .decimal(let scale, let v): return .double(Double(v) / pow(10, Double(scale)))
        case .string(let s): return .string(s)
        case .bytes(let b): return .string(String(validating: b, as: UTF8.self) ?? Data(b).base64EncodedString())
        case .timestamp(let t): return .uint(t)
        case .array(let values): return .array(values.map { Self.value($0) })
        case .table(let table): return headers(table)
        case .void: return .null
        default: return value.integerValue.map { .int($0) } ?? .null
        }
    }

    /// The body as `body` (valid UTF-8) or `body_base64`.
    static func body(_ bytes: [UInt8], into object: inout [String: Value]) {
        if let text = String(validating: bytes, as: UTF8.self) {
            object["body"] = .string(text)
        } else {
            object["body_base64"] = .string(Data(bytes).base64EncodedString())
        }
    }

    /// One JSON object and a newline. Sorted keys read better in files; the pipe protocol does
    /// not need them.
    static func line(_ object: [String: Value], sortedKeys: Bool = true) throws -> Data {
        var data = try encode(.object(object), sortedKeys: sortedKeys)
        data.append(0x0A)
        return data
    }

    private static func encode(_ value: Value, sortedKeys: Bool) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = sortedKeys ? [.sortedKeys, .withoutEscapingSlashes] : [.withoutEscapingSlashes]
        return try encoder.encode(value)
    }
}
