/// TLS settings for `amqps://` endpoints. librabbitmq 0.11 verifies hostnames against DNS names
/// only (not IP SANs) and does not load the system trust store, so `caFile` is required when
/// `verifyPeer` is on.
public struct TLSConfiguration: Sendable, Hashable {
    public var caFile: String?
    public var certFile: String?
    public var keyFile: String?
    public var verifyPeer: Bool
    public var verifyHostname: Bool

    public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil, verifyPeer: Bool = true, verifyHostname: Bool = true) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.verifyPeer = verifyPeer
        self.verifyHostname = verifyHostname
    }
}

/// Everything needed to open one AMQP connection.
public struct ConnectionConfiguration: Sendable {
    /// Tried in order; the first that accepts the login wins.
    public var endpoints: [AMQPEndpoint]
    /// Requested heartbeat; the broker may lower it. Zero disables heartbeats (not recommended:
    /// a dead peer is then noticed only by TCP).
    public var heartbeat: Duration = .seconds(30)
    /// TCP connect (and TLS handshake) timeout per endpoint.
    public var connectTimeout: Duration = .seconds(5)
    /// AMQP handshake (login) timeout.
    public var handshakeTimeout: Duration = .seconds(10)
    /// Timeout of synchronous AMQP methods (declare, bind, qos, consume, close). A timeout is
    /// fatal for the connection, as librabbitmq closes the socket.
    public var rpcTimeout: Duration = .seconds(30)
    /// Shown in the management UI.
    public var connectionName: String = "warren"
    /// Sent as the `warren_version` client property.
    public var clientVersion: String = "unknown"
    public var frameMax: Int = 131_072
    /// 0 = the broker's maximum.
    public var channelMax: Int = 0
    public var tls: TLSConfiguration?
    /// TCP_USER_TIMEOUT: how long sent data may stay unacknowledged by the peer before the kernel
    /// fails the socket. The backstop for librabbitmq 0.11's blocking-send bug (#780). `nil`:
    /// twice the heartbeat, at least 10 s.
    public var tcpUserTimeout: Duration?
    /// Frames read per loop turn before outgoing work (acks, publishes) gets a turn.
    public var maxFramesPerTurn: Int = 512

    public init(endpoints: [AMQPEndpoint]) {
        self.endpoints = endpoints
    }

    public init(urls: [String]) throws(AMQPError) {
        var endpoints: [AMQPEndpoint] = []
        for url in urls { endpoints.append(try AMQPEndpoint(url: url)) }
        self.init(endpoints: endpoints)
    }

    var effectiveTCPUserTimeout: Duration {
        tcpUserTimeout ?? max(heartbeat * 2, .seconds(10))
    }
}
