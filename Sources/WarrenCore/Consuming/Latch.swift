import Synchronization

/// A one-way switch that tasks can check, or wait on (cancellably).
public final class Latch: Sendable {
    private struct State {
        var set = false
        var nextID = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    public var isSet: Bool { state.withLock { $0.set } }

    public func set() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard !state.set else { return [] }
            state.set = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once the flag is set, or as soon as the calling task is cancelled.
    public func wait() async {
        let id = state.withLock { state -> Int in
            state.nextID += 1
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state -> Bool in
                    if state.set || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
    }
}

/// Sleeps for `duration`, or less if one of `flags` is set meanwhile.
public func sleep(for duration: Duration, unless flags: Latch...) async {
    await withTaskGroup(of: Void.self) { group in
        for flag in flags { group.addTask { await flag.wait() } }
        group.addTask { try? await Task.sleep(for: duration) }
        await group.next()
        group.cancelAll()
    }
}
