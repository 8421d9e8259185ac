import Logging
import Metrics

/// swift-otel's own diagnostics, forwarded to warren's logger, and the spans it loses counted in
/// `warren_trace_spans_dropped_total`.
///
/// swift-otel exposes no drop count. What it does expose is its diagnostic logger
/// (`OTel.Configuration.diagnosticLogger = .custom(_)`): its batch span processor logs the
/// warning "Spans were dropped this iteration because queue was full" with `dropped_count` (a
/// span arriving while `maxQueueSize` spans wait is discarded: export never holds up
/// consumption), and "Failed to export batch." with `batch_size` when a batch could not be sent
/// (collector down, refused, timed out): those spans are lost too. This handler reads both
/// messages, counts their spans, and logs one warning of warren's own for each. Its
/// `onExportFailure` hook is not used: it is only called for an HTTP 401, to retry with new
/// headers, and says nothing about other failures.
///
/// Everything else swift-otel says goes to warren's logger at debug, with only the metadata
/// keys listed here: its configuration messages carry the values of the environment variables
/// it read (`OTEL_EXPORTER_OTLP_HEADERS` may hold a token), and those never reach a log.
struct SpanExportDiagnostics: LogHandler {
    static let droppedMessage = "Spans were dropped this iteration because queue was full"
    static let exportFailedMessage = "Failed to export batch."
    /// The metadata of swift-otel's lines that may be logged: never a configured value.
    static let forwardedKeys: Set<String> = ["component", "dropped_count", "queue_size", "batch_size", "batch_id", "environment_key"]

    let logger: Logger
    let dropped: Counter
    var logLevel: Logger.Level = .debug
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(logger: Logger, factory: any MetricsFactory = MetricsSystem.factory) {
        self.logger = logger
        self.dropped = Self.droppedCounter(factory: factory)
        // Only what warren would log anyway: at info, swift-otel's debug chatter is not formatted.
        self.logLevel = min(logger.logLevel, .warning)
    }

    static func droppedCounter(factory: any MetricsFactory = MetricsSystem.factory) -> Counter {
        Counter(label: WarrenMetrics.traceSpansDropped, dimensions: [], factory: factory)
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var all = metadata
        if let more = event.metadata { all.merge(more) { _, new in new } }
        let message = event.message.description
        if message == Self.droppedMessage {
            let count = Self.count(all["dropped_count"])
            dropped.increment(by: count)
            logger.warning("trace spans dropped: export queue full", metadata: [
                "dropped": "\(count)", "queue_size": all["queue_size"] ?? "",
            ])
        } else if message == Self.exportFailedMessage {
            let count = Self.count(all["batch_size"])
            dropped.increment(by: count)
            var details: Logger.Metadata = ["dropped": "\(count)"]
            if let error = event.error { details[LogKeys.error] = "\(Self.describe(error))" }
            logger.warning("trace spans not exported: the collector did not take the batch", metadata: details)
        } else {
            var details = all.filter { Self.forwardedKeys.contains($0.key) }
            details["otel_message"] = "\(message)"
            logger.debug("swift-otel diagnostic", metadata: details)
        }
    }

    private static func count(_ value: Logger.Metadata.Value?) -> Int64 {
        guard case .string(let text)? = value, let count = Int64(text), count > 0 else { return 0 }
        return count
    }

    /// The error of a failed export, cut short: an HTTP client error or status, never headers.
    private static func describe(_ error: any Error) -> String {
        String(String(describing: error).prefix(300))
    }
}
