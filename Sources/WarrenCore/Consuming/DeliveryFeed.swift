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
    /// An idle worker. Unchecked: each is resumed exactly once, by whoever removes it from
    /// `idle` under the lock (a batch, `wakeAnother`, `end`), and a checked continuation costs
    /// an allocation and two atomic operations more for every batch.
    private typealias Waiter = UnsafeContinuation<Delivery?, Never>

    private struct State: Sendable {
        var waiting: Deque<Delivery> = []
        var idle: [Waiter] = []
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

    /// The queue's workers all run on one thread (set by the runner before they start).
    func workersShareOneThread(_ shared: Bool) {
        state.withLock { $0.onePerBatch = shared }
    }

    /// Queues `batch`, handing its first deliveries to idle workers: one, or one each, as
    /// `workersShareOneThread` says. Returns nothing; or, once the feed ended, the whole batch,
    /// taking none of it: no worker would take them.
    @discardableResult
    func push(_ batch: consuming [Delivery]) -> [Delivery] {
        // Taken from the end, each delivery moves out of the batch into the feed: copying
        // them would retain, then release, every reference a delivery holds.
        var batch = batch
        reverse(&batch)
        var handOver: [(Waiter, Delivery)] = []
        let taken = state.withLock { state in
            guard !state.ended else { return false }
            while !batch.isEmpty, let worker = state.idle.popLast() {
                handOver.append((worker, batch.removeLast()))
                if state.onePerBatch { break }
            }
            while let delivery = batch.popLast() { state.waiting.append(delivery) }
            return true
        }
        for (worker, delivery) in handOver { worker.resume(returning: delivery) }
        guard taken else {
            reverse(&batch)
            return batch
        }
        return []
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
        return await withUnsafeContinuation { continuation in
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
