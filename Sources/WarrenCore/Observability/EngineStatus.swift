import Synchronization

/// What the engine is doing right now, in one place: which configured queues have a live
/// consumer, whether each connection is up or blocked, and whether warren is stopping.
///
/// The engine reports transitions here; readiness (`/readyz`, systemd's `READY=1`), the one-line
/// `STATUS=` summary and the state gauges are all read from it, so they can never disagree.
/// Observers are called on every change, in order, with the new snapshot.
public final class EngineStatus: Sendable {
    public enum Role: String, Sendable, CaseIterable {
        case consumer
        case publisher
    }

    public struct Connection: Sendable, Equatable {
        public var up = false
        /// Failed attempts since the connection was last up (0 while up).
        public var failedAttempts = 0
        /// The broker's reason while it blocks the connection (resource alarm); nil otherwise.
        public var blockedReason: String?
        /// Times the connection came up again after being lost (the first connect excluded).
        public var reconnects = 0
        var everUp = false

        public var blocked: Bool { blockedReason != nil }
    }

    public struct Snapshot: Sendable, Equatable {
        /// Every configured queue, and whether it has a live consumer now.
        public var consuming: [String: Bool] = [:]
        public var connections: [Role: Connection] = [.consumer: Connection(), .publisher: Connection()]
        /// A graceful stop has begun.
        public var stopping = false
        /// Queues an operator paused (`warren ctl pause`): no consumer, by request.
        public var paused: Set<String> = []
        /// Queues whose circuit breaker is open or probing: no consumer (or a probing one), by
        /// the breaker's decision.
        public var circuitOpen: Set<String> = []

        /// Every configured queue has a live consumer, or is held on purpose (paused by an
        /// operator, or its circuit breaker open: warren does what it was told), and warren is
        /// not stopping.
        public var isReady: Bool {
            !stopping && connections[.consumer]?.up == true
                && consuming.allSatisfy { queue, live in live || isHeld(queue) }
        }

        /// Paused by an operator or held by its open circuit breaker.
        public func isHeld(_ queue: String) -> Bool {
            paused.contains(queue) || circuitOpen.contains(queue)
        }

        /// One line for systemd's `STATUS=` and the logs.
        public var summary: String {
            if stopping { return "stopping: finishing in-flight messages" }
            let consumer = connections[.consumer] ?? Connection()
            if !consumer.up {
                return consumer.failedAttempts == 0
                    ? "connecting to the broker"
                    : "broker unreachable, reconnecting (attempt \(consumer.failedAttempts + 1))"
            }
            var parts = ["consuming \(consuming.values.filter { $0 }.count)/\(consuming.count) queues"]
            let pausedNow = paused.sorted()
            if !pausedNow.isEmpty { parts.append("paused by an operator: \(pausedNow.joined(separator: " "))") }
            let openNow = circuitOpen.sorted()
            if !openNow.isEmpty { parts.append("circuit open: \(openNow.joined(separator: " "))") }
            if let publisher = connections[.publisher], !publisher.up, publisher.everUp {
                parts.append("publisher connection reconnecting")
            }
            for role in Role.allCases {
                if let reason = connections[role]?.blockedReason { parts.append("\(role.rawValue) connection blocked by the broker (\(reason))") }
            }
            return parts.joined(separator: ", ")
        }
    }

    private struct State {
        var snapshot = Snapshot()
        /// The configured queues in the configuration's order.
        var order: [String] = []
        var observers: [@Sendable (Snapshot) -> Void] = []
    }

    private let state = Mutex(State())

    public init() {}

    public var snapshot: Snapshot { state.withLock { $0.snapshot } }

    /// The configured queues, in the configuration's order.
    public var queueOrder: [String] { state.withLock { $0.order } }

    /// Calls `observer` with the current snapshot now and after every change. It runs under the
    /// status lock (so changes arrive in order): it must be quick and must not call back in.
    public func observe(_ observer: @escaping @Sendable (Snapshot) -> Void) {
        state.withLock { state in
            state.observers.append(observer)
            observer(state.snapshot)
        }
    }

    // MARK: transitions (reported by the engine)

    /// The queues the running configuration consumes; queues not listed are forgotten.
    func configure(queues: [String]) {
        state.withLock { $0.order = queues }
        update { snapshot in
            var consuming: [String: Bool] = [:]
            for queue in queues { consuming[queue] = snapshot.consuming[queue] ?? false }
            snapshot.consuming = consuming
            snapshot.paused.formIntersection(queues)
            snapshot.circuitOpen.formIntersection(queues)
        }
    }

    func consumer(_ queue: String, live: Bool) {
        update { snapshot in
            guard snapshot.consuming[queue] != nil else { return }
            snapshot.consuming[queue] = live
        }
    }

    /// An operator paused or resumed a configured queue: whether that changed anything, nil
    /// when `queue` is not configured. The one record of a pause (`QueueGate` reads it); a
    /// reload that removes a queue forgets its pause (`configure(queues:)`).
    func paused(_ queue: String, _ paused: Bool) -> Bool? {
        var changed: Bool?
        update { snapshot in
            guard snapshot.consuming[queue] != nil else { return }
            changed = paused ? snapshot.paused.insert(queue).inserted : snapshot.paused.remove(queue) != nil
        }
        return changed
    }

    /// Whether an operator paused `queue`.
    func isPaused(_ queue: String) -> Bool {
        state.withLock { $0.snapshot.paused.contains(queue) }
    }

    /// The queue's circuit breaker opened (probing included) or closed.
    func circuit(_ queue: String, open: Bool) {
        update { snapshot in
            guard snapshot.consuming[queue] != nil else { return }
            if open { snapshot.circuitOpen.insert(queue) } else { snapshot.circuitOpen.remove(queue) }
        }
    }

    func connectionUp(_ role: Role) {
        connectionsUp([role])
    }

    /// Both connections of a new session come up together: one change, one status line.
    func connectionsUp(_ roles: [Role]) {
        update { snapshot in
            for role in roles {
                var connection = snapshot.connections[role] ?? Connection()
                if connection.everUp, !connection.up { connection.reconnects += 1 }
                connection.up = true
                connection.everUp = true
                connection.failedAttempts = 0
                snapshot.connections[role] = connection
            }
        }
    }

    /// The connection is gone (or an attempt to open it failed). Its consumers go with it.
    func connectionDown(_ role: Role, failedAttempt: Bool = false) {
        update { snapshot in
            var connection = snapshot.connections[role] ?? Connection()
            connection.up = false
            connection.blockedReason = nil
            if failedAttempt { connection.failedAttempts += 1 }
            snapshot.connections[role] = connection
            if role == .consumer {
                for queue in snapshot.consuming.keys { snapshot.consuming[queue] = false }
            }
        }
    }

    func blocked(_ role: Role, reason: String?) {
        update { snapshot in
            snapshot.connections[role, default: Connection()].blockedReason = reason
        }
    }

    func stopping(_ stopping: Bool) {
        update { $0.stopping = stopping }
    }

    private func update(_ change: (inout Snapshot) -> Void) {
        state.withLock { state in
            let before = state.snapshot
            change(&state.snapshot)
            guard state.snapshot != before else { return }
            for observer in state.observers { observer(state.snapshot) }
        }
    }
}
