import Logging
import Synchronization

/// Whether a queue may take deliveries now, and how many: the operator's pause and the circuit
/// breaker decide; the session (`keepConsuming`) waits for admission, subscribes accordingly,
/// and cancels the consumer when the admission changes. Also counts the queue's runs for
/// `warren ctl status`. One per queue name for the engine's life (`QueueControls`).
final class QueueGate: Sendable {
    /// What the queue may consume with.
    enum Admission: Sendable, Equatable {
        /// The queue's prefetch and concurrency.
        case full
        /// The breaker probes: one message at a time (prefetch 1, one worker).
        case probe
    }

    private struct State {
        var breaker: CircuitBreaker?
        /// Set, and replaced, on every change of the admission.
        var changed = Latch()
    }

    let queue: String
    let tally = QueueTally()
    private let status: EngineStatus
    private let state = Mutex(State())
    /// The admission as of the last change, readable without the lock: a worker checks it before
    /// each delivery it starts, so none starts once the queue is paused or its breaker opened,
    /// even before the session has cancelled the consumer.
    private let current = Atomic<UInt8>(Admission.fullCode)

    init(queue: String, status: EngineStatus) {
        self.queue = queue
        self.status = status
    }

    /// Sets up the breaker for `policy`: kept when the policy is the same, started afresh
    /// (closed) when it changed, removed when there is none. Called as a session subscribes the
    /// queue; the admission is read anew either way (a reload may have forgotten a pause).
    func configure(_ policy: CircuitBreakerPolicy?) {
        let changed = state.withLock { state -> Bool in
            guard state.breaker?.policy != policy else { return false }
            state.breaker = policy.map { CircuitBreaker($0) }
            return true
        }
        if changed { status.circuit(queue, open: false) }
        fire()
    }

    /// An operator paused or resumed the queue (`EngineStatus` keeps the pause).
    func pauseChanged() {
        fire()
    }

    var isPaused: Bool { status.isPaused(queue) }

    var isProbing: Bool { state.withLock { $0.breaker?.isProbing ?? false } }

    /// What the queue may consume with now; nil while paused or while its breaker is open.
    var admission: Admission? {
        state.withLock { admission($0) }
    }

    /// Whether a consumer started with `admission` may still start deliveries (lock-free).
    func admits(_ admission: Admission) -> Bool {
        current.load(ordering: .relaxed) == admission.code
    }

    private func admission(_ state: State) -> Admission? {
        if status.isPaused(queue) { return nil }
        switch state.breaker?.state {
        case .open: return nil
        case .probing: return .probe
        case .closed, nil: return .full
        }
    }

    /// Waits until the queue may take deliveries, and says how; nil once `draining` is set. An
    /// open breaker turns to probing here when its time is over.
    func waitForAdmission(unless draining: Latch) async -> Admission? {
        while !draining.isSet && !Task.isCancelled {
            let (now, changed, probeAt) = state.withLock { state -> (Admission?, Latch, ContinuousClock.Instant?) in
                var probeAt: ContinuousClock.Instant?
                if !status.isPaused(queue), case .open(let until, _) = state.breaker?.state { probeAt = until }
                return (admission(state), state.changed, probeAt)
            }
            if let now { return now }
            if let probeAt {
                if probeAt <= .now {
                    let probing = state.withLock { state -> Bool in
                        guard case .open(let until, _) = state.breaker?.state, until <= .now else { return false }
                        state.breaker?.probe()
                        return true
                    }
                    if probing { fire() }
                    continue
                }
                await sleep(for: probeAt - .now, unless: changed, draining)
            } else {
                await firstOf(changed, draining)
            }
        }
        return nil
    }

    /// Returns once the admission is no longer `admission` (or `draining` is set).
    func waitForChange(from started: Admission, unless draining: Latch) async {
        while !draining.isSet && !Task.isCancelled {
            let (now, changed) = state.withLock { (admission($0), $0.changed) }
            if now != started { return }
            await firstOf(changed, draining)
        }
    }

    /// A probe's consumer ended before its run decided anything: it probes again after the
    /// last open time.
    func probeAbandoned() {
        let changed = state.withLock { state -> Bool in
            guard state.breaker?.isProbing == true else { return false }
            state.breaker?.probeAbandoned(at: .now)
            return true
        }
        if changed { fire() }
    }

    /// A handler run of the queue ended (success, or failure including timeout); verdicts and
    /// unrouted messages are not reported. Logs and reports the breaker's transitions.
    func record(_ run: CircuitBreaker.Run, logger: Logger) {
        let decision = state.withLock { state -> CircuitBreaker.Decision in
            state.breaker?.record(run, at: .now) ?? .none
        }
        switch decision {
        case .none:
            return
        case .open(let probeAt, let ratio, let runs):
            status.circuit(queue, open: true)
            logger.warning("circuit open", metadata: [
                LogKeys.queue: "\(queue)", "failure_ratio": "\(Self.rounded(ratio))", "runs": "\(runs)",
                "probe_in": "\((probeAt - .now).configText)",
            ])
        case .close:
            status.circuit(queue, open: false)
            logger.info("circuit closed", metadata: [LogKeys.queue: "\(queue)"])
        }
        fire()
    }

    private func fire() {
        let changed = state.withLock { state -> Latch in
            current.store(admission(state)?.code ?? Admission.heldCode, ordering: .relaxed)
            let changed = state.changed
            state.changed = Latch()
            return changed
        }
        changed.set()
    }

    private static func rounded(_ ratio: Double) -> String {
        let percent = (ratio * 1000).rounded() / 1000
        return "\(percent)"
    }
}

extension QueueGate.Admission {
    static let heldCode: UInt8 = 0
    static let fullCode: UInt8 = 1

    var code: UInt8 {
        switch self {
        case .full: Self.fullCode
        case .probe: 2
        }
    }
}

/// A queue's counts for `warren ctl status`, since warren started.
final class QueueTally: Sendable {
    private let inFlight = Atomic<Int>(0)
    private let handled = Atomic<Int>(0)
    private let failed = Atomic<Int>(0)

    func started() { inFlight.add(1, ordering: .relaxed) }

    /// A delivery taken by a worker is settled or given back.
    func ended() { inFlight.subtract(1, ordering: .relaxed) }

    /// A delivery was processed to the end; `failed` when its handler failed or timed out.
    func processed(failed didFail: Bool) {
        handled.add(1, ordering: .relaxed)
        if didFail { failed.add(1, ordering: .relaxed) }
    }

    func read() -> (inFlight: Int, handled: Int, failed: Int) {
        (inFlight.load(ordering: .relaxed), handled.load(ordering: .relaxed), failed.load(ordering: .relaxed))
    }
}
