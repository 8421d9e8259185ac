import AMQP
import Synchronization

/// Matches requests with worker processes: a request goes to a running worker that has fewer
/// than `capacity` requests in flight, else waits in FIFO order until one has room; an answer
/// goes back to the `handle` call waiting for its id.
///
/// All state sits behind one lock and every operation is short and never suspends, so the
/// `handle` tasks, the stdout readers and the supervisors never wait on each other for long.
/// Continuations are resumed after the lock is released.
final class PipeDispatcher: Sendable {
    /// What a finished request tells its waiting `handle`: an outcome, or nil when the `handle`
    /// task itself was cancelled and nobody waits any more.
    typealias Waiter = CheckedContinuation<HandlerOutcome?, Never>

    /// A running worker as the dispatcher sees it.
    private struct Worker {
        let serial: UInt64
        let index: Int
        let pid: Int32
        /// False from the moment the worker is known to be ending: no new requests go to it.
        var accepting = true
        /// Requests handed to this worker and not answered yet. `true` marks those whose caller
        /// no longer waits (cancelled or timed out): their answer is still expected and dropped.
        var inFlight: [UInt64: Bool] = [:]
        let frames: AsyncStream<PipeProtocol.Frame>.Continuation
        let stop: AsyncStream<String>.Continuation
    }

    /// When a request times out, and what its timeout is logged with.
    struct Expiry: Sendable {
        let deadline: ContinuousClock.Instant
        let timeout: Duration
        let queue: String
        let messageID: AMQPString?
    }

    private struct Request {
        var waiter: Waiter
        let expiry: Expiry?
        /// The request's bytes, until a worker takes them.
        var frame: PipeProtocol.Frame?
        /// The worker it was handed to, by serial.
        var worker: UInt64?
    }

    private struct State {
        var nextID: UInt64 = 0
        var nextSerial: UInt64 = 0
        var workers: [Worker] = []
        /// Request ids waiting for a worker with room, oldest first.
        var queue: [UInt64] = []
        var requests: [UInt64: Request] = [:]
        /// Where the search for a worker with room starts, so that equal loads take turns.
        var rotation = 0
        var closed = false
        /// When the deadline sweeper wakes next (nil: not before it is kicked), and how to kick it.
        var sweepTarget: ContinuousClock.Instant?
        var sweepKick: AsyncStream<Void>.Continuation?

        func position(of serial: UInt64) -> Int? { workers.firstIndex { $0.serial == serial } }

        /// Hands waiting requests to workers with room, oldest first.
        mutating func dispatch(capacity: Int) {
            while let id = queue.first, let slot = workerWithRoom(capacity: capacity) {
                queue.removeFirst()
                guard var request = requests[id], let frame = request.frame else { continue }
                request.frame = nil
                request.worker = workers[slot].serial
                requests[id] = request
                workers[slot].inFlight[id] = false
                workers[slot].frames.yield(frame)
            }
        }

        /// The least loaded accepting worker below `capacity`, searching from `rotation`.
        private mutating func workerWithRoom(capacity: Int) -> Int? {
            var best: Int?
            var bestLoad = capacity
            for offset in workers.indices {
                let slot = (rotation + offset) % workers.count
                let load = workers[slot].inFlight.count
                if workers[slot].accepting, load < bestLoad {
                    best = slot
                    bestLoad = load
                }
            }
            if let best { rotation = (best + 1) % workers.count }
            return best
        }
    }

