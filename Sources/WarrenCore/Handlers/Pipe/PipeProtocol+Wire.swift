import AMQP

// The JSON shapes of a worker's response (docs/handlers.md, "pipe"), decoded with `JSONDecoder` so that a wrong
// type is reported with its field path. Unknown keys are ignored: a worker written against a
// later warren may send more.

extension PipeProtocol {
    struct ResponseWire: Decodable {
        var id: UInt64
        var verdict: String
        var delay: String?
        var error: String?
        var reply: String?
        var replyBase64: String?
        var publish: [PublishWire]?

        enum CodingKeys: String, CodingKey {
            case id, verdict, delay, error, reply, publish
            case replyBase64 = "reply_base64"
        }
    }

    struct PublishWire: Decodable {
        var exchange: String?
        var routingKey: String
        var body: String?
        var bodyBase64: String?
        var properties: PropertiesWire?

        enum CodingKeys: String, CodingKey {
            case exchange, body, properties
            case routingKey = "routing_key"
            case bodyBase64 = "body_base64"
        }
    }

    /// The AMQP basic properties in snake case, as `warren publish --property` names them.
    struct PropertiesWire: Decodable {
        var headers: [String: HeaderValue]?
        var contentType: String?
        var contentEncoding: String?
        var deliveryMode: UInt8?
        var priority: UInt8?
        var correlationID: String?
        var replyTo: String?
        var expiration: String?
        var messageID: String?
        var timestamp: UInt64?
        var type: String?
        var userID: String?
        var appID: String?

        enum CodingKeys: String, CodingKey {
            case headers, priority, expiration, timestamp, type
            case contentType = "content_type"
            case contentEncoding = "content_encoding"
            case deliveryMode = "delivery_mode"
            case correlationID = "correlation_id"
            case replyTo = "reply_to"
            case messageID = "message_id"
            case userID = "user_id"
            case appID = "app_id"
        }
    }

    /// A header value as JSON writes it. Booleans are tried before numbers because a JSON
    /// `true` must stay a boolean, and integers before doubles so that `3` stays an integer.
    indirect enum HeaderValue: Decodable {
        case null
        case boolean(Bool)
        case integer(Int64)
        case double(Double)
        case string(String)
        case array([HeaderValue])
        case object([String: HeaderValue])

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if container.decodeNil() {
                self = .null
            } else if let value = try? container.decode(Bool.self) {
                self = .boolean(value)
            } else if let value = try? container.decode(Int64.self) {
                self = .integer(value)
            } else if let value = try? container.decode(Double.self) {
                self = .double(value)
            } else if let value = try? container.decode(String.self) {
                self = .string(value)
            } else if let value = try? container.decode([HeaderValue].self) {
                self = .array(value)
            } else {
                self = .object(try container.decode([String: HeaderValue].self))
            }
        }

        /// Integers that fit take the 32-bit type most AMQP clients expect for small numbers.
        var fieldValue: FieldValue {
            switch self {
            case .null: .void
            case .boolean(let value): .boolean(value)
            case .integer(let value): Int32(exactly: value).map { .int32($0) } ?? .int64(value)
            case .double(let value): .double(value)
            case .string(let value): .string(value)
            case .array(let values): .array(values.map(\.fieldValue))
            case .object(let values):
                .table(FieldTable(values.keys.sorted().compactMap { key in values[key].map { FieldTable.Entry(key, $0.fieldValue) } }))
            }
        }
    }
}
