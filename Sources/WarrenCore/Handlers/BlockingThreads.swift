import AMQP
import CSpawn
import DequeModule
import Dispatch
import Foundation
import Synchronization

/// Threads that may block: the one way warren gets a thread to wait on with the thread held.
///
/// - A queue whose handlers run child processes gets a set sized for its workers (`QueueRunner`).
///   When every handler is `exec`, each worker task prefers the set as its executor
///   (`addTask(executorPreference:)`), runs there from delivery to settlement, and its handler
///   waits for the process right where it is, as a hand-written consumer (`amqp-consume`) runs
///   its command: no thread hand-over per message while deliveries are waiting. Otherwise a run
///   hands its wait to the set (`run`) and its task is free meanwhile.
/// - A `plugin` entry gets a set of its own, `threads` in size, for its library's calls
///   (`submit`): a plugin blocks as it likes, and a stuck one stalls only its own threads.
///
/// Where a run may block is passed down with each run (`HandlerInput.blocking`), never read from
/// the thread. Nothing else runs on these threads, so blocking one holds up only the work that
/// was given to it. Each thread unblocks SIGCHLD (see `warren_thread_discard_sigchld`), and shows
/// its name in `top -H` and `ps -L`.
public final class BlockingThreads: TaskExecutor, Sendable {
    private enum Work: Sendable {
        case job(UnownedJob)
        case call(@Sendable (_ active: Bool) -> Void)
    }

    private struct State: Sendable {
        var work: Deque<Work> = []
        /// Threads waiting for work that no `wake.signal()` has been spent on yet.
        var sleeping = 0
        var stopped = false
    }

    /// How many threads the set has.
    public let count: Int
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)

    /// Starts `count` threads (at least one) named `name` (at most 15 bytes are kept).
    public init(name: String, count: Int) {
        self.count = max(1, count)
        for _ in 0..<self.count {
            let thread = Thread { [self] in
                nameCurrentThread(name)
                warren_thread_discard_sigchld()
                loop()
            }
            thread.start()
        }
    }

    /// For runs that no queue gave threads to (a handler called outside the engine): a few
    /// threads, started on first use.
    static let spare = BlockingThreads(name: "warren-blocking", count: 16)

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        // A task that still prefers a stopped set finishes on the global executor.
        if !add(.job(job)) { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }

    /// Runs `body` on one of the threads, which it may block, and returns its result; nil when
    /// the set was stopped (nothing ran).
    public func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T? {
        await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
            submit { active in continuation.resume(returning: active ? body() : nil) }
        }
    }

    /// Queues `body` for one of the threads, which calls it with `active` true. Once the set is
    /// stopped it is called at once, on the caller's thread, with `active` false.
    public func submit(_ body: @escaping @Sendable (_ active: Bool) -> Void) {
        if !add(.call(body)) { body(false) }
    }

    /// The threads end once what is queued has run, each as soon as it is free (a thread held by
    /// a stuck call ends when the call returns). Work given afterwards runs elsewhere, or not at
    /// all (`run`, `submit`).
    public func stop() {
        let sleeping = state.withLock { state in
            state.stopped = true
            defer { state.sleeping = 0 }
            return state.sleeping
        }
        for _ in 0..<sleeping { wake.signal() }
    }

    private func add(_ work: Work) -> Bool {
        let (accepted, wakeOne) = state.withLock { state -> (Bool, Bool) in
            guard !state.stopped else { return (false, false) }
            state.work.append(work)
            guard state.sleeping > 0 else { return (true, false) }
            state.sleeping -= 1
            return (true, true)
        }
        if wakeOne { wake.signal() }
        return accepted
    }

    private func loop() {
        let me = asUnownedTaskExecutor()
        while true {
            let next: Work?? = state.withLock { state in
                if let work = state.work.popFirst() { return .some(work) }
                if state.stopped { return .none }
                state.sleeping += 1
                return .some(nil)
            }
            switch next {
            case .none: return
            case .some(nil): wake.wait()
            case .some(.job(let job)?): job.runSynchronously(on: me)
            case .some(.call(let body)?): body(true)
            }
        }
    }
}

/// Where a handler run may wait with a thread held (`HandlerInput.blocking`), set by the engine,
/// which knows where each worker runs.
public enum BlockingWait: Sendable {
    /// The run's thread is its worker's own (one of its queue's `BlockingThreads`): wait here.
    case here
    /// Hand the wait to one of these threads; the run's own thread is free meanwhile.
    case on(BlockingThreads)
    /// No queue gave threads to this run: one of a few process-wide ones (`BlockingThreads.spare`).
    case spare

    /// Runs `body`, which may block its thread, where this says; nil when the threads it was to
    /// run on were stopped (nothing ran).
    public func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T? {
        switch self {
        case .here: body()
        case .on(let threads): await threads.run(body)
        case .spare: await BlockingThreads.spare.run(body)
        }
    }
}
