import AMQP
import Foundation

/// The JSON shape of a message shared by every handler kind that shows one: the `file` handler,
/// the `pipe` protocol, `WARREN_HEADERS` of `exec` and `headers_json` of plugins.
/// Properties are `message_id`, `correlation_id`, `reply_to`, `content_type`, `type`,
/// `timestamp`, `headers`. A property or header that JSON cannot carry as it is follows
/// `SinkText`: `message_id_base64` instead of `message_id`, and `headers_base64` (the whole
/// table in its AMQP encoding) when an entry had to be left out of `headers`.
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
        var object: [String: Value] = ["timestamp": p.timestamp.map(Value.uint) ?? .null]
        put("message_id", p.messageID, into: &object)
        put("correlation_id", p.correlationID, into: &object)
        put("reply_to", p.replyTo, into: &object)
        put("content_type", p.contentType, into: &object)
        put("type", p.type, into: &object)
        var lossy = false
        object["headers"] = headers(p.headers, lossy: &lossy)
        if lossy, let encoded = headersBase64(p.headers) { object["headers_base64"] = .string(encoded) }
        return .object(object)
    }

    /// `key` with the text, or `key_base64` with the bytes when they are not UTF-8 (`SinkText`);
    /// `null` when the value is absent.
    static func put(_ key: String, _ value: AMQPString?, into object: inout [String: Value]) {
        guard let value else {
            object[key] = .null
            return
        }
        switch SinkText.json(value) {
        case .plain(let text): object[key] = .string(text)
        case .base64(let encoded): object["\(key)_base64"] = .string(encoded)
        }
    }

    /// The headers as a JSON object. An entry whose key is not UTF-8, or whose value is a long
    /// string that is not UTF-8, is left out (at any depth), and so is nothing else; `lossy`
    /// is then set, as it is for a byte array that is not UTF-8 (written in base64, which a
    /// reader cannot tell from text): the caller adds the table's exact encoding.
    static func headers(_ table: FieldTable?, lossy: inout Bool) -> Value {
        var object: [String: Value] = [:]
        for entry in table ?? FieldTable() {
            guard let key = entry.key.text, let written = value(entry.value, lossy: &lossy) else {
                lossy = true
                continue
            }
            object[key] = written
        }
        return .object(object)
    }

    /// The headers as one JSON object in bytes; `{}` when there are none or one cannot be
    /// written (a NaN float). `lossy` as for `headers(_:lossy:)`.
    static func headersJSON(_ table: FieldTable?, lossy: inout Bool) -> [UInt8] {
        guard let table, !table.isEmpty, let bytes = try? encode(headers(table, lossy: &lossy), sortedKeys: true) else { return Array("{}".utf8) }
        return bytes
    }

    static func headersJSON(_ table: FieldTable?) -> [UInt8] {
        var lossy = false
        return headersJSON(table, lossy: &lossy)
    }

    /// The headers' exact AMQP encoding in base64, for the sinks' `headers_base64`.
    static func headersBase64(_ table: FieldTable?) -> String? {
        guard let table, let wire = try? table.wireEncoding() else { return nil }
        return Data(wire).base64EncodedString()
    }

    /// nil for a value JSON cannot carry as it is (a long string that is not UTF-8).
    static func value(_ value: FieldValue, lossy: inout Bool) -> Value? {
        switch value {
        case .boolean(let b): return .bool(b)
        case .float(let f): return .double(Double(f))
        case .double(let d): return .double(d)
        case .decimal(let scale, let v): return .double(Double(v) / pow(10, Double(scale)))
        case .string(let s): return .string(s)
        case .nonUTF8String: return nil
        case .bytes(let b):
            if let text = String(validating: b, as: UTF8.self) { return .string(text) }
            lossy = true
            return .string(Data(b).base64EncodedString())
        case .timestamp(let t): return .uint(t)
        case .array(let values):
            // An element left out would shift the others: an array is written whole or not at all.
            var elements: [Value] = []
            elements.reserveCapacity(values.count)
            for element in values {
                guard let written = Self.value(element, lossy: &lossy) else { return nil }
                elements.append(written)
            }
            return .array(elements)
        case .table(let table): return headers(table, lossy: &lossy)
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
