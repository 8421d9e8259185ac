import Foundation
import Logging
import OTel
import ServiceLifecycle

/// The span exporter of a warren with `[tracing]`: swift-otel's tracing backend (OTLP/HTTP,
/// batch span processor, parent-based ratio sampler), built once at start.
///
/// Only tracing is taken from swift-otel: warren keeps its own logging and metrics, and the
/// tracer is passed explicitly to the engine (`DeliveryTracing.on`), not bootstrapped into the
/// global `InstrumentationSystem`.
public struct SpanExport: Sendable {
    /// What the engine traces with.
    public let tracing: DeliveryTracing
    /// swift-otel's background work (the batch processor and the exporter's HTTP client): run
    /// for the engine's life, shut down after it stopped, which exports what is still queued.
    let service: any Service
    let logger: Logger

    /// The backend for `configuration`, with the OpenTelemetry environment variables applied
    /// over it by swift-otel (`OTel.makeTracingBackend(configuration:)` reads them). Nil when
    /// `OTEL_SDK_DISABLED=true` turns the SDK off.
    public static func start(_ configuration: TracingConfiguration, logger: Logger) throws -> SpanExport? {
        if ProcessInfo.processInfo.environment["OTEL_SDK_DISABLED"]?.lowercased() == "true" {
            logger.info("span export disabled by OTEL_SDK_DISABLED")
            return nil
        }
        let (tracer, service) = try OTel.makeTracingBackend(configuration: otelConfiguration(configuration, logger: logger))
        return SpanExport(tracing: .on(SpanSource(tracer: tracer)), service: service, logger: logger)
    }

    /// `[tracing]` as swift-otel's configuration, before its environment overrides.
    static func otelConfiguration(_ configuration: TracingConfiguration, logger: Logger) -> OTel.Configuration {
        var otel = OTel.Configuration.default
        otel.serviceName = configuration.serviceName
        otel.resourceAttributes = configuration.resource
        otel.propagators = [.traceContext]
        otel.metrics.enabled = false
        otel.logs.enabled = false
        otel.traces.enabled = true
        otel.traces.exporter = .otlp
        // A sampled parent is followed, an unsampled one too; a trace warren starts is sampled
        // at this ratio. The decoder keeps the ratio within 0...1.
        otel.traces.sampler = .parentBasedTraceIDRatio(ratio: configuration.sampleRatio) ?? .parentBasedAlwaysOn
        otel.traces.otlpExporter.endpoint = configuration.tracesURL
        otel.traces.otlpExporter.protocol = configuration.exportProtocol == .httpJSON ? .httpJSON : .httpProtobuf
        // Its warnings are how drops are counted (SpanExportDiagnostics): never below warning.
        otel.diagnosticLogger = .custom(Logger(label: "warren.otel") { _ in SpanExportDiagnostics(logger: logger) })
        otel.diagnosticLogLevel = logger.logLevel <= .debug ? .debug : .warning
        return otel
    }

    /// Runs the exporter until `engineStopped` is set, then shuts it down gracefully: the spans
    /// still queued are exported (within the batch processor's export timeout).
    public func run(until engineStopped: Latch) async {
        let group = ServiceGroup(services: [service], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)
        await withTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                do {
                    try await group.run()
                } catch {
                    logger.warning("span exporter stopped", metadata: [LogKeys.error: "\(error)"])
                }
            }
            await engineStopped.wait()
            await group.triggerGracefulShutdown()
            await tasks.waitForAll()
        }
    }
}
