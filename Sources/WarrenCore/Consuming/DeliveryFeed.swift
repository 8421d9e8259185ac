import AMQP
import DequeModule
import Synchronization

/// Hands a consumer's deliveries to a queue's workers, first come first served. The reading task
/// pushes each batch the consumer received; an idle worker gets the next delivery without
/// suspending while any is waiting, so a worker whose handler finishes at once goes through a
/// whole batch in one run. Holds at most what the consumer received and no worker took yet
/// (the prefetch window bounds it).
final class DeliveryFeed: Sendable {
    private struct State: Sendable {
        var waiting: Deque<Delivery> = []
        var idle: [CheckedContinuation<Delivery?, Never>] = []
        var ended = false
    }

    private let state = Mutex(State())

    /// Queues `batch`, handing its first deliveries to idle workers.
    func push(_ batch: [Delivery]) {
        var handOver: [(CheckedContinuation<Delivery?, Never>, Delivery)] = []
        state.withLock { state in
            var rest = batch[...]
            while !rest.isEmpty, let worker = state.idle.popLast() {
                handOver.append((worker, rest.removeFirst()))
            }
            state.waiting.append(contentsOf: rest)
        }
        for (worker, delivery) in handOver { worker.resume(returning: delivery) }
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

    private func takeNow() -> Delivery? {
        state.withLock { $0.waiting.popFirst() }
    }
}
