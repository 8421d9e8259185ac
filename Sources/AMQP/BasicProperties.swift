/// The content properties of `basic.publish` / `basic.deliver` / `basic.return`.
/// `nil` means the property flag is not set on the wire. The short strings are `AMQPString`s:
/// a producer may put any bytes in them, and copies must carry them unchanged.
///
/// A value type over one shared, copy-on-write box: a delivery is handed from the I/O thread
/// through the feed to a worker and into the handler, and each hand-over copies one reference
/// instead of fourteen optionals (about 200 bytes and a dozen retains). Messages without
/// properties all share one empty box, so they allocate nothing.
public struct BasicProperties: Sendable, Hashable {
    private struct Fields: Hashable {
        var contentType: AMQPString? = nil
        var contentEncoding: AMQPString? = nil
        var headers: FieldTable? = nil
        var deliveryMode: UInt8? = nil
        var priority: UInt8? = nil
        var correlationID: AMQPString? = nil
        var replyTo: AMQPString? = nil
        var expiration: AMQPString? = nil
        var messageID: AMQPString? = nil
        var timestamp: UInt64? = nil
        var type: AMQPString? = nil
        var userID: AMQPString? = nil
        var appID: AMQPString? = nil
        var clusterID: AMQPString? = nil

        /// No property set. Nil checks, not `== Fields()`: the derived equality compares each
        /// field through its type's `==`, for every delivery that has a property.
        var isEmpty: Bool {
            contentType == nil && contentEncoding == nil && headers == nil && deliveryMode == nil && priority == nil
                && correlationID == nil && replyTo == nil && expiration == nil && messageID == nil && timestamp == nil
                && type == nil && userID == nil && appID == nil && clusterID == nil
        }
    }

    private final class Storage: @unchecked Sendable {
        /// Written only through `unique()`, i.e. while no other value shares the box.
        var fields: Fields

        init(_ fields: Fields) {
            self.fields = fields
        }

        static let empty = Storage(Fields())
    }

    private var storage: Storage

    /// The box, made unique before a write.
    private mutating func unique() -> Storage {
        if !isKnownUniquelyReferenced(&storage) { storage = Storage(storage.fields) }
        return storage
    }

    public var contentType: AMQPString? {
        get { storage.fields.contentType }
        set { unique().fields.contentType = newValue }
    }

    public var contentEncoding: AMQPString? {
        get { storage.fields.contentEncoding }
        set { unique().fields.contentEncoding = newValue }
    }

    public var headers: FieldTable? {
        get { storage.fields.headers }
        set { unique().fields.headers = newValue }
    }

    /// 1 = transient, 2 = persistent.
    public var deliveryMode: UInt8? {
        get { storage.fields.deliveryMode }
        set { unique().fields.deliveryMode = newValue }
    }

    public var priority: UInt8? {
        get { storage.fields.priority }
        set { unique().fields.priority = newValue }
    }

    public var correlationID: AMQPString? {
        get { storage.fields.correlationID }
        set { unique().fields.correlationID = newValue }
    }

    public var replyTo: AMQPString? {
        get { storage.fields.replyTo }
        set { unique().fields.replyTo = newValue }
    }

    public var expiration: AMQPString? {
        get { storage.fields.expiration }
        set { unique().fields.expiration = newValue }
    }

    public var messageID: AMQPString? {
        get { storage.fields.messageID }
        set { unique().fields.messageID = newValue }
    }

    /// Seconds since the Unix epoch.
    public var timestamp: UInt64? {
        get { storage.fields.timestamp }
        set { unique().fields.timestamp = newValue }
    }

    public var type: AMQPString? {
        get { storage.fields.type }
        set { unique().fields.type = newValue }
    }

    public var userID: AMQPString? {
        get { storage.fields.userID }
        set { unique().fields.userID = newValue }
    }

    public var appID: AMQPString? {
        get { storage.fields.appID }
        set { unique().fields.appID = newValue }
    }

    public var clusterID: AMQPString? {
        get { storage.fields.clusterID }
        set { unique().fields.clusterID = newValue }
    }

    public init(
        contentType: AMQPString? = nil, contentEncoding: AMQPString? = nil, headers: FieldTable? = nil,
        deliveryMode: UInt8? = nil, priority: UInt8? = nil, correlationID: AMQPString? = nil,
        replyTo: AMQPString? = nil, expiration: AMQPString? = nil, messageID: AMQPString? = nil,
        timestamp: UInt64? = nil, type: AMQPString? = nil, userID: AMQPString? = nil, appID: AMQPString? = nil,
        clusterID: AMQPString? = nil
    ) {
        let fields = Fields(
            contentType: contentType, contentEncoding: contentEncoding, headers: headers, deliveryMode: deliveryMode,
            priority: priority, correlationID: correlationID, replyTo: replyTo, expiration: expiration, messageID: messageID,
            timestamp: timestamp, type: type, userID: userID, appID: appID, clusterID: clusterID)
        storage = fields.isEmpty ? .empty : Storage(fields)
    }

    public static let persistent = BasicProperties(deliveryMode: 2)

    public static func == (lhs: BasicProperties, rhs: BasicProperties) -> Bool {
        lhs.storage === rhs.storage || lhs.storage.fields == rhs.storage.fields
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(storage.fields)
    }
}
