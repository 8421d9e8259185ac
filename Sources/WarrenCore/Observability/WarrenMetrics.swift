import Metrics

/// The Prometheus series (docs/operations.md): their names, their fixed label values, and the start-up
/// pre-creation that makes every series of the configured queues read 0 before any traffic
/// (so `rate()` and alerts work from the first scrape, not from the first failure).
///
/// Labels are bounded: `queue` and `handler` come from the configuration, `outcome`, `result`
/// and `role` from the fixed sets below. A message id or an error text never becomes a label.
/// Library code only uses the swift-metrics API; the executable picks the backend (Prometheus),
/// and without one every handle is a no-op.
public enum WarrenMetrics {
    public static let messages = "warren_messages_total"
    public static let handlerRuns = "warren_handler_runs_total"
    public static let handlerDuration = "warren_handler_duration_seconds"
    public static let inflight = "warren_inflight_messages"
    public static let consumers = "warren_consumers"
    /// 1 while an operator has paused the queue (`warren ctl pause`).
    public static let queuePaused = "warren_queue_paused"
    /// 1 while the queue's circuit breaker is open or probing.
    public static let circuitOpen = "warren_circuit_open"
    public static let publishes = "warren_publishes_total"
    public static let connectionUp = "warren_connection_up"
    public static let connectionBlocked = "warren_connection_blocked"
    public static let reconnects = "warren_reconnects_total"
    /// Spans not exported: the export queue was full, or the collector refused a batch or did
    /// not take it before warren stopped (docs/tracing.md, "Exporting spans").
    public static let traceSpansDropped = "warren_trace_spans_dropped_total"
    /// Spans the collector accepted.
    public static let traceSpansExported = "warren_trace_spans_exported_total"

    /// Buckets of `warren_handler_duration_seconds`: from a fast in-process handler to the
    /// 30-minute ceiling of a handler timeout (the broker's consumer timeout).
    public static let handlerDurationBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
        .seconds(60), .seconds(300), .seconds(1800),
    ]

    /// Creates every series the configuration can produce, at 0.
    public static func precreate(_ configuration: Configuration, factory: any MetricsFactory = MetricsSystem.factory) {
        for queue in configuration.queues {
            _ = QueueMetrics(queue: queue, factory: factory)
            for label in [consumers, queuePaused, circuitOpen] {
                Gauge(label: label, dimensions: [("queue", queue.name)], factory: factory).record(0)
            }
        }
        _ = PublishMetrics(factory: factory)
        if configuration.tracing != nil {
            for label in [traceSpansDropped, traceSpansExported] { _ = Counter(label: label, dimensions: [], factory: factory) }
        }
        for role in EngineStatus.Role.allCases {
            let dimensions = [("role", role.rawValue)]
            Gauge(label: connectionUp, dimensions: dimensions, factory: factory).record(0)
            Gauge(label: connectionBlocked, dimensions: dimensions, factory: factory).record(0)
            _ = Counter(label: reconnects, dimensions: dimensions, factory: factory)
        }
    }
}

/// `warren_messages_total{outcome}`: how warren settled a delivery.
public enum MessageOutcome: Int, CaseIterable, Sendable {
    /// Acked: handled, or acked before handling (ack_first), or unrouted with `unrouted = "ack"`.
    case acked
    /// A retry copy was confirmed on its delay queue, then the original acked.
    case retried
    /// A dead-letter copy was confirmed, then the original acked.
    case deadLettered
    /// Nacked with requeue: the requeue verdict, a failed publish, `retry = false`, or a delivery
    /// returned unstarted during a graceful stop.
    case requeued
    /// `basic.reject` without requeue (`dead_letter = "broker"`, or `unrouted = "reject"`).
    case rejected
    /// Acked and discarded (`dead_letter = "drop"`).
    case dropped
    /// Left unacked: no copy could be parked and the queue has no dead-letter exchange. The
    /// broker keeps the message and redelivers it when the channel closes.
    case held

    public var label: String {
        switch self {
        case .acked: "acked"
        case .retried: "retried"
        case .deadLettered: "dead_lettered"
        case .requeued: "requeued"
        case .rejected: "rejected"
        case .dropped: "dropped"
        case .held: "held"
        }
    }
}

/// `warren_handler_runs_total{result}`: how one handler run ended.
public enum HandlerResult: Int, CaseIterable, Sendable {
    case success, failure, timeout, ack, reject, requeue, retry

    public var label: String {
        switch self {
        case .success: "success"
        case .failure: "failure"
        case .timeout: "timeout"
        case .ack: "ack"
        case .reject: "reject"
        case .requeue: "requeue"
        case .retry: "retry"
        }
    }

    public init(_ outcome: HandlerOutcome) {
        switch outcome {
        case .success: self = .success
        case .failure(let failure): self = failure.isTimeout ? .timeout : .failure
        case .verdict(.ack, _, _, _): self = .ack
        case .verdict(.reject, _, _, _): self = .reject
        case .verdict(.requeue, _, _, _): self = .requeue
        case .verdict(.retry, _, _, _): self = .retry
        }
    }
}

/// `warren_publishes_total{result}`: what the broker said about one publish.
public enum PublishResult: Int, CaseIterable, Sendable {
    case confirmed, nacked, returned, timeout
    /// No confirm at all: no publisher connection within the confirm timeout, or the channel or
    /// connection died under the publish.
    case failed

    public var label: String {
        switch self {
        case .confirmed: "confirmed"
        case .nacked: "nacked"
        case .returned: "returned"
        case .timeout: "timeout"
        case .failed: "failed"
        }
    }
}
