/// Something the broker or the network did to a connection, reported as it happens.
public enum ConnectionEvent: Sendable {
    /// The broker cancelled a consumer (`basic.cancel`): its queue was deleted, or it failed over.
    /// The consumer's channel stays open, so its unsettled deliveries can still be settled.
    case consumerCancelled(queue: String, consumerTag: String, channel: UInt16)
    /// The broker closed a channel; its unsettled deliveries go back to their queues and its
    /// unconfirmed publishes failed with `error`. Not reported when the close answers a request
    /// (a refused declaration): the request's caller gets that error.
    case channelClosed(channel: UInt16, error: AMQPError)
    /// The broker stopped reading from this connection (resource alarm). Publishing waits.
    case blocked(reason: String)
    case unblocked
    /// The connection is gone. `nil` when this process closed it.
    case closed(AMQPError?)
}
