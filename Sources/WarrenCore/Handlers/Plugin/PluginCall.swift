import Synchronization

/// The meeting point of one plugin call: the pool thread that runs it and the task that awaits
/// it. A C call cannot be interrupted, so the awaiting task does not wait for the thread: it
/// stops at the handler timeout (or when cancelled), and whichever side settles the call first
/// decides how it ended. A call whose waiter gave up before a thread picked it up never runs:
/// its message has already been handed to the retry policy.
final class PluginCall: Sendable {
    enum Ending: Sendable, Equatable {
        /// The plugin returned in time.
        case returned(PluginReturn)
        /// The timeout passed; `whileRunning`: the plugin was still in `handle` (its thread stays
        /// busy until it returns), else the call was still queued and will not run.
        case timedOut(whileRunning: Bool)
        /// The awaiting task was cancelled (a forced stop).
        case cancelled(whileRunning: Bool)
        /// The handler had shut down when a thread picked the call up.
        case notRun
    }

    private struct State {
        /// When the plugin entered `handle`; nil while the call is queued.
        var startedAt: ContinuousClock.Instant?
        var ending: Ending?
        var waiter: CheckedContinuation<Ending, Never>?
    }

    private let state = Mutex(State())

    /// Pool thread, before calling the plugin: false if the waiter has given up already.
    func begin() -> Bool {
        state.withLock { state in
            guard state.ending == nil else { return false }
            state.startedAt = .now
            return true
        }
    }

    /// How long the plugin has been in `handle`, if it entered it (for the log line of a call
    /// that returns after its timeout).
    var runningFor: Duration? {
        state.withLock { state in state.startedAt.map { .now - $0 } }
    }

    /// Pool thread: the plugin returned, or the call did not run. False if the waiter had given
    /// up already (the result is then dropped).
    @discardableResult
    func finish(_ ending: Ending) -> Bool {
        settle { _ in ending }
    }

    /// Awaiting side: the timeout passed. False if the call had already ended.
    @discardableResult
    func timeOut() -> Bool {
        settle { running in .timedOut(whileRunning: running) }
    }

    @discardableResult
    private func settle(_ ending: (Bool) -> Ending) -> Bool {
        let (settled, waiter) = state.withLock { state -> (Ending?, CheckedContinuation<Ending, Never>?) in
            guard state.ending == nil else { return (nil, nil) }
            let settled = ending(state.startedAt != nil)
            state.ending = settled
            defer { state.waiter = nil }
            return (settled, state.waiter)
        }
        if let settled, let waiter { waiter.resume(returning: settled) }
        return settled != nil
    }

    /// Returns how the call ended: when the plugin returns, the timeout passes or the task is
    /// cancelled, whichever comes first.
    func ending() async -> Ending {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ended = state.withLock { state -> Ending? in
                    if let ending = state.ending { return ending }
                    state.waiter = continuation
                    return nil
                }
                if let ended { continuation.resume(returning: ended) }
            }
        } onCancel: {
            settle { running in .cancelled(whileRunning: running) }
        }
    }
}
