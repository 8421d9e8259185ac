import AsyncHTTPClient
import Foundation
import Logging
import Metrics
import NIOCore

/// Span export (docs/tracing.md, "Exporting spans"): the recorder the engine hands its queue
/// runners, and the exporter that sends what they recorded to the collector, over OTLP/HTTP.
///
/// Recording and exporting never meet on the delivery path: a delivery appends its ended spans
/// to a bounded queue; one exporter task takes them in batches (a full batch, or whatever waits
/// every `scheduleDelay`), encodes them and POSTs them, one request at a time. A collector that
/// is down or slow fills the queue, and spans past its capacity are dropped and counted
/// (`warren_trace_spans_dropped_total`); consumption does not wait.
///
/// Why not swift-otel's tracer (measured with `scripts/bench --only drain`, docs/performance.md):
/// it posts two events through `AsyncStream`s per span (started, ended) to a task of its own
/// and then to the batch processor actor, so every span wakes other threads; it draws ids from
/// the system generator (a system call each), and its span type is not public, so its ids had
/// to be read back through the propagator. At 100% sampling a noop drain ran at 0.31x of
/// tracing off with it, and the target is 0.7x. Warren takes the sampling decision itself
/// (`TraceSampler`, before any span exists), times spans with the wall clock, draws ids from
/// `TraceIDSource`, and writes the OTLP request directly (`OTLPEncoding`); async-http-client,
/// already used by the HTTP handler, sends it.
public struct SpanExport: Sendable {
    /// What the engine traces with.
    public let tracing: DeliveryTracing
    let exporter: SpanExporter

    /// The exporter for `configuration` (with the environment already applied).
    public init(_ configuration: TracingConfiguration, logger: Logger, factory: any MetricsFactory = MetricsSystem.factory) {
        let queue = SpanQueue(limits: configuration.queueLimits)
        tracing = .on(SpanRecorder(sampler: configuration.sampler, queue: queue))
        exporter = SpanExporter(configuration, queue: queue, logger: logger, factory: factory)
    }

    /// A URL as the log shows it: without credentials.
    public static func loggable(url: String) -> String {
        SpanExporter.redacted(url)
    }

    /// Exports until `engineStopped` is set, then sends what is still queued (each request
    /// within the export timeout) and returns.
    public func run(until engineStopped: Latch) async {
        await exporter.run(until: engineStopped)
    }
}

/// The exporter task's work: batches from the queue to the collector.
struct SpanExporter: Sendable {
    let queue: SpanQueue
    let url: String
    let exportProtocol: TracingConfiguration.ExportProtocol
    let headers: [String: String]
    let timeout: Duration
    let scheduleDelay: Duration
    let resource: SpanResource
    let dropped: Counter
    let exported: Counter
    let logger: Logger

    /// Back-off after a failed request: `firstBackoff` (1 s), doubling up to 30 s.
    var firstBackoff: Duration = .seconds(1)
    static let longestBackoff: Duration = .seconds(30)

    init(_ configuration: TracingConfiguration, queue: SpanQueue, logger: Logger, factory: any MetricsFactory) {
        self.queue = queue
        url = configuration.tracesURL
        exportProtocol = configuration.exportProtocol
        headers = configuration.headers
        timeout = configuration.exportTimeout
        scheduleDelay = configuration.scheduleDelay
        resource = SpanResource(serviceName: configuration.serviceName, attributes: configuration.resource)
        dropped = Counter(label: WarrenMetrics.traceSpansDropped, dimensions: [], factory: factory)
        exported = Counter(label: WarrenMetrics.traceSpansExported, dimensions: [], factory: factory)
        self.logger = logger
    }

    /// How one request went.
    enum Sent: Equatable {
        case accepted
        /// The collector may take it later: a connection failure, a timeout, 429, 502, 503, 504
        /// (OTLP/HTTP's retryable answers). The batch is kept and sent again after a back-off.
        case failed(String)
        /// The collector will not take it (any other status): the batch is dropped.
        case refused(String)
    }

