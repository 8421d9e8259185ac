/// How many bytes a value takes on the wire (AMQP 0-9-1 encoding, as librabbitmq writes it), so
/// that a message whose content header cannot fit in one frame is refused before anything is
/// sent. librabbitmq finds out only after it sent the `basic.publish` method, and a method
/// without its header breaks the connection's frame stream.
extension BasicProperties {
    /// The encoded property list: what follows the property flags in the content header.
    public var wireSize: Int {
        func short(_ value: AMQPString?) -> Int { value.map { 1 &+ $0.count } ?? 0 }
        var size = short(contentType) &+ short(contentEncoding)
        if let headers { size &+= headers.wireSize }
        if deliveryMode != nil { size &+= 1 }
        if priority != nil { size &+= 1 }
        size &+= short(correlationID) &+ short(replyTo) &+ short(expiration) &+ short(messageID)
        if timestamp != nil { size &+= 8 }
        size &+= short(type) &+ short(userID) &+ short(appID) &+ short(clusterID)
        return size
    }

    /// The whole content-header frame: frame header (7), class and weight (4), body size (8),
    /// property flags (2), the properties, frame end (1).
    public var headerFrameSize: Int { 22 &+ wireSize }
}

extension FieldTable {
    /// A long-uint length, then per entry a short-string key and a typed value.
    public var wireSize: Int {
        var size = 4
        for entry in entries {
            size &+= 1 &+ entry.key.count &+ entry.value.wireSize
        }
        return size
    }
}

extension FieldValue {
    /// The type octet and the value.
    public var wireSize: Int {
        switch self {
        case .boolean, .int8, .uint8: 2
        case .int16, .uint16: 3
        case .int32, .uint32, .float: 5
        case .int64, .uint64, .double, .timestamp: 9
        case .decimal: 6
        case .string(let s): 5 &+ s.utf8.count
        case .nonUTF8String(let b): 5 &+ b.count
        case .bytes(let b): 5 &+ b.count
        case .table(let t): 1 &+ t.wireSize
        case .array(let values): values.reduce(5) { $0 &+ $1.wireSize }
        case .void: 1
        }
    }
}

extension FieldValue {
    /// A NaN or infinite float or double, here or nested inside. RabbitMQ cannot decode them and
    /// answers such a publish by closing the whole connection (541 INTERNAL_ERROR), so they are
    /// refused before sending.
    public var holdsNonFiniteNumber: Bool {
        switch self {
        case .float(let v): !v.isFinite
        case .double(let v): !v.isFinite
        case .table(let t): t.holdsNonFiniteNumber
        case .array(let values): values.contains { $0.holdsNonFiniteNumber }
        default: false
        }
    }
}

extension FieldTable {
    public var holdsNonFiniteNumber: Bool { entries.contains { $0.value.holdsNonFiniteNumber } }
}
