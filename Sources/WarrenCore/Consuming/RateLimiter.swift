import Foundation
import Synchronization

/// `rate_limit = "50/s"`: at most `perSecond` handler runs of a queue start per second, with
/// bursts of at most `burst` (the queue's concurrency) after an idle spell.
public struct RateLimit: Sendable, Hashable {
    public var perSecond: Double
    /// The text as written, for messages (`50/s`).
    public var text: String

    public init(perSecond: Double, text: String) {
        self.perSecond = perSecond
        self.text = text
    }

    /// `N/s`, `N/m` or `N/h`, N a positive number; nil for anything else.
    public static func parse(_ text: String) -> RateLimit? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let count = Double(parts[0].trimmingCharacters(in: .whitespaces)), count.isFinite, count > 0 else { return nil }
        let seconds: Double
        switch parts[1].trimmingCharacters(in: .whitespaces) {
        case "s": seconds = 1
        case "m": seconds = 60
        case "h": seconds = 3600
        default: return nil
        }
        let perSecond = count / seconds
        // Below one run a day, or above a billion a second, is not a rate anyone means.
        guard perSecond >= 1.0 / 86_400, perSecond <= 1e9 else { return nil }
        return RateLimit(perSecond: perSecond, text: text)
    }

    /// Seconds between two runs at the sustained rate.
    public var interval: Duration { .nanoseconds(Int64((1e9 / perSecond).rounded(.up))) }
}

/// When each run may start: the generic cell rate algorithm (a token bucket of `burst`
/// tokens refilled at the rate). Pure: the caller passes the time and waits itself.
struct RateSchedule: Sendable {
    let interval: Duration
    /// How far ahead of its slot a run may start: (burst - 1) intervals.
    let tolerance: Duration
    /// The theoretical arrival time of the next run.
    private var next: ContinuousClock.Instant?

    init(_ limit: RateLimit, burst: Int) {
        interval = limit.interval
        tolerance = limit.interval * max(0, burst - 1)
    }

    /// Reserves the next run's slot; returns when it may start (`now` or later).
    mutating func reserve(at now: ContinuousClock.Instant) -> ContinuousClock.Instant {
        let arrival = max(next ?? now, now)
        next = arrival + interval
        let start = arrival - tolerance
        return max(start, now)
    }
}

/// A queue's rate limiter, shared by its workers: each reserves a slot and waits for it.
final class RateLimiter: Sendable {
    private let schedule: Mutex<RateSchedule>

    init(_ limit: RateLimit, burst: Int) {
        schedule = Mutex(RateSchedule(limit, burst: burst))
    }

    /// Waits for this run's slot, or until `draining` is set.
    func acquire(unless draining: Latch) async {
        let now = ContinuousClock.now
        let start = schedule.withLock { $0.reserve(at: now) }
        if start > now { await sleep(for: start - now, unless: draining) }
    }
}