    func run(until engineStopped: Latch) async {
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup)
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await engineStopped.wait()
                queue.close()
            }
            await export { batch in await post(batch, client: client) }
        }
        do {
            try await client.shutdown()
        } catch {
            logger.debug("span exporter's HTTP client did not shut down cleanly", metadata: [LogKeys.error: "\(error)"])
        }
    }

    /// The loop, with the request made by `send`: waits for a batch (or the timer), sends full
    /// batches while there are some, backs off after a failure, and once the queue is closed
    /// sends everything left (or, when the collector fails then, counts it dropped).
    func export(send: ([FinishedSpan]) async -> Sent) async {
        var retry: [FinishedSpan] = []
        var failures = 0
        while true {
            if !queue.isClosed {
                await wait(failures == 0 ? scheduleDelay : backoff(after: failures), forBatch: failures == 0)
            }
            let closing = queue.isClosed
            while true {
                reportDrops()
                let batch = retry.isEmpty ? queue.takeBatch() : retry
                retry = []
                if batch.isEmpty { break }
                switch await send(batch) {
                case .accepted:
                    exported.increment(by: Int64(batch.count))
                    if failures > 0 { logger.info("trace spans exported again: the collector took a batch", metadata: ["url": "\(redactedURL)"]) }
                    failures = 0
                case .refused(let reason):
                    dropped.increment(by: Int64(batch.count))
                    logger.warning("trace spans not exported: the collector refused the batch", metadata: [
                        "dropped": "\(batch.count)", LogKeys.error: "\(reason)", "url": "\(redactedURL)",
                    ])
                case .failed(let reason):
                    failures &+= 1
                    if closing {
                        let left = batch.count &+ queue.takeAllCount()
                        dropped.increment(by: Int64(left))
                        logger.warning("trace spans not exported at stop: the collector did not take them", metadata: [
                            "dropped": "\(left)", LogKeys.error: "\(reason)", "url": "\(redactedURL)",
                        ])
                        reportDrops()
                        return
                    }
                    retry = batch
                    if failures == 1 {
                        logger.warning("trace spans not exported: the collector did not take the batch; retrying with back-off", metadata: [
                            "spans": "\(batch.count)", LogKeys.error: "\(reason)", "url": "\(redactedURL)",
                        ])
                    }
                }
                if failures > 0 || (!closing && queue.count < queue.limits.batchSize) { break }
            }
            if closing && retry.isEmpty && queue.count == 0 {
                reportDrops()
                return
            }
        }
    }

    /// The spans the queue turned away since the last report: counted, and one warning.
    private func reportDrops() {
        let count = queue.takeDropped()
        guard count > 0 else { return }
        dropped.increment(by: Int64(count))
        logger.warning("trace spans dropped: export queue full", metadata: [
            "dropped": "\(count)", "queue_size": "\(queue.limits.capacity)",
        ])
    }

    func backoff(after failures: Int) -> Duration {
        let shift = min(max(failures - 1, 0), 5)
        return min(firstBackoff * (1 << shift), Self.longestBackoff)
    }

    /// Waits `delay`, or less: until a full batch waits (when `forBatch`) or the queue closes.
    private func wait(_ delay: Duration, forBatch: Bool) async {
        enum Woken { case timer, queue }
        await withTaskGroup(of: Woken.self) { group in
            group.addTask {
                try? await Task.sleep(for: delay)
                return .timer
            }
            group.addTask {
                await queue.waitForBatch(wakeOnBatch: forBatch)
                return .queue
            }
            let first = await group.next()
            group.cancelAll()
            if first == .timer { queue.wake() }
        }
    }

    /// One export request.
    func post(_ batch: [FinishedSpan], client: HTTPClient) async -> Sent {
        let body: ByteBuffer
        switch exportProtocol {
        case .httpProtobuf:
            guard let encoded = OTLPEncoding.protobuf(batch, resource: resource) else { return .refused("the request could not be encoded") }
            body = encoded
        case .httpJSON:
            body = ByteBuffer(bytes: OTLPEncoding.json(batch, resource: resource))
        }
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: exportProtocol.contentType)
        request.headers.add(name: "User-Agent", value: "warren/\(WarrenVersion.current)")
        for (name, value) in headers { request.headers.replaceOrAdd(name: name, value: value) }
        request.body = .bytes(body)
        do {
            let response = try await client.execute(request, timeout: .nanoseconds(Self.nanoseconds(timeout)))
            _ = try? await response.body.collect(upTo: 1 << 16)
            switch response.status.code {
            case 200..<300: return .accepted
            case 429, 502, 503, 504: return .failed("HTTP \(response.status.code)")
            default: return .refused("HTTP \(response.status.code)")
            }
        } catch {
            return .failed(String(String(describing: error).prefix(300)))
        }
    }

    /// The duration in nanoseconds, at most `Int64.max` (an `OTEL_*_TIMEOUT` of years).
    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return seconds < 0 ? 0 : .max }
        let (total, overflowAgain) = whole.addingReportingOverflow(attoseconds / 1_000_000_000)
        return overflowAgain ? .max : total
    }

    /// The URL without credentials, for the log.
    var redactedURL: String { Self.redacted(url) }

    static func redacted(_ url: String) -> String {
        guard var components = URLComponents(string: url) else { return "(invalid URL)" }
        components.user = nil
        components.password = nil
        return components.string ?? "(invalid URL)"
    }
}
