/// The connection's protocol state on the I/O loop, from the moment it is open (the handshake
/// before that is `IOLoop.connect`, which either returns an open loop or throws). Pure: events
/// in, what the loop must do out; tested in `ConnectionLifecycleTests`.
///
/// - open: reads, settles and publishes.
/// - blocked: the broker sent connection.blocked (a resource alarm): no publishes leave until
///   connection.unblocked; reading and settling go on (acks free the broker's memory).
/// - closing: this process asked to close: what is settled goes out, then connection.close.
/// - failed: the connection is unusable (the broker closed it, the socket failed, or our close
///   completed); the first reason is kept, later ones are ignored. The loop tears down.
struct ConnectionLifecycle: Sendable {
    enum State: Sendable {
        case open
        case blocked(reason: String)
        /// `blocked`: the broker had blocked it when the close was asked for.
        case closing(blocked: Bool)
        case failed(AMQPError)
    }

    enum Action: Sendable, Equatable {
        /// Tell the connection's owner (`ConnectionEvent.blocked`, `.unblocked`).
        case reportBlocked(reason: String)
        case reportUnblocked
        /// Finish the turn, send what is settled, then connection.close; then `closed(_:)`.
        case closeGracefully
    }

    private(set) var state = State.open {
        didSet { isAlive = if case .failed = state { false } else { true } }
    }

    /// Not failed. Checked several times per frame and per settlement, so it is stored: a
    /// computed property of a struct kept in the loop (a class) reads a copy of the whole
    /// state (its reason, its error) to match the case.
    private(set) var isAlive = true

    /// The reason it failed, if it did.
    var failure: AMQPError? {
        if case .failed(let error) = state { error } else { nil }
    }

    /// Whether publishes may be written now: not while blocked (the broker would not read
    /// them), nor after a failure. Those of the turn that asked to close still go.
    var mayPublish: Bool {
        switch state {
        case .open, .closing(blocked: false): true
        case .blocked, .closing(blocked: true), .failed: false
        }
    }

    /// This process asked to close: the loop ends its turn and closes.
    var isClosing: Bool {
        if case .closing = state { true } else { false }
    }

    mutating func brokerBlocked(reason: String) -> [Action] {
        guard case .open = state else { return [] }
        state = .blocked(reason: reason)
        return [.reportBlocked(reason: reason)]
    }

    mutating func brokerUnblocked() -> [Action] {
        guard case .blocked = state else { return [] }
        state = .open
        return [.reportUnblocked]
    }

    /// The connection became unusable; the first reason wins.
    mutating func failed(_ error: AMQPError) {
        guard isAlive else { return }
        state = .failed(error)
    }

    /// This process asked to close it (`AMQPConnection.close()`): once, and not after a failure.
    mutating func closeRequested() -> [Action] {
        switch state {
        case .open:
            state = .closing(blocked: false)
            return [.closeGracefully]
        case .blocked:
            state = .closing(blocked: true)
            return [.closeGracefully]
        case .closing, .failed:
            return []
        }
    }

    /// Our connection.close completed (or could not): nothing more goes out.
    mutating func closed(_ error: AMQPError) {
        failed(error)
    }
}
