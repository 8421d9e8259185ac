internal import CRabbitMQShims

/// Runs tasks on a connection's I/O thread, between turns of its loop: the thread
/// that owns the socket, and the only one that may call librabbitmq for it.
///
/// A consumer whose processing prefers this executor (`withTaskExecutorPreference`) takes its
/// deliveries, runs short handlers and settles them on the thread that read them: the hand-over
/// costs no thread wake-up, and settlements made there go out in the same turn without a
/// signal. Work that may block (a child process, a file, a remote call) must not run here: the
/// loop only reads frames and sends heartbeats between jobs.
///
/// Jobs queued after the loop ended run on the global concurrent executor, so a task that
/// prefers a dead connection's thread still finishes.
public final class IOLoopExecutor: TaskExecutor {
    let queue: CommandQueue

    init(queue: CommandQueue) {
        self.queue = queue
    }

    /// Whether the caller runs on a connection's I/O thread (any connection's), where nothing
    /// may block.
    public static var isCurrentThreadAnIOThread: Bool { warren_current_loop() != nil }

    public func enqueue(_ job: consuming ExecutorJob) {
        if let refused = queue.submit(UnownedJob(job)) {
            Self.runElsewhere([refused])
        }
    }

    /// Runs the queued jobs (and those they queue) for up to `budgetNanoseconds` after `start`
    /// (the clock's reading before the first); returns the clock's reading after the last, or
    /// `start` when there were none. Called by the loop's thread only.
    func runJobs(from start: UInt64, budgetNanoseconds: UInt64) -> UInt64 {
        let me = asUnownedTaskExecutor()
        var now = start
        while true {
            let jobs = queue.takeJobs()
            if jobs.isEmpty { return now }
            for job in jobs { job.runSynchronously(on: me) }
            now = monotonicNanoseconds()
            if now &- start >= budgetNanoseconds { return now }
        }
    }

    /// Hands jobs the loop will not run any more to the global concurrent executor.
    static func runElsewhere(_ jobs: [UnownedJob]) {
        for job in jobs { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }
}
