internal import CRabbitMQShims
import Synchronization

/// The only way into an I/O loop from other threads: a mutex-guarded batch of commands plus an
/// eventfd that wakes the loop out of its wait. Producers signal the eventfd only when the loop
/// has not been signalled since it last took the batch, so a burst of settlements costs one
/// write, and never from the loop's own thread, which looks at the batch before it waits.
///
/// It also holds the jobs of tasks that run on the loop's thread (`IOLoopExecutor`).
final class CommandQueue: Sendable {
    /// Called once, on the I/O thread, with the publish's outcome.
    typealias Waiter = @Sendable (Result<PublishOutcome, AMQPError>) -> Void

    enum Command: Sendable {
        /// Runs on the I/O thread with the loop, or with the error that ended it.
        case perform(@Sendable (Result<IOLoop, AMQPError>) -> Void)
        /// Close the connection, then resume.
        case close(CheckedContinuation<Void, Never>)
    }

    struct Publish: Sendable {
        var channel: UInt16
        var message: OutgoingMessage
        var waiter: Waiter
        var deadline: UInt64
    }

    struct Settle: Sendable {
        var tag: DeliveryTag
        var disposition: Disposition
    }

    struct Batch: Sendable {
        var commands: [Command] = []
        var publishes: [Publish] = []
        var settles: [Settle] = []
    }

    private struct State: @unchecked Sendable {  // UnownedJob is not Sendable; it is only run once, by one thread
        var batch = Batch()
        var jobs: [UnownedJob] = []
        var signalled = false
        var closed: AMQPError?
    }

    private let state = Mutex(State())
    let wakeFD: Int32
    /// The loop, set by its thread while the loop runs and only ever used on that thread: a
    /// worker running there settles straight into the loop (`IOLoop.recordFromJob`), with no
    /// lock and no second queue. Unretained: the loop outlives the time it is set, and a
    /// counted reference (or a closure's context) cost two atomic operations per settlement.
    private nonisolated(unsafe) var loopOnThread: Unmanaged<IOLoop>?

    init() throws(AMQPError) {
        let fd = warren_eventfd_create()
        guard fd >= 0 else {
            throw AMQPError(.library, "cannot create an eventfd for the I/O loop (errno \(-fd))")
        }
        wakeFD = fd
    }

    deinit {
        _ = Glibc_close(wakeFD)
    }

    /// Returns the error that closed the queue, if it is closed (the command was not queued).
    func submit(_ command: Command) -> AMQPError? {
        enqueue { $0.commands.append(command) }
    }

    func submit(_ publish: Publish) -> AMQPError? {
        enqueue { $0.publishes.append(publish) }
    }

    /// Returns false if the loop is gone (the settlement is moot: the broker requeues). On the
    /// loop's own thread the settlement is recorded at once.
    @discardableResult
    func submit(_ settle: Settle) -> Bool {
        if isLoopThread, let loop = loopOnThread {
            loop._withUnsafeGuaranteedRef { $0.recordFromJob(settle) }
            return true
        }
        return enqueue { $0.settles.append(settle) } == nil
    }

    private func enqueue(_ add: (inout Batch) -> Void) -> AMQPError? {
        let onLoop = isLoopThread
        let (closed, signal): (AMQPError?, Bool) = state.withLock { state in
            if let closed = state.closed { return (closed, false) }
            add(&state.batch)
            return (nil, wake(&state, onLoop: onLoop))
        }
        if signal { warren_eventfd_signal(wakeFD) }
        return closed
    }

    private func wake(_ state: inout State, onLoop: Bool) -> Bool {
        guard !onLoop, !state.signalled else { return false }
        state.signalled = true
        return true
    }

    /// Whether the caller is this queue's loop thread, which need not signal itself.
    private var isLoopThread: Bool {
        warren_current_loop() == UnsafeRawPointer(Unmanaged.passUnretained(self).toOpaque())
    }

    /// Called by the loop's thread as it starts and ends running; marks the thread as this
    /// queue's loop (`IOLoopExecutor.isCurrentThreadAnIOThread` reads the same mark).
    func loopThreadStarted(_ loop: IOLoop) {
        warren_set_current_loop(Unmanaged.passUnretained(self).toOpaque())
        loopOnThread = .passUnretained(loop)
    }

    func loopThreadEnded() {
        loopOnThread = nil
        warren_set_current_loop(nil)
    }

    // MARK: jobs

    /// Queues a job for the loop's thread; returns it when the loop is gone, to run elsewhere.
    func submit(_ job: UnownedJob) -> UnownedJob? {
        let onLoop = isLoopThread
        let (refused, signal): (UnownedJob?, Bool) = state.withLock { state in
            if state.closed != nil { return (job, false) }
            state.jobs.append(job)
            return (nil, wake(&state, onLoop: onLoop))
        }
        if signal { warren_eventfd_signal(wakeFD) }
        return refused
    }

    /// The jobs queued since the last call.
    func takeJobs() -> [UnownedJob] {
        state.withLock { state in
            guard !state.jobs.isEmpty else { return [] }
            let jobs = state.jobs
            state.jobs = []
            return jobs
        }
    }

    /// True when jobs or commands wait: the loop must not block in its wait.
    var hasWork: Bool {
        state.withLock { !$0.jobs.isEmpty || !$0.batch.commands.isEmpty || !$0.batch.publishes.isEmpty || !$0.batch.settles.isEmpty }
    }

    /// Everything queued since the last call.
    func take() -> Batch {
        state.withLock { state in
            let batch = state.batch
            state.batch = Batch()
            state.signalled = false
            return batch
        }
    }

    /// Refuse further commands and jobs with `error`; returns what was still queued.
    func close(_ error: AMQPError) -> (batch: Batch, jobs: [UnownedJob]) {
        state.withLock { state in
            state.closed = state.closed ?? error
            let batch = state.batch
            let jobs = state.jobs
            state.batch = Batch()
            state.jobs = []
            return (batch, jobs)
        }
    }

    var closedError: AMQPError? { state.withLock { $0.closed } }
}

import Glibc

private func Glibc_close(_ fd: Int32) -> Int32 { Glibc.close(fd) }
