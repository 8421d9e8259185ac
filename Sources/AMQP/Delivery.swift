/// Identifies one delivery for settlement: the channel it arrived on, that channel's epoch, and
/// the broker's delivery tag.
///
/// Delivery tags are only meaningful on the channel (and channel incarnation) that produced them:
/// acking tag 5 on a reopened channel would ack a different message or, if the tag is unknown
/// there, make the broker close the channel with 406. The epoch is unique per channel open within
/// the process, so a settlement for a closed incarnation is recognised and dropped.
public struct DeliveryTag: Sendable, Hashable, CustomStringConvertible {
    public let channel: UInt16
    public let epoch: UInt64
    public let value: UInt64

    public init(channel: UInt16, epoch: UInt64, value: UInt64) {
        self.channel = channel
        self.epoch = epoch
        self.value = value
    }

    public var description: String { "\(channel)/\(epoch)/\(value)" }
}

/// How a delivery is settled.
public enum Disposition: Sendable, Hashable {
    case ack
    /// `basic.nack`; `requeue: false` dead-letters through the queue's own DLX, if any.
    case nack(requeue: Bool)
    /// `basic.reject`; same effect as a single `nack`.
    case reject(requeue: Bool)
}

/// A message delivered to a consumer, copied out of librabbitmq's buffers into Swift values.
public struct Delivery: Sendable {
    public let tag: DeliveryTag
    public let consumerTag: String
    public let redelivered: Bool
    /// The exchange and routing key exactly as the broker sent them (any bytes).
    public let exchange: AMQPString
    public let routingKey: AMQPString
    public let properties: BasicProperties
    /// Empty when `oversizedBody` is set.
    public let body: [UInt8]
    /// Set when the content header announced a body over the consumer's `maxBodySize`: the body
    /// was spooled to a temporary file as it arrived (or dropped, if that failed), not buffered.
    public var oversizedBody: OversizedBody? { oversized?.value }
    /// Boxed: rare, and about half the size of a delivery inline, which every copy of a delivery
    /// (the feed, the decision) would move.
    private let oversized: OversizedBox?

    private final class OversizedBox: Sendable {
        let value: OversizedBody

        init(_ value: OversizedBody) {
            self.value = value
        }
    }

    public init(
        tag: DeliveryTag, consumerTag: String, redelivered: Bool, exchange: AMQPString, routingKey: AMQPString,
        properties: BasicProperties, body: [UInt8], oversizedBody: OversizedBody? = nil
    ) {
        self.tag = tag
        self.consumerTag = consumerTag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routingKey = routingKey
        self.properties = properties
        self.body = body
        self.oversized = oversizedBody.map(OversizedBox.init)
    }
}
