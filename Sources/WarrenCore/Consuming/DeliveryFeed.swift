import AMQP
import DequeModule
import Synchronization

/// Hands a consumer's deliveries to a queue's workers, first come first served: the one
/// hand-over between the I/O loop and the workers. The consumer is started with the feed as its
/// sink (`AMQPConnection.consume(_:into:)`, through `QueueFeedSink`), so the loop pushes each
/// turn's batch here itself, on its thread; a worker gets the next delivery without suspending
/// while any is waiting, so a worker whose handler finishes at once goes through a whole batch
/// in one run.
///
/// Where the workers share one thread (the I/O thread: `workersShareOneThread`), a batch that
/// finds a worker idle and nothing waiting is run on the spot (`runOnTheSpot`), on the I/O
/// thread as it arrives, in the idle worker's stead: a delivery settled without waiting for
/// anything never reaches a worker, and costs no task switch. One that waits for something is
/// handed, started (`Item.started`), to that worker, and the next idle worker stands in for the
/// rest of the batch; with none left, the rest waits for the first worker free. Without a spot
/// runner, a batch wakes one idle worker, which takes the rest without another task switch
/// while the handlers answer at once (waking the others would only queue them behind it on the
/// same thread). Elsewhere each delivery of a batch wakes an idle worker, so they run in
/// parallel at once. Either way, a worker about to suspend on a delivery (its handler waits for
/// something) wakes the next idle one for what is waiting (`wakeAnother`), so no delivery waits
/// behind a suspended worker while another is idle.
///
/// Never more run at once than there are workers: a delivery is run on the spot only while an
/// idle worker is set aside for it. Holds at most what the consumer received and no worker took
/// yet (the prefetch window bounds it). `Started` is what is left of a delivery run on the spot
/// that waits for something (`DeliveryProcessor.Unfinished`; a stand-in in tests).
final class DeliveryFeed<Started: Sendable>: Sendable {
    /// What a worker takes.
    enum Item: Sendable {
        case delivery(Delivery)
        /// A delivery run on the spot that waits for something: the worker carries it on.
        case started(Started)
    }

    /// What running a delivery on the spot came to.
    enum Spot {
        /// Settled, or given back, without waiting for anything.
        case done
        /// It waits for something: a worker carries it on.
        case started(Started)
        /// Not started (a worker must wait before starting it): a worker takes it as it is,
        /// and the rest of the batch waits.
        case notStarted(Delivery)
    }

    /// Runs one delivery on the I/O thread, as far as it goes without waiting.
    typealias SpotRunner = @Sendable (Delivery) -> Spot

    /// An idle worker. Unchecked: each is resumed exactly once, by whoever removes it from
    /// `idle` under the lock (a batch, `wakeAnother`, `end`), and a checked continuation costs
    /// an allocation and two atomic operations more for every batch.
    private typealias Waiter = UnsafeContinuation<Item?, Never>

    private struct State: Sendable {
        var waiting: Deque<Delivery> = []
        var idle: [Waiter] = []
        /// A batch wakes one idle worker rather than one per delivery.
        var onePerBatch = false
        /// Set with `onePerBatch` when the queue's deliveries may run on the I/O thread.
        var spotRunner: SpotRunner?
        var ended = false
        /// Why the subscription ended, when it did not end normally.
        var error: AMQPError?
    }

    private let state = Mutex(State())
    /// Called with each batch as it arrives, before any worker sees it (the queue's activity,
    /// a stream's arrival order).
    private let arrived: @Sendable ([Delivery]) -> Void

    init(arrived: @escaping @Sendable ([Delivery]) -> Void = { _ in }) {
        self.arrived = arrived
    }

    /// The consumer's batch, on the I/O thread; returned whole once the feed ended (the loop
    /// gives it back to the broker).
    func receive(_ batch: consuming [Delivery]) -> [Delivery] {
        guard !state.withLock({ $0.ended }) else { return batch }
        arrived(batch)
        return push(batch)
    }

    /// The subscription ended: workers get what is waiting, then nil.
    func finish(_ error: AMQPError?) {
        state.withLock { $0.error = $0.error ?? error }
        end()
    }

    /// Why the subscription ended, once it has, when it did not end normally.
    var endError: AMQPError? { state.withLock { $0.error } }

    /// The queue's workers all run on one thread, the one that pushes (set by the runner
    /// before they start); with `runner`, a batch that finds a worker idle runs on the spot.
    func workersShareOneThread(_ shared: Bool, runOnTheSpot runner: SpotRunner? = nil) {
        state.withLock {
            $0.onePerBatch = shared
            $0.spotRunner = shared ? runner : nil
        }
    }

