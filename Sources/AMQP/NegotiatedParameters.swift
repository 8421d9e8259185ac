/// What the broker and Warren agreed on during the handshake.
public struct NegotiatedParameters: Sendable, Hashable {
    /// The endpoint that accepted the connection.
    public var endpoint: AMQPEndpoint
    /// Seconds; 0 = disabled.
    public var heartbeat: Int
    public var frameMax: Int
    public var channelMax: Int
}
