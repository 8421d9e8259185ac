/// A message fetched with `basic.get`.
public struct GotMessage: Sendable {
    /// The same value a consumer receives; its `consumerTag` is empty. A body over the channel's
    /// `maxBodySize` is in `oversizedBody` (spooled to a temporary file as it arrived), exactly
    /// as for a consumer.
    public let delivery: Delivery
    /// The number of messages the broker reported still in the queue after this one (get-ok's
    /// message-count; ready messages only, not the ones held unacked).
    public let messageCount: UInt32

    public init(delivery: Delivery, messageCount: UInt32) {
        self.delivery = delivery
        self.messageCount = messageCount
    }
}

/// A channel of its own for reading a queue message by message with `basic.get`, from
/// `AMQPConnection.openGetChannel`.
///
/// `basic.get` ignores prefetch, so a walk can hold any number of messages unacked: each one
/// stays in the queue (invisible to other readers) until it is acked here, or until `close()`,
/// which gives every unacked one back to the queue. A message must be settled through this
/// handle (`AMQPConnection.settle` is for consumers). One get at a time per channel.
///
/// When the broker closes the channel (404 for a missing queue, say), that get fails with
/// `AMQPError` code `.channelClosed` and the broker's reply code; the connection stays usable,
/// but this handle is done: open another.
public struct GetChannel: Sendable {
    public let connection: AMQPConnection
    public let channel: UInt16
    /// The channel incarnation; every delivery's tag carries it.
    public let epoch: UInt64

    /// The next ready message of `queue`, unacked, or nil when the queue has none ready.
    public func get(_ queue: String) async throws(AMQPError) -> GotMessage? {
        let channel = channel
        let epoch = epoch
        let result: Result<GotMessage?, AMQPError> = await withCheckedContinuation { continuation in
            let refused = connection.commands.submit(.perform { loop in
                switch loop {
                case .success(let loop):
                    loop.basicGet(channel: channel, epoch: epoch, queue: queue) { continuation.resume(returning: $0) }
                case .failure(let error):
                    continuation.resume(returning: .failure(error))
                }
            })
            if let refused { continuation.resume(returning: .failure(refused)) }
        }
        return try result.get()
    }

    /// Acks a message this channel fetched: the broker removes it from the queue. Throws
    /// `.channelClosed` if the channel (this incarnation) is closed, and `.invalidArgument`
    /// for a message already settled or fetched elsewhere; neither sends anything.
    public func ack(_ delivery: Delivery) async throws(AMQPError) {
        try await settle(delivery, .ack)
    }

    /// Settles a message this channel fetched (`.nack(requeue: false)` dead-letters it through
    /// the queue's own dead-letter exchange). Same checks as `ack`.
    public func settle(_ delivery: Delivery, _ disposition: Disposition) async throws(AMQPError) {
        let tag = delivery.tag
        try await connection.perform { loop throws(AMQPError) in try loop.settleGot(tag, disposition) }
    }

    /// Closes the channel; the broker puts every message still unacked back in the queue.
    public func close() async throws(AMQPError) {
        let channel = channel
        let epoch = epoch
        try await connection.perform { loop throws(AMQPError) in try loop.closeGetChannel(channel: channel, epoch: epoch) }
    }
}
