// The metric handles the engine holds, resolved once (per queue, per handler, per publisher)
// rather than looked up by label on every message.
import Metrics

/// One queue's metric handles, resolved once when its consumer starts. Per message, counting is
/// an array index and an atomic add: no label lookup, no allocation.
struct QueueMetrics: Sendable {
    /// Indexed by `MessageOutcome.rawValue`.
    private let outcomes: [Counter]
    /// Deliveries the worker pool has taken from the consumer and not yet settled.
    let inflight: Meter
    private let handlers: [String: HandlerMetrics]

    init(queue: QueueConfiguration, factory: any MetricsFactory = MetricsSystem.factory) {
        outcomes = MessageOutcome.allCases.map {
            Counter(label: WarrenMetrics.messages, dimensions: [("queue", queue.name), ("outcome", $0.label)], factory: factory)
        }
        inflight = Meter(label: WarrenMetrics.inflight, dimensions: [("queue", queue.name)], factory: factory)
        inflight.set(0)
        var handlers: [String: HandlerMetrics] = [:]
        for name in queue.handlerNames where handlers[name] == nil {
            handlers[name] = HandlerMetrics(queue: queue.name, handler: name, factory: factory)
        }
        self.handlers = handlers
    }

    func count(_ outcome: MessageOutcome) {
        outcomes[outcome.rawValue].increment()
    }

    /// Nil only for a handler the queue does not name (the router never returns one).
    func handler(_ name: String) -> HandlerMetrics? { handlers[name] }
}

/// One handler's series on one queue: runs by result, and the duration histogram.
struct HandlerMetrics: Sendable {
    /// One counter per result, each in a field of its own: taken out of an array, a counter
    /// would be retained and released around its increment, for every run.
    private let success, failure, timeout, ack, reject, requeue, retry: Counter
    private let duration: Timer

    init(queue: String, handler: String, factory: any MetricsFactory) {
        func runs(_ result: HandlerResult) -> Counter {
            Counter(
                label: WarrenMetrics.handlerRuns, dimensions: [("queue", queue), ("handler", handler), ("result", result.label)],
                factory: factory)
        }
        (success, failure, timeout, ack) = (runs(.success), runs(.failure), runs(.timeout), runs(.ack))
        (reject, requeue, retry) = (runs(.reject), runs(.requeue), runs(.retry))
        duration = Timer(label: WarrenMetrics.handlerDuration, dimensions: [("queue", queue), ("handler", handler)], factory: factory)
    }

    func record(_ outcome: HandlerOutcome, after elapsed: Duration) {
        switch HandlerResult(outcome) {
        case .success: success.increment()
        case .failure: failure.increment()
        case .timeout: timeout.increment()
        case .ack: ack.increment()
        case .reject: reject.increment()
        case .requeue: requeue.increment()
        case .retry: retry.increment()
        }
        // A run that answered at once is recorded as zero without converting a `Duration`.
        if elapsed == .zero {
            duration.recordNanoseconds(0)
        } else {
            duration.record(duration: elapsed)
        }
    }
}

/// `warren_publishes_total{result}`, resolved once per publisher (per session).
struct PublishMetrics: Sendable {
    /// Indexed by `PublishResult.rawValue`.
    private let results: [Counter]

    init(factory: any MetricsFactory = MetricsSystem.factory) {
        results = PublishResult.allCases.map {
            Counter(label: WarrenMetrics.publishes, dimensions: [("result", $0.label)], factory: factory)
        }
    }

    func count(_ result: PublishResult) {
        results[result.rawValue].increment()
    }
}
