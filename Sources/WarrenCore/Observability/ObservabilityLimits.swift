/// The listener's bounds, fixed: an operator endpoint scraped every few seconds by a handful of
/// clients needs no tuning, only protection from clients that hold sockets open.
public struct ObservabilityLimits: Sendable {
    /// How long a connection may take to deliver a complete request, counted from when it was
    /// accepted or from the previous response: an idle keep-alive connection and a client that
    /// trickles a request (slowloris) are closed when it passes.
    public var requestTimeout: Duration
    /// Connections open at once; beyond it a new connection is closed as soon as it is accepted.
    public var maxConnections: Int

    public init(requestTimeout: Duration = .seconds(10), maxConnections: Int = 64) {
        self.requestTimeout = requestTimeout
        self.maxConnections = maxConnections
    }
}
