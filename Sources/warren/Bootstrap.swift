import AMQP
import Logging
import Metrics
import Prometheus
import WarrenCore

/// Logging and metrics are bootstrapped once per process, here; library code only takes a
/// `Logger` and uses the swift-metrics API.
enum Bootstrap {
    static func logging(_ configuration: LogConfiguration?, override level: Logger.Level? = nil) -> Logger {
        let effective = level ?? configuration?.level ?? .info
        let format: LineLogHandler.Format = configuration?.format == .json ? .json : .logfmt
        LoggingSystem.bootstrap { label in LineLogHandler(label: label, level: effective, format: format) }
        return Logger(label: "warren")
    }

    /// The Prometheus backend, and every series of `configuration` created at 0. Only when
    /// `[metrics] listen` is set: otherwise the handles stay swift-metrics' no-ops, which cost
    /// nothing per message.
    static func metrics(_ configuration: Configuration) -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets[WarrenMetrics.handlerDuration] = WarrenMetrics.handlerDurationBuckets
        MetricsSystem.bootstrap(factory)
        WarrenMetrics.precreate(configuration)
        return registry
    }
}

/// Connects for a one-shot command (check --connect, publish): an unreachable broker is exit 69,
/// refused credentials a configuration problem (78).
func connectOnce(_ configuration: Configuration, role: String, logger: Logger) async throws -> AMQPConnection {
    do {
        return try await AMQPConnection.connect(configuration.connectionConfiguration(role: role), logger: logger)
    } catch {
        printError("cannot connect to the broker: \(error)")
        throw error.code == .authenticationFailed ? WarrenExit.config : WarrenExit.unavailable
    }
}
