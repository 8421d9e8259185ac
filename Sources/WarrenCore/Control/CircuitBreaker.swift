/// `circuit_breaker = { failure_ratio, min_runs, window, open_for }` on a queue (or in
/// `[defaults]`); docs/operations.md, "Circuit breaker".
public struct CircuitBreakerPolicy: Sendable, Hashable {
    /// The share of failures and timeouts among the runs of the last `window` that opens it.
    public var failureRatio = 0.5
    /// Fewer runs than this in the window never open it.
    public var minRuns = 20
    public var window: Duration = .seconds(30)
    /// How long it stays open before the first probe; doubled after each failed probe, up to
    /// ten times this.
    public var openFor: Duration = .seconds(10)

    public init() {}

    public var longestOpen: Duration { openFor * 10 }
}

/// A queue's circuit breaker: pure, events in, decisions out; `QueueGate` holds it and the
/// session cancels and re-subscribes the consumer as it says.
///
/// - closed: every run that ended is counted in the window; when the window holds at least
///   `min_runs` runs and the failures among them reach `failure_ratio`, it opens.
/// - open: no deliveries are taken until `until`; then it probes.
/// - probing: one message at a time; the first run that ends decides: a success closes it, a
///   failure opens it again for twice as long as last time (at most ten times `open_for`).
///
/// The window is kept as `Self.buckets` counters, each a slice of `window` long: memory stays
/// the same whatever the message rate, and a run leaves the window up to one slice late.
struct CircuitBreaker: Sendable {
    enum Run: Sendable {
        case success
        case failure
    }

    enum State: Sendable, Equatable {
        case closed
        case open(until: ContinuousClock.Instant, lasting: Duration)
        case probing(lastOpen: Duration)
    }

    /// What the gate must do after an event.
    enum Decision: Sendable, Equatable {
        case none
        /// Stop taking deliveries; probe at `probeAt`. `ratio` and `runs` are what opened it (a
        /// failed probe reports the probe alone: 1 of 1).
        case open(probeAt: ContinuousClock.Instant, ratio: Double, runs: Int)
        /// Take deliveries again with the queue's full prefetch and concurrency.
        case close
    }

    static let buckets = 20

    private struct Bucket {
        var slice: Int64 = .min
        var runs = 0
        var failures = 0
    }

    let policy: CircuitBreakerPolicy
    private(set) var state = State.closed
    private let origin: ContinuousClock.Instant
    private let sliceLength: Duration
    private var window: [Bucket]

    init(_ policy: CircuitBreakerPolicy, origin: ContinuousClock.Instant = .now) {
        self.policy = policy
        self.origin = origin
        sliceLength = max(policy.window / Self.buckets, .milliseconds(1))
        window = Array(repeating: Bucket(), count: Self.buckets)
    }

    var isOpen: Bool {
        if case .open = state { return true }
        return false
    }

    var isProbing: Bool {
        if case .probing = state { return true }
        return false
    }

    /// A run of the queue's handler ended at `now`.
    mutating func record(_ run: Run, at now: ContinuousClock.Instant) -> Decision {
        switch state {
        case .open:
            // A run that started before it opened: it ends under the ack policy, uncounted.
            return .none
        case .probing(let lastOpen):
            switch run {
            case .success:
                state = .closed
                resetWindow()
                return .close
            case .failure:
                let lasting = min(lastOpen * 2, policy.longestOpen)
                state = .open(until: now + lasting, lasting: lasting)
                return .open(probeAt: now + lasting, ratio: 1, runs: 1)
            }
        case .closed:
            let current = slice(of: now)
            let index = Int(current.remainderReportingOverflow(dividingBy: Int64(Self.buckets)).partialValue.magnitude)
            if window[index].slice != current { window[index] = Bucket(slice: current) }
            window[index].runs += 1
            if run == .failure { window[index].failures += 1 }
            var runs = 0
            var failures = 0
            for bucket in window where bucket.slice > current &- Int64(Self.buckets) && bucket.slice <= current {
                runs += bucket.runs
                failures += bucket.failures
            }
            guard runs >= policy.minRuns, runs > 0 else { return .none }
            let ratio = Double(failures) / Double(runs)
            guard ratio >= policy.failureRatio else { return .none }
            state = .open(until: now + policy.openFor, lasting: policy.openFor)
            resetWindow()
            return .open(probeAt: now + policy.openFor, ratio: ratio, runs: runs)
        }
    }

    /// The open time is over: take one message at a time.
    mutating func probe() {
        if case .open(_, let lasting) = state { state = .probing(lastOpen: lasting) }
    }

    /// The probe's consumer went away before a run ended (a lost connection, a reload): it is
    /// open again, for as long as last time, and probes again after that.
    mutating func probeAbandoned(at now: ContinuousClock.Instant) {
        if case .probing(let lastOpen) = state { state = .open(until: now, lasting: lastOpen) }
    }

    private func slice(of instant: ContinuousClock.Instant) -> Int64 {
        let slices = ((instant - origin) / sliceLength).rounded(.down)
        // Bounded by the process's life; the guard only keeps the conversion from trapping.
        guard slices.isFinite, abs(slices) < 1e18 else { return slices < 0 ? -Int64(1e18) : Int64(1e18) }
        return Int64(slices)
    }

    private mutating func resetWindow() {
        window = Array(repeating: Bucket(), count: Self.buckets)
    }
}
