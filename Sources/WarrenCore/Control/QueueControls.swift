import Synchronization

/// Runtime control of the running queues (`warren ctl`, docs/operations.md): an operator's pause
/// and resume, and what `ctl status` reports. One per engine, so a pause outlives reconnects and
/// reloads; each queue's `QueueGate` (its pause, its circuit breaker, its counts) is kept here
/// by name.
public final class QueueControls: Sendable {
    /// Who holds a queue's consumer back.
    public enum HeldBy: String, Sendable, Equatable {
        case `operator`
        case breaker
    }

    /// One queue's line in `warren ctl status`.
    public struct QueueReport: Sendable, Equatable {
        public var name: String
        /// It has a live consumer now (a probing breaker's included).
        public var consuming: Bool
        /// Why it has no consumer on purpose; nil when it should be consuming.
        public var heldBy: HeldBy?
        /// The breaker takes one message at a time to see whether the handler recovered.
        public var probing: Bool
        /// Deliveries its workers have taken and not yet settled.
        public var inFlight: Int
        /// Deliveries processed to the end since warren started (whatever the outcome).
        public var handled: Int
        /// Handler runs that failed or timed out since warren started.
        public var failed: Int
    }

    /// A request `pause` or `resume` cannot carry out.
    public struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        public let queue: String
        public var description: String { "no queue named \"\(queue)\" in the running configuration" }
    }

    let status: EngineStatus
    private let gates = Mutex<[String: QueueGate]>([:])

    public init(status: EngineStatus) {
        self.status = status
    }

    /// Stops consuming `queue`: its consumer is cancelled (what it has not delivered stays ready
    /// on the broker), deliveries not yet started go back, running handlers finish. True when it
    /// was consuming, false when it was already paused.
    @discardableResult
    public func pause(_ queue: String) throws(Refusal) -> Bool {
        try setPaused(queue, true)
    }

    /// Consumes `queue` again after `pause`. True when it was paused.
    @discardableResult
    public func resume(_ queue: String) throws(Refusal) -> Bool {
        try setPaused(queue, false)
    }

    /// Every configured queue, in the configuration's order.
    public func report() -> [QueueReport] {
        let snapshot = status.snapshot
        return status.queueOrder.compactMap { name -> QueueReport? in
            guard let live = snapshot.consuming[name] else { return nil }
            let gate = gates.withLock { $0[name] }
            let tally = gate?.tally.read() ?? (inFlight: 0, handled: 0, failed: 0)
            let heldBy: HeldBy? = snapshot.paused.contains(name) ? .operator : snapshot.circuitOpen.contains(name) ? .breaker : nil
            return QueueReport(
                name: name, consuming: live, heldBy: heldBy, probing: gate?.isProbing ?? false, inFlight: tally.inFlight,
                handled: tally.handled, failed: tally.failed)
        }
    }

    /// The queue's gate, with its breaker set up for `queue`'s policy (a changed policy starts
    /// a fresh breaker; the pause and the counts stay).
    func gate(for queue: QueueConfiguration) -> QueueGate {
        let gate = gate(queue.name)
        gate.configure(queue.circuitBreaker)
        return gate
    }

    /// The pause is kept by `EngineStatus` (readiness, the gauge and the status line read it
    /// there); the queue's gate is told, so its consumer stops or starts.
    private func setPaused(_ queue: String, _ paused: Bool) throws(Refusal) -> Bool {
        guard let changed = status.paused(queue, paused) else { throw Refusal(queue: queue) }
        if changed { gate(queue).pauseChanged() }
        return changed
    }

    private func gate(_ name: String) -> QueueGate {
        gates.withLock { gates in
            if let gate = gates[name] { return gate }
            let gate = QueueGate(queue: name, status: status)
            gates[name] = gate
            return gate
        }
    }
}
