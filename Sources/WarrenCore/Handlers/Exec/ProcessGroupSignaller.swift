import Glibc
import Synchronization

/// Signals the process group of one run, from the timeout task, which starts before the
/// process exists. A signal asked for before the group is known is sent the moment it is (a
/// timeout shorter than the spawn must still stop the process).
///
/// Signalling a group by id is safe while its leader is unreaped, and while any member lives
/// (the kernel keeps the id allocated). The process library reaps the leader just before the
/// run returns, so a signal sent in that short window, or to stragglers after it, could only
/// reach a foreign group if ours emptied, the pid space wrapped around meanwhile and the
/// newcomer made itself a group leader: accepted, as every `kill -- -pgid` accepts it.
final class ProcessGroupSignaller: Sendable {
    private struct State {
        var group: pid_t?
        var requested: Int32?
    }

    private let state = Mutex(State())

    /// The run's process was spawned as the leader of group `group`.
    func started(_ group: pid_t) {
        state.withLock { state in
            state.group = group
            if let signal = state.requested { Self.send(signal, to: group) }
        }
    }

    /// Sends `signal` to the whole group now, or as soon as it exists.
    func signal(_ signal: Int32) {
        state.withLock { state in
            state.requested = signal
            if let group = state.group { Self.send(signal, to: group) }
        }
    }

    private static func send(_ signal: Int32, to group: pid_t) {
        // Never 0 or 1: kill(0) would be our own group, kill(-1) every process we may signal.
        guard group > 1 else { return }
        // ESRCH (the group is gone) is the expected answer once everything has exited.
        _ = kill(-group, signal)
    }
}
