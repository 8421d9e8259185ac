import AMQP
import Foundation

/// The JSON shape of a message shared by every handler kind that shows one: the `file` handler,
/// the `pipe` protocol (SPEC 5.2), `WARREN_HEADERS` of `exec` and `headers_json` of plugins.
/// Properties are `message_id`, `correlation_id`, `reply_to`, `content_type`, `type`,
/// `timestamp`, `headers`.
///
/// Values are built as `MessageJSON.Value` and written by `Value.write(into:sortedKeys:)`, a
/// direct serializer with `JSONEncoder`'s output rules (same escapes, `/` unescaped, integral
/// doubles without `.0`, non-finite numbers refused). Not `JSONEncoder` itself: its `Codable`
/// machinery was a fifth of warren's CPU per pipe request (`scripts/bench --only profile`-style
/// perf of the pipe row), for a value type this small. Not `JSONSerialization`: on Linux it
/// bridges every `[String: Any]` through NSDictionary and dynamic casts, which is slower still.
enum MessageJSON {
    /// A NaN or infinite number, which JSON cannot carry.
    struct NonFiniteNumber: Error, CustomStringConvertible {
        let value: Double
        var description: String { "\(value) cannot be written as JSON" }
    }

    /// A JSON value, typed so that encoding needs no dynamic casts. `Encodable` only so that
    /// `MessageJSONTests` can hold `write(into:sortedKeys:)` to `JSONEncoder`'s output.
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

        /// Appends the value's JSON text to `out`.
        func write(into out: inout [UInt8], sortedKeys: Bool) throws(NonFiniteNumber) {
            switch self {
            case .null: out.append(contentsOf: "null".utf8)
            case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
            case .int(let i): out.append(contentsOf: String(i).utf8)
            case .uint(let u): out.append(contentsOf: String(u).utf8)
            case .double(let d):
                guard d.isFinite else { throw NonFiniteNumber(value: d) }
                var text = d.description
                if text.hasSuffix(".0") { text.removeLast(2) }
                out.append(contentsOf: text.utf8)
            case .string(let text): Self.write(text, into: &out)
            case .array(let values):
                out.append(UInt8(ascii: "["))
                for (index, value) in values.enumerated() {
                    if index > 0 { out.append(UInt8(ascii: ",")) }
                    try value.write(into: &out, sortedKeys: sortedKeys)
                }
                out.append(UInt8(ascii: "]"))
            case .object(let object):
                out.append(UInt8(ascii: "{"))
                var first = true
                func member(_ key: String, _ value: Value) throws(NonFiniteNumber) {
                    if !first { out.append(UInt8(ascii: ",")) }
                    first = false
                    Self.write(key, into: &out)
                    out.append(UInt8(ascii: ":"))
                    try value.write(into: &out, sortedKeys: sortedKeys)
                }
                if sortedKeys {
                    for key in object.keys.sorted() { try member(key, object[key]!) }
                } else {
                    for (key, value) in object { try member(key, value) }
                }
                out.append(UInt8(ascii: "}"))
            }
        }

        private static let hexDigits = Array("0123456789abcdef".utf8)

        /// A JSON string: `"` and `\` escaped, control characters as `\n`-style or `\u00XX`
        /// escapes, everything else (including `/` and non-ASCII) as UTF-8.
        static func write(_ text: String, into out: inout [UInt8]) {
            out.append(UInt8(ascii: "\""))
            for byte in text.utf8 {
                switch byte {
                case UInt8(ascii: "\""): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
                case UInt8(ascii: "\\"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
                case 0x0A: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
                case 0x0D: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
                case 0x09: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
                case 0x08: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "b")])
                case 0x0C: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "f")])
                case 0x00..<0x20:
                    out.append(contentsOf: "\\u00".utf8)
                    out.append(hexDigits[Int(byte >> 4)])
                    out.append(hexDigits[Int(byte & 0x0F)])
                default: out.append(byte)
                }
            }
            out.append(UInt8(ascii: "\""))
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
        guard let table, !table.isEmpty, let bytes = try? encode(headers(table), sortedKeys: true) else { return Array("{}".utf8) }
        return bytes
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
    static func line(_ object: [String: Value], sortedKeys: Bool = true) throws(NonFiniteNumber) -> [UInt8] {
        var bytes = try encode(.object(object), sortedKeys: sortedKeys)
        bytes.append(0x0A)
        return bytes
    }

    static func encode(_ value: Value, sortedKeys: Bool) throws(NonFiniteNumber) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(256)
        try value.write(into: &bytes, sortedKeys: sortedKeys)
        return bytes
    }
}
