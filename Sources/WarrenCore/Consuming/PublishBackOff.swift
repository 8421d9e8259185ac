import Synchronization

/// One queue's brake for transient publish failures. When a copy made while processing a
/// delivery could not be published for a reason that may pass (no publisher connection, a
/// resource alarm, a confirm that never came), the input goes back to the queue, and the queue's
/// workers stop taking deliveries for a while: the back-off grows with each failure in a row
/// (`Backoff`, 250 ms up to 30 s, with jitter) and ends with the next confirmed publish. So a
/// broker problem never turns a requeued message into a hot loop.
final class PublishBackOff: Sendable {
    private struct State {
        var backoff = Backoff(initial: .milliseconds(250), maximum: .seconds(30))
        var until: ContinuousClock.Instant?
    }

    private let state = Mutex(State())
    /// The hot path reads only this: set while a back-off is in force.
    private let active = Atomic<Bool>(false)

    var isActive: Bool { active.load(ordering: .acquiring) }

    /// A transient failure: the next delivery waits, longer each time in a row. Returns the wait.
    @discardableResult
    func failed(now: ContinuousClock.Instant = .now) -> Duration {
        let delay = state.withLock { state -> Duration in
            let delay = state.backoff.next()
            state.until = now + delay
            return delay
        }
        active.store(true, ordering: .releasing)
        return delay
    }

    /// A publish was confirmed: the publisher is healthy.
    func succeeded() {
        guard isActive else { return }
        state.withLock { state in
            state.backoff.reset()
            state.until = nil
        }
        active.store(false, ordering: .releasing)
    }

    /// Waits out the back-off in force, if any, then for the publisher to be healthy again
    /// (`healthy`: a publisher connection up and not blocked by the broker), or until `stop` is
    /// set. Returns at once when there is none. The next delivery is then the probe: its
    /// confirmed publish ends the back-off, another transient failure doubles it.
    func wait(unless stop: Latch, healthy: @Sendable () -> Bool) async {
        guard isActive, let until = state.withLock({ $0.until }) else { return }
        let remaining = until - .now
        if remaining > .zero {
            await sleep(for: remaining, unless: stop)
        }
        // Neither reconnecting nor a resource alarm has an event to await here: look twice a second.
        while !healthy() && !stop.isSet {
            await sleep(for: .milliseconds(500), unless: stop)
        }
    }
}
