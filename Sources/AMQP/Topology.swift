/// `exchange.declare` arguments.
public struct ExchangeDeclaration: Sendable, Hashable {
    public var name: String
    /// direct, fanout, topic, headers (or a plugin's type).
    public var type: String
    public var durable: Bool
    public var autoDelete: Bool
    public var `internal`: Bool
    /// Only check that the exchange exists (and fail with 404 if not).
    public var passive: Bool
    public var arguments: FieldTable

    public init(name: String, type: String = "direct", durable: Bool = true, autoDelete: Bool = false,
                internal: Bool = false, passive: Bool = false, arguments: FieldTable = [:]) {
        self.name = name
        self.type = type
        self.durable = durable
        self.autoDelete = autoDelete
        self.internal = `internal`
        self.passive = passive
        self.arguments = arguments
    }
}

/// `queue.declare` arguments.
public struct QueueDeclaration: Sendable, Hashable {
    /// Empty: the broker generates a name (returned in `QueueDeclareResult`).
    public var name: String
    public var durable: Bool
    public var exclusive: Bool
    public var autoDelete: Bool
    /// Only check that the queue exists (404 if not); the other flags are then ignored.
    public var passive: Bool
    /// `x-queue-type`, `x-message-ttl`, `x-dead-letter-exchange`, `x-max-length`, ...
    public var arguments: FieldTable

    public init(name: String, durable: Bool = true, exclusive: Bool = false, autoDelete: Bool = false,
                passive: Bool = false, arguments: FieldTable = [:]) {
        self.name = name
        self.durable = durable
        self.exclusive = exclusive
        self.autoDelete = autoDelete
        self.passive = passive
        self.arguments = arguments
    }
}

/// `queue.declare-ok`.
public struct QueueDeclareResult: Sendable, Hashable {
    public var name: String
    /// Messages ready for delivery (not counting unacknowledged ones).
    public var messageCount: UInt32
    public var consumerCount: UInt32
}

/// How the I/O loop turns settlements into frames.
public enum SettlementMode: Sendable, Hashable {
    /// Runs of equal dispositions over contiguous tags go out as one `multiple=true` frame.
    /// Settlements above a gap (a slower delivery below them) wait at most `holdBack`, then go
    /// out one by one, so one slow handler cannot hold the whole prefetch window. While the
    /// broker may still send (fewer unsettled than the prefetch), a contiguous run shorter than
    /// half the prefetch also waits, at most `holdBack`, so that a fast consumer sends one frame
    /// per half window instead of one per read; `holdingRuns: false` sends such a run at the
    /// next turn (a consumer that acks before handling, whose ack should not trail its handler).
    case coalesced(holdBack: Duration, holdingRuns: Bool = true)
    /// One frame per settlement.
    case immediate

    public static let defaultHoldBack = Duration.milliseconds(20)
    public static let `default` = SettlementMode.coalesced(holdBack: defaultHoldBack)
}

/// `basic.qos` + `basic.consume` on a channel of its own.
public struct ConsumeOptions: Sendable {
    public var queue: String
    /// Unacknowledged deliveries the broker may send this consumer; also bounds the deliveries
    /// buffered in the consumer's stream. At least 1.
    public var prefetch: UInt16
    /// Empty: the broker generates one.
    public var consumerTag: String
    public var exclusive: Bool
    /// `x-priority`, `x-stream-offset`, ...
    public var arguments: FieldTable
    public var settlement: SettlementMode
    /// Deliveries whose content header announces a larger body are not buffered in memory: the
    /// body goes to an unnamed temporary file as its frames arrive (`Delivery.oversizedBody`).
    /// `nil`: no limit.
    public var maxBodySize: Int?

    public init(queue: String, prefetch: UInt16, consumerTag: String = "", exclusive: Bool = false,
                arguments: FieldTable = [:], settlement: SettlementMode = .default, maxBodySize: Int? = nil) {
        self.queue = queue
        self.prefetch = prefetch
        self.consumerTag = consumerTag
        self.exclusive = exclusive
        self.arguments = arguments
        self.settlement = settlement
        self.maxBodySize = maxBodySize
    }
}

/// A confirm-mode channel's settings.
public struct PublisherOptions: Sendable {
    /// Unconfirmed publishes the channel may have outstanding; more wait their turn (and their
    /// deadline keeps running while they wait).
    public var maxInFlight: Int
    /// The default per-publish deadline: no confirm by then = `timedOut`.
    public var confirmTimeout: Duration

    public init(maxInFlight: Int = 1000, confirmTimeout: Duration = .seconds(5)) {
        self.maxInFlight = maxInFlight
        self.confirmTimeout = confirmTimeout
    }
}

/// One message to publish.
public struct OutgoingMessage: Sendable {
    public var exchange: String
    /// Any bytes: a reply goes to the request's `reply_to` exactly as it came.
    public var routingKey: AMQPString
    public var mandatory: Bool
    public var properties: BasicProperties
    /// Ignored when `spooledBody` is set.
    public var body: [UInt8]
    /// A body kept in a spool file (an oversized delivery's, for its dead-letter copy): it is
    /// mapped only while the I/O thread sends it, never copied into memory.
    public var spooledBody: SpooledBody?

    public init(exchange: String = "", routingKey: String, mandatory: Bool = true,
                properties: BasicProperties = BasicProperties(), body: [UInt8], spooledBody: SpooledBody? = nil) {
        self.init(exchange: exchange, routingKey: AMQPString(routingKey), mandatory: mandatory, properties: properties, body: body, spooledBody: spooledBody)
    }

    public init(exchange: String = "", routingKey: AMQPString, mandatory: Bool = true,
                properties: BasicProperties = BasicProperties(), body: [UInt8], spooledBody: SpooledBody? = nil) {
        self.exchange = exchange
        self.routingKey = routingKey
        self.mandatory = mandatory
        self.properties = properties
        self.body = body
        self.spooledBody = spooledBody
    }
}
