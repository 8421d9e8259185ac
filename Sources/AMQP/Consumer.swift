/// A consumer on its own channel. Settle its deliveries with `AMQPConnection.settle` (or the
/// shortcuts here) from any thread.
public struct Consumer: Sendable {
    public let connection: AMQPConnection
    public let queue: String
    public let consumerTag: String
    public let channel: UInt16
    /// The channel incarnation; every delivery's tag carries it.
    public let epoch: UInt64
    /// Ends normally after `cancel()` or `close()`; ends with an `AMQPError` when the broker
    /// cancels the consumer (`.consumerCancelled`), closes its channel (`.channelClosed`) or the
    /// connection dies.
    public let deliveries: Deliveries

    public func ack(_ delivery: Delivery) { connection.settle(delivery.tag, .ack) }
    public func nack(_ delivery: Delivery, requeue: Bool) { connection.settle(delivery.tag, .nack(requeue: requeue)) }
    public func reject(_ delivery: Delivery, requeue: Bool) { connection.settle(delivery.tag, .reject(requeue: requeue)) }

    /// `basic.cancel`: the broker sends nothing more. Deliveries already received can still be
    /// settled until `close()`.
    public func cancel() async throws(AMQPError) {
        let channel = channel
        let epoch = epoch
        try await connection.perform { loop throws(AMQPError) in try loop.cancelConsumer(channel: channel, epoch: epoch) }
    }

    /// Sends the settlements queued so far, then closes the channel; the broker requeues every
    /// delivery still unsettled.
    public func close() async throws(AMQPError) {
        let channel = channel
        let epoch = epoch
        try await connection.perform { loop throws(AMQPError) in try loop.closeConsumerChannel(channel: channel, epoch: epoch) }
    }
}
