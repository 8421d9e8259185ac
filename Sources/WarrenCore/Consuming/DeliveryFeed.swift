import AMQP
import DequeModule
import Synchronization

/// Hands a consumer's deliveries to a queue's workers, first come first served: the one
/// hand-over between the I/O loop and the workers. The consumer is started with the feed as its
/// sink (`AMQPConnection.consume(_:into:)`), so the loop pushes each turn's batch here itself,
/// on its thread; a worker gets the next delivery without suspending while any is waiting, so
/// a worker whose handler finishes at once goes through a whole batch in one run.
///
/// Where the workers share one thread (the I/O thread: `workersShareOneThread`), a batch wakes
/// one idle worker, not one per delivery: that worker takes the rest without another task
/// switch while the handlers answer at once, and waking the others would only queue them behind
/// it on the same thread. Elsewhere each delivery of a batch wakes an idle worker, so they run in
/// parallel at once. Either way, a worker about to suspend on a delivery (its handler waits for
/// something) wakes the next idle one for what is waiting (`wakeAnother`), so no delivery waits
/// behind a suspended worker while another is idle.
/// Holds at most what the consumer received and no worker took yet (the prefetch window bounds
/// it).
final class DeliveryFeed: DeliverySink {
    private struct State: Sendable {
        var waiting: Deque<Delivery> = []
        var idle: [CheckedContinuation<Delivery?, Never>] = []
        /// A batch wakes one idle worker rather than one per delivery.
        var onePerBatch = false
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

    /// The consumer's batch, on the I/O thread; false once the feed ended (the loop gives the
    /// batch back to the broker).
    func receive(_ batch: [Delivery]) -> Bool {
        guard !state.withLock({ $0.ended }) else { return false }
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

    /// The queue's workers all run on one thread (set by the runner before they start).
    func workersShareOneThread(_ shared: Bool) {
        state.withLock { $0.onePerBatch = shared }
    }

    /// Queues `batch`, handing its first deliveries to idle workers: one, or one each, as
    /// `workersShareOneThread` says. False, taking nothing, once the feed ended: no worker would
    /// take them.
    @discardableResult
    func push(_ batch: [Delivery]) -> Bool {
        var handOver: [(CheckedContinuation<Delivery?, Never>, Delivery)] = []
        let taken = state.withLock { state in
            guard !state.ended else { return false }
            var rest = batch[...]
            while let first = rest.first, let worker = state.idle.popLast() {
                handOver.append((worker, first))
                rest = rest.dropFirst()
                if state.onePerBatch { break }
            }
            state.waiting.append(contentsOf: rest)
            return true
        }
        for (worker, delivery) in handOver { worker.resume(returning: delivery) }
        return taken
    }

    /// Hands the next waiting delivery to an idle worker, if both exist: called by a worker
    /// about to suspend on the delivery it took.
    func wakeAnother() {
        let handOver = state.withLock { state -> (CheckedContinuation<Delivery?, Never>, Delivery)? in
            guard !state.idle.isEmpty, let delivery = state.waiting.popFirst(), let worker = state.idle.popLast() else { return nil }
            return (worker, delivery)
        }
        if let (worker, delivery) = handOver { worker.resume(returning: delivery) }
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

    /// The next delivery; nil once the feed ended and nothing waits.
    nonisolated(nonsending) func next() async -> Delivery? {
        if let ready = takeNow() { return ready }
        return await withCheckedContinuation { continuation in
            let now: Delivery?? = state.withLock { state in
                if let delivery = state.waiting.popFirst() { return .some(delivery) }
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
