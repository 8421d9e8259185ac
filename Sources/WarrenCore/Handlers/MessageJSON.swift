import AMQP
import Foundation

/// The JSON shape of a message shared by the `file` handler and the `pipe` protocol (SPEC 5.2):
/// properties as `message_id`, `correlation_id`, `reply_to`, `content_type`, `type`,
/// `timestamp`, `headers`.
enum MessageJSON {
    static func properties(_ p: BasicProperties) -> [String: Any] {
        var object: [String: Any] = [
            "message_id": p.messageID ?? NSNull(), "correlation_id": p.correlationID ?? NSNull(),
            "reply_to": p.replyTo ?? NSNull(), "content_type": p.contentType ?? NSNull(), "type": p.type ?? NSNull(),
            "timestamp": p.timestamp.map { NSNumber(value: $0) } ?? NSNull(),
        ]
        var headers: [String: Any] = [:]
        for entry in p.headers ?? FieldTable() { headers[entry.key] = value(entry.value) }
        object["headers"] = headers
        return object
    }

    static func value(_ value: FieldValue) -> Any {
        switch value {
        case .boolean(let b): return b
        case .float(let f): return Double(f)
        case .double(let d): return d
        case .decimal(let scale, let v): return Double(v) / pow(10, Double(scale))
        case .string(let s): return s
        case .bytes(let b): return String(validating: b, as: UTF8.self) ?? Data(b).base64EncodedString()
        case .timestamp(let t): return NSNumber(value: t)
        case .array(let values): return values.map { Self.value($0) }
        case .table(let table):
            var object: [String: Any] = [:]
            for entry in table { object[entry.key] = Self.value(entry.value) }
            return object
        case .void: return NSNull()
        default: return value.integerValue.map { NSNumber(value: $0) } ?? NSNull()
        }
    }

    /// The body as `body` (valid UTF-8) or `body_base64`.
    static func body(_ bytes: [UInt8], into object: inout [String: Any]) {
        if let text = String(validating: bytes, as: UTF8.self) {
            object["body"] = text
        } else {
            object["body_base64"] = Data(bytes).base64EncodedString()
        }
    }

    /// One JSON object and a newline. Sorted keys read better in files; they cost a locale-aware
    /// string comparison per key (ICU collation), which the pipe protocol does not need.
    static func line(_ object: [String: Any], sortedKeys: Bool = true) throws -> Data {
        let options: JSONSerialization.WritingOptions = sortedKeys ? [.sortedKeys, .withoutEscapingSlashes] : [.withoutEscapingSlashes]
        var data = try JSONSerialization.data(withJSONObject: object, options: options)
        data.append(0x0A)
        return data
    }
}