    /// Queues `batch`, handing its first deliveries to idle workers: one, or one each, as
    /// `workersShareOneThread` says, or runs it on the spot. Returns nothing; or, once the feed
    /// ended, the whole batch, taking none of it: no worker would take them.
    @discardableResult
    func push(_ batch: consuming [Delivery]) -> [Delivery] {
        // Taken from the end, each delivery moves out of the batch into the feed: copying
        // them would retain, then release, every reference a delivery holds.
        var batch = batch
        reverse(&batch)
        var handOver: [(Waiter, Delivery)] = []
        let plan = state.withLock { state -> Plan in
            guard !state.ended else { return .ended }
            if let runner = state.spotRunner, state.waiting.isEmpty, let worker = state.idle.popLast() {
                return .onTheSpot(worker, runner)
            }
            while !batch.isEmpty, let worker = state.idle.popLast() {
                handOver.append((worker, batch.removeLast()))
                if state.onePerBatch { break }
            }
            while let delivery = batch.popLast() { state.waiting.append(delivery) }
            return .queued
        }
        switch plan {
        case .ended:
            reverse(&batch)
            return batch
        case .queued:
            for (worker, delivery) in handOver { worker.resume(returning: .delivery(delivery)) }
        case .onTheSpot(let worker, let runner):
            runOnTheSpot(&batch, standingIn: worker, runner)
        }
        return []
    }

    private enum Plan {
        case ended
        case queued
        case onTheSpot(Waiter, SpotRunner)
    }

    /// Runs the (reversed) batch on the spot while an idle worker stands by for it: a delivery
    /// that waits for something goes to that worker, and the next idle one stands by for the
    /// rest. What no worker stands by for waits in the feed, in order.
    private func runOnTheSpot(_ batch: inout [Delivery], standingIn first: Waiter, _ runner: @escaping SpotRunner) {
        var standing: Waiter? = first
        while let worker = standing, let delivery = batch.popLast() {
            switch runner(delivery) {
            case .done:
                continue
            case .started(let started):
                worker.resume(returning: .started(started))
            case .notStarted(let delivery):
                worker.resume(returning: .delivery(delivery))
                standing = nil
                continue
            }
            standing = batch.isEmpty ? nil : state.withLock { $0.ended ? nil : $0.idle.popLast() }
        }
        // The worker standing by is idle again, or, if the feed ended meanwhile, told so (it
        // missed `end`).
        let ended = state.withLock { state -> Bool in
            while let delivery = batch.popLast() { state.waiting.append(delivery) }
            guard let worker = standing, !state.ended else { return state.ended }
            state.idle.append(worker)
            return false
        }
        if ended, let worker = standing { worker.resume(returning: nil) }
    }

    /// Through the buffer: its swaps move the deliveries, where the array's copy them.
    private func reverse(_ batch: inout [Delivery]) {
        batch.withUnsafeMutableBufferPointer { $0.reverse() }
    }

    /// Hands the next waiting delivery to an idle worker, if both exist: called by a worker
    /// about to suspend on the delivery it took.
    func wakeAnother() {
        let handOver = state.withLock { state -> (Waiter, Delivery)? in
            guard !state.idle.isEmpty, let delivery = state.waiting.popFirst(), let worker = state.idle.popLast() else { return nil }
            return (worker, delivery)
        }
        if let (worker, delivery) = handOver { worker.resume(returning: .delivery(delivery)) }
    }

    /// No more deliveries: workers get what is waiting, then nil.
    func end() {
        let idle = state.withLock { state in
            state.ended = true
            let idle = state.idle
            state.idle = []
            return idle
        }
        for worker in idle { worker.resume(returning: nil) }
    }

    /// The next delivery, or one started on the spot; nil once the feed ended and nothing waits.
    nonisolated(nonsending) func next() async -> Item? {
        if let ready = takeNow() { return .delivery(ready) }
        return await withUnsafeContinuation { continuation in
            let now: Item?? = state.withLock { state in
                if let delivery = state.waiting.popFirst() { return .some(.delivery(delivery)) }
                if state.ended { return .some(nil) }
                state.idle.append(continuation)
                return .none
            }
            if let now { continuation.resume(returning: now) }
        }
    }

    /// Workers suspended in `next()`, waiting for a delivery.
    var idleWorkers: Int { state.withLock { $0.idle.count } }

    /// The next delivery if one is waiting, without suspending.
    func takeNow() -> Delivery? {
        state.withLock { $0.waiting.popFirst() }
    }
}

/// A queue's feed as its consumer's sink. Not generic, so that the I/O loop's calls through
/// `DeliverySink` reach the feed's code specialized for the processor's `Unfinished`: a generic
/// class's own conformance would run its unspecialized code, which looks up type metadata on
/// every call.
final class QueueFeedSink: DeliverySink {
    let feed: QueueRunner.Feed

    init(_ feed: QueueRunner.Feed) {
        self.feed = feed
    }

    func receive(_ batch: consuming [Delivery]) -> [Delivery] {
        feed.receive(batch)
    }

    func finish(_ error: AMQPError?) {
        feed.finish(error)
    }
}
