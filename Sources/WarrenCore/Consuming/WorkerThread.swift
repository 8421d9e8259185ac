import AMQP
import CSpawn
import DequeModule
import Dispatch
import Foundation
import Synchronization

/// A thread of its own for one worker of a queue whose handlers wait with the thread blocked
/// (`HandlerThreading.ownThread`: `exec`). A worker task that prefers it
/// (`addTask(executorPreference:)`) runs here from delivery to settlement, and its handler runs
/// the child process right here instead of handing the wait to another thread and back: one
/// message costs no thread wake-up while deliveries are waiting in the feed, which is how a
/// hand-written consumer (`amqp-consume`) runs its command.
///
/// Nothing else runs on the thread, so blocking it holds up only its own worker: the queue's
/// runner tells the handler so (`HandlerInput.mayBlockThread`) rather than the thread marking
/// itself. The runner stops the thread only after its worker finished. Jobs that arrive after
/// `stop()` run on the global concurrent executor, so a task that still prefers a stopped
/// thread finishes.
final class WorkerThread: TaskExecutor, Sendable {
    private struct State: Sendable {
        var jobs: Deque<UnownedJob> = []
        var sleeping = false
        var stopped = false
    }

    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)

    /// Starts the thread; `name` (at most 15 bytes) shows in `top -H` and `ps -L`.
    init(name: String) {
        let thread = Thread { [self] in
            nameCurrentThread(name)
            loop()
        }
        thread.start()
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let (accepted, sleeping) = state.withLock { state -> (Bool, Bool) in
            guard !state.stopped else { return (false, false) }
            state.jobs.append(job)
            defer { state.sleeping = false }
            return (true, state.sleeping)
        }
        if !accepted {
            globalConcurrentExecutor.enqueue(ExecutorJob(job))
        } else if sleeping {
            wake.signal()
        }
    }

    /// The thread runs what is queued, then ends.
    func stop() {
        let sleeping = state.withLock { state in
            state.stopped = true
            defer { state.sleeping = false }
            return state.sleeping
        }
        if sleeping { wake.signal() }
    }

    private func loop() {
        warren_thread_discard_sigchld()
        let me = asUnownedTaskExecutor()
        while true {
            let next: UnownedJob?? = state.withLock { state in
                if let job = state.jobs.popFirst() { return .some(job) }
                if state.stopped { return .none }
                state.sleeping = true
                return .some(nil)
            }
            switch next {
            case .none: return
            case .some(nil): wake.wait()
            case .some(let job?): job.runSynchronously(on: me)
            }
        }
    }
}
