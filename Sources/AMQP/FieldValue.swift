/// One value of an AMQP field table or array, covering every field type of AMQP 0-9-1 as
/// RabbitMQ and librabbitmq encode them.
public indirect enum FieldValue: Sendable, Hashable {
    case boolean(Bool)
    case int8(Int8)
    case uint8(UInt8)
    case int16(Int16)
    case uint16(UInt16)
    case int32(Int32)
    case uint32(UInt32)
    case int64(Int64)
    case uint64(UInt64)
    case float(Float)
    case double(Double)
    /// `value` × 10^-`scale`.
    case decimal(scale: UInt8, value: UInt32)
    /// A long string ('S') that is valid UTF-8.
    case string(String)
    /// A long string ('S') whose bytes are not valid UTF-8. AMQP does not promise UTF-8; such a
    /// value is kept apart from `.bytes` so that a copy writes it back as 'S', not 'x'.
    case nonUTF8String([UInt8])
    /// A byte array ('x').
    case bytes([UInt8])
    /// Seconds since the Unix epoch.
    case timestamp(UInt64)
    case array([FieldValue])
    case table(FieldTable)
    case void
}

extension FieldValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByFloatLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int64(value) }
    public init(booleanLiteral value: Bool) { self = .boolean(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
}

extension FieldValue {
    /// The value as a signed integer, whatever integer width it was encoded with
    /// (`x-delivery-count` arrives as a long, a header set by a Python client as a signed 8 byte).
    public var integerValue: Int64? {
        switch self {
        case .int8(let v): Int64(v)
        case .uint8(let v): Int64(v)
        case .int16(let v): Int64(v)
        case .uint16(let v): Int64(v)
        case .int32(let v): Int64(v)
        case .uint32(let v): Int64(v)
        case .int64(let v): v
        case .uint64(let v): v <= UInt64(Int64.max) ? Int64(v) : nil
        default: nil
        }
    }

    /// A long string ('S') of exactly these bytes: `.string` when they are valid UTF-8,
    /// `.nonUTF8String` otherwise.
    public static func longString(_ value: AMQPString) -> FieldValue {
        if let text = value.text { return .string(text) }
        return .nonUTF8String(value.bytes)
    }

    /// A long string ('S') of exactly these bytes.
    public static func longString(bytes: [UInt8]) -> FieldValue {
        if let text = bytes.withUnsafeBufferPointer(AMQPString.text(ifValid:)) { return .string(text) }
        return .nonUTF8String(bytes)
    }

    /// The value as text, when it is a string or a byte array that is valid UTF-8.
    public var stringValue: String? {
        switch self {
        case .string(let s): s
        case .bytes(let b): String(validating: b, as: UTF8.self)
        default: nil
        }
    }
}
