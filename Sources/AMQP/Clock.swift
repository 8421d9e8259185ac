import Glibc

/// Monotonic time in nanoseconds: the I/O loop's deadlines (confirm timeouts, ack hold-back)
/// must not jump with the wall clock.
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
}

extension Duration {
    /// Whole nanoseconds, saturating at zero and `UInt64.max`.
    var nanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        guard seconds >= 0 else { return 0 }
        let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return .max }
        return whole &+ UInt64(attoseconds / 1_000_000_000)
    }

    /// Whole seconds, rounded up (AMQP heartbeats are negotiated in seconds).
    var secondsRoundedUp: Int {
        let (seconds, attoseconds) = components
        return Int(seconds) + (attoseconds > 0 ? 1 : 0)
    }

    var timeval: Glibc.timeval {
        let nanos = nanoseconds
        return Glibc.timeval(tv_sec: Int(nanos / 1_000_000_000), tv_usec: Int((nanos % 1_000_000_000) / 1000))
    }
}
