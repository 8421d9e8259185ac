/// Exponential back-off with full jitter between `initial` and `maximum`: attempt n waits a
/// uniformly random duration in [initial, min(maximum, initial × 2^n)]. Jitter keeps a fleet of
/// daemons from reconnecting in lockstep after a broker restart.
public struct Backoff: Sendable {
    public let initial: Duration
    public let maximum: Duration
    public private(set) var attempt = 0

    public init(initial: Duration, maximum: Duration) {
        self.initial = initial
        self.maximum = max(initial, maximum)
    }

    /// The delay before the next attempt; each call moves one step up the ladder.
    public mutating func next<G: RandomNumberGenerator>(using generator: inout G) -> Duration {
        let ceiling = upperBound(forAttempt: attempt)
        attempt += 1
        let low = Double(initial.milliseconds)
        let high = Double(ceiling.milliseconds)
        guard high > low else { return initial }
        return .milliseconds(Int64(Double.random(in: low...high, using: &generator)))
    }

    public mutating func next() -> Duration {
        var generator = SystemRandomNumberGenerator()
        return next(using: &generator)
    }

    public mutating func reset() { attempt = 0 }

    func upperBound(forAttempt n: Int) -> Duration {
        let factor = n >= 62 ? Double.greatestFiniteMagnitude : Double(1 << n)
        let ms = Double(initial.milliseconds) * factor
        return ms >= Double(maximum.milliseconds) ? maximum : .milliseconds(Int64(ms))
    }
}