    let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int) {
        precondition(capacity > 0, "PipeDispatcher capacity must be positive, got \(capacity)")
        self.capacity = capacity
    }

    static let stoppedFailure = HandlerFailure("the pipe handler is stopping")

    func makeID() -> UInt64 {
        state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
    }

    /// Queues request `id` and waits for its outcome. Returns nil only when the calling task is
    /// cancelled first; the request is then forgotten (a worker's later answer is dropped).
    ///
    /// With an `expiry`, the deadline sweeper (`expired(at:)`) times the request out; it is kicked
    /// when this deadline comes before the one it sleeps until.
    func submit(_ id: UInt64, _ frame: PipeProtocol.Frame, expiry: Expiry? = nil) async -> HandlerOutcome? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (waiter: Waiter) in
                let (immediate, kick): (HandlerOutcome??, AsyncStream<Void>.Continuation?) = state.withLock { state in
                    if state.closed { return (.some(.failure(Self.stoppedFailure)), nil) }
                    // Cancellation sets the flag before running `abandon`; checking it under
                    // the lock means a request is either never registered or seen by `abandon`.
                    if Task.isCancelled { return (.some(nil), nil) }
                    state.requests[id] = Request(waiter: waiter, expiry: expiry, frame: frame)
                    state.queue.append(id)
                    state.dispatch(capacity: capacity)
                    guard let deadline = expiry?.deadline, let kick = state.sweepKick,
                        state.sweepTarget.map({ deadline < $0 }) ?? true
                    else { return (.none, nil) }
                    state.sweepTarget = deadline
                    return (.none, kick)
                }
                kick?.yield()
                if let immediate { waiter.resume(returning: immediate) }
            }
        } onCancel: {
            abandon(id)
        }
    }

    /// The requests whose deadline has passed at `now`, for the sweeper to time out.
    func expired(at now: ContinuousClock.Instant) -> [(id: UInt64, expiry: Expiry)] {
        state.withLock { state in
            state.requests.compactMap { id, request in
                guard let expiry = request.expiry, expiry.deadline <= now else { return nil }
                return (id, expiry)
            }
        }
    }

    /// The earliest deadline of a waiting request (nil: none), which the sweeper now sleeps
    /// until; `kick` wakes it for an earlier one.
    func armSweep(kick: AsyncStream<Void>.Continuation) -> ContinuousClock.Instant? {
        state.withLock { state in
            state.sweepKick = kick
            state.sweepTarget = state.requests.values.lazy.compactMap { $0.expiry?.deadline }.min()
            return state.sweepTarget
        }
    }

    /// The caller of `submit` was cancelled: stop waiting for `id`.
    private func abandon(_ id: UInt64) {
        let waiter = state.withLock { state -> Waiter? in
            guard let request = state.requests.removeValue(forKey: id) else { return nil }
            if let serial = request.worker, let slot = state.position(of: serial) {
                state.workers[slot].inFlight[id] = true
            } else {
                state.queue.removeAll { $0 == id }
            }
            return request.waiter
        }
        waiter?.resume(returning: nil)
    }

    /// Request `id` ran out of time: answer it with `failure`. A worker that had it is presumed
    /// hung, so it gets no more requests and is stopped with `stopReason` (failing the rest of
    /// its in-flight requests when it has gone). Returns the pid of that worker, if any.
    @discardableResult
    func timeOut(_ id: UInt64, failure: HandlerFailure, stopReason: String) -> Int32? {
        let (waiter, pid) = state.withLock { state -> (Waiter?, Int32?) in
            guard let request = state.requests.removeValue(forKey: id) else { return (nil, nil) }
            guard let serial = request.worker, let slot = state.position(of: serial) else {
                state.queue.removeAll { $0 == id }
                return (request.waiter, nil)
            }
            state.workers[slot].inFlight[id] = true
            state.workers[slot].accepting = false
            state.workers[slot].stop.yield(stopReason)
            return (request.waiter, state.workers[slot].pid)
        }
        waiter?.resume(returning: .failure(failure))
        return pid
    }

    /// A worker came up: it takes waiting requests at once. Returns its serial.
    func workerStarted(index: Int, pid: Int32, frames: AsyncStream<PipeProtocol.Frame>.Continuation, stop: AsyncStream<String>.Continuation) -> UInt64 {
        state.withLock { state in
            state.nextSerial += 1
            state.workers.append(Worker(serial: state.nextSerial, index: index, pid: pid, frames: frames, stop: stop))
            state.dispatch(capacity: capacity)
            return state.nextSerial
        }
    }

    /// An answer from worker `serial`. Returns false when that worker has no request with this
    /// id in flight: the worker is confused and must be replaced.
    func complete(_ serial: UInt64, _ response: PipeProtocol.Response) -> Bool {
        let (known, waiter) = state.withLock { state -> (Bool, Waiter?) in
            guard let slot = state.position(of: serial), let abandoned = state.workers[slot].inFlight.removeValue(forKey: response.id) else {
                return (false, nil)
            }
            let waiter = abandoned ? nil : state.requests.removeValue(forKey: response.id)?.waiter
            state.dispatch(capacity: capacity)
            return (true, waiter)
        }
        waiter?.resume(returning: response.outcome)
        return known
    }

    /// Worker `serial` is ending: it gets no more requests.
    func retire(_ serial: UInt64) {
        state.withLock { state in
            guard let slot = state.position(of: serial) else { return }
            state.workers[slot].accepting = false
        }
    }

    /// Worker `serial` has gone: every request it had in flight fails with `failure`.
    func workerEnded(_ serial: UInt64, failure: HandlerFailure) {
        let waiters = state.withLock { state -> [Waiter] in
            guard let slot = state.position(of: serial) else { return [] }
            let worker = state.workers.remove(at: slot)
            worker.frames.finish()
            worker.stop.finish()
            if !state.workers.isEmpty { state.rotation %= state.workers.count }
            return worker.inFlight.compactMap { id, abandoned in abandoned ? nil : state.requests.removeValue(forKey: id)?.waiter }
        }
        for waiter in waiters { waiter.resume(returning: .failure(failure)) }
    }

    /// The handler stops: requests still waiting for a worker fail, and so will later ones.
    func close() {
        let waiters = state.withLock { state -> [Waiter] in
            state.closed = true
            defer { state.queue = [] }
            return state.queue.compactMap { state.requests.removeValue(forKey: $0)?.waiter }
        }
        for waiter in waiters { waiter.resume(returning: .failure(Self.stoppedFailure)) }
    }

    /// Requests waiting for an outcome (queued or in flight), for tests.
    var pendingCount: Int { state.withLock { $0.requests.count } }
    /// Requests waiting for a worker with room, for tests.
    var queuedCount: Int { state.withLock { $0.queue.count } }

    /// The running workers' pids by instance index, for logs and tests.
    var workerPIDs: [Int: Int32] {
        state.withLock { state in
            Dictionary(state.workers.map { ($0.index, $0.pid) }, uniquingKeysWith: { _, last in last })
        }
    }
}
