import DequeModule
import Synchronization

/// The ended spans waiting for export: bounded, and never in the way of a delivery.
///
/// Recording a span is an append under a lock held for a few instructions. When `capacity`
/// spans are waiting (the collector is slow, down, or refuses them), a new span is dropped and
/// counted instead; the exporter reports the count (`warren_trace_spans_dropped_total`). The
/// exporter is woken only when a full batch is waiting or when it asked to be (its timer, or
/// stopping), not for every span.
public final class SpanQueue: Sendable {
    public struct Limits: Sendable, Equatable {
        /// Spans kept waiting at most (`OTEL_BSP_MAX_QUEUE_SIZE`).
        public var capacity = 2048
        /// Spans in one export request at most (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`); a batch this
        /// size wakes the exporter.
        public var batchSize = 512
    }

    private struct State: ~Copyable {
        var spans = Deque<FinishedSpan>()
        var dropped = 0
        var waiter: CheckedContinuation<Void, Never>?
        /// Whether a full batch ends the wait (not during a back-off).
        var waiterWantsBatch = true
        /// A wake-up that came while the exporter was not waiting: its next wait returns at once.
        var woken = false
        var closed = false
    }

    let limits: Limits
    private let state = Mutex(State())

    init(limits: Limits) {
        self.limits = limits
    }

    /// Adds an ended span, or drops it when the queue is full or closed.
    func append(_ span: FinishedSpan) {
        let waiter: CheckedContinuation<Void, Never>? = state.withLock { state in
            guard !state.closed, state.spans.count < limits.capacity else {
                state.dropped &+= 1
                return nil
            }
            state.spans.append(span)
            guard state.spans.count >= limits.batchSize, state.waiterWantsBatch, let waiter = state.waiter else { return nil }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Up to one batch of the oldest spans, taken off the queue.
    func takeBatch() -> [FinishedSpan] {
        state.withLock { state in
            let count = min(state.spans.count, limits.batchSize)
            let batch = Array(state.spans.prefix(count))
            state.spans.removeFirst(count)
            return batch
        }
    }

    /// Empties the queue; the number of spans it held.
    func takeAllCount() -> Int {
        state.withLock { state in
            defer { state.spans.removeAll() }
            return state.spans.count
        }
    }

    /// The spans dropped since the last call.
    func takeDropped() -> Int {
        state.withLock { state in
            defer { state.dropped = 0 }
            return state.dropped
        }
    }

    var count: Int { state.withLock { $0.spans.count } }

    /// Returns when a full batch waits (if `wakeOnBatch`), when `wake()` was called (since the
    /// last return), or when the queue is closed.
    func waitForBatch(wakeOnBatch: Bool = true) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state in
                if state.woken || state.closed || (wakeOnBatch && state.spans.count >= limits.batchSize) {
                    state.woken = false
                    return true
                }
                state.waiter = continuation
                state.waiterWantsBatch = wakeOnBatch
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Ends the exporter's current (or next) wait.
    func wake() {
        let waiter: CheckedContinuation<Void, Never>? = state.withLock { state in
            guard let waiter = state.waiter else {
                state.woken = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// No span is taken after this (they are dropped and counted); the exporter is woken to
    /// send what is left.
    func close() {
        let waiter: CheckedContinuation<Void, Never>? = state.withLock { state in
            state.closed = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    var isClosed: Bool { state.withLock { $0.closed } }
}
