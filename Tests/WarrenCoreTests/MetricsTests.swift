import AMQP
import Metrics
import MetricsTestKit
import NIOHTTP1
import Testing

@testable import WarrenCore

/// The series of docs/operations.md against swift-metrics' test backend: what exists before any traffic,
/// how status snapshots map to the state gauges, and what the HTTP endpoints answer.
@Suite("Metrics and endpoints")
struct MetricsTests {
    static func configuration() throws -> Configuration {
        try ConfigFixture.parse(
            """
            [broker]
            urls = ["amqp://guest:guest@127.0.0.1:5672/"]
            [[queues]]
            name = "orders"
            routes = [{ match = { type = "a" }, handlers = ["one", "two"] }, { match = { type = "b" }, handlers = ["two"] }]
            [handlers.one]
            kind = "noop"
            [handlers.two]
            kind = "noop"
            """)
    }

    @Test func everySeriesOfTheConfiguredQueuesExistsAtZeroBeforeAnyTraffic() throws {
        let metrics = TestMetrics()
        WarrenMetrics.precreate(try Self.configuration(), factory: metrics)
        for outcome in MessageOutcome.allCases {
            #expect(try metrics.expectCounter(WarrenMetrics.messages, [("queue", "orders"), ("outcome", outcome.label)]).totalValue == 0)
        }
        for handler in ["one", "two"] {
            for result in HandlerResult.allCases {
                let dimensions = [("queue", "orders"), ("handler", handler), ("result", result.label)]
                #expect(try metrics.expectCounter(WarrenMetrics.handlerRuns, dimensions).totalValue == 0)
            }
            _ = try metrics.expectTimer(WarrenMetrics.handlerDuration, [("queue", "orders"), ("handler", handler)])
        }
        for result in PublishResult.allCases {
            #expect(try metrics.expectCounter(WarrenMetrics.publishes, [("result", result.label)]).totalValue == 0)
        }
        #expect(try metrics.expectMeter(WarrenMetrics.inflight, [("queue", "orders")]).lastValue == 0)
        #expect(try metrics.expectGauge(WarrenMetrics.consumers, [("queue", "orders")]).lastValue == 0)
        for role in ["consumer", "publisher"] {
            #expect(try metrics.expectGauge(WarrenMetrics.connectionBlocked, [("role", role)]).lastValue == 0)
            #expect(try metrics.expectGauge(WarrenMetrics.connectionUp, [("role", role)]).lastValue == 0)
            #expect(try metrics.expectCounter(WarrenMetrics.reconnects, [("role", role)]).totalValue == 0)
        }
    }

    @Test func stateGaugesFollowTheEngineStatusAndCountReconnects() throws {
        let metrics = TestMetrics()
        let gauges = StatusGauges(factory: metrics)
        let status = EngineStatus()
        gauges.follow(status)
        status.configure(queues: ["a", "b"])
        status.connectionUp(.consumer)
        status.connectionUp(.publisher)
        status.consumer("a", live: true)
        #expect(try metrics.expectGauge(WarrenMetrics.consumers, [("queue", "a")]).lastValue == 1)
        #expect(try metrics.expectGauge(WarrenMetrics.consumers, [("queue", "b")]).lastValue == 0)
        #expect(try metrics.expectGauge(WarrenMetrics.connectionUp, [("role", "consumer")]).lastValue == 1)

        status.blocked(.publisher, reason: "low on memory")
        #expect(try metrics.expectGauge(WarrenMetrics.connectionBlocked, [("role", "publisher")]).lastValue == 1)
        status.connectionDown(.consumer)
        #expect(try metrics.expectGauge(WarrenMetrics.consumers, [("queue", "a")]).lastValue == 0)
        #expect(try metrics.expectGauge(WarrenMetrics.connectionUp, [("role", "consumer")]).lastValue == 0)
        status.connectionUp(.consumer)
        #expect(try metrics.expectCounter(WarrenMetrics.reconnects, [("role", "consumer")]).totalValue == 1)
        #expect(try metrics.expectCounter(WarrenMetrics.reconnects, [("role", "publisher")]).totalValue == 0)

        // A reload that drops queue "a": its gauge reads 0 rather than its last value.
        status.consumer("a", live: true)
        status.configure(queues: ["b"])
        #expect(try metrics.expectGauge(WarrenMetrics.consumers, [("queue", "a")]).lastValue == 0)
    }

    @Test func handlerResultsAndMessageOutcomesAreFixedSets() {
        #expect(HandlerResult(.success(HandlerOutput())) == .success)
        #expect(HandlerResult(.failure(HandlerFailure("exit code 3"))) == .failure)
        #expect(HandlerResult(.failure(HandlerFailure("timeout after 1s", isTimeout: true))) == .timeout)
        #expect(HandlerResult(.verdict(.retry(delay: nil), error: nil, output: HandlerOutput())) == .retry)
        #expect(Set(HandlerResult.allCases.map(\.label)) == ["success", "failure", "timeout", "ack", "reject", "requeue", "retry"])
        #expect(Set(MessageOutcome.allCases.map(\.label)) == ["acked", "retried", "dead_lettered", "requeued", "rejected", "dropped", "held"])
    }

    static func sources(_ status: EngineStatus, liveness: Liveness.Verdict = .alive) -> ObservabilityServer.Sources {
        ObservabilityServer.Sources(status: status, liveness: { liveness }, metrics: { Array("# TYPE x counter\nx 1\n".utf8) })
    }

    @Test func readyzIsServiceUnavailableUntilEveryQueueHasALiveConsumer() {
        let status = EngineStatus()
        status.configure(queues: ["a", "b"])
        status.connectionUp(.consumer)
        status.connectionUp(.publisher)
        status.consumer("a", live: true)
        let notReady = ObservabilityServer.respond(method: .GET, uri: "/readyz", Self.sources(status))
        #expect(notReady.status == .serviceUnavailable)
        #expect(String(decoding: notReady.body, as: UTF8.self) == "consuming 1/2 queues\n")
        status.consumer("b", live: true)
        let ready = ObservabilityServer.respond(method: .GET, uri: "/readyz?verbose=1", Self.sources(status))
        #expect(ready.status == .ok)
        #expect(String(decoding: ready.body, as: UTF8.self) == "consuming 2/2 queues\n")
    }

    @Test func healthzReportsTheStalledLoop() {
        let status = EngineStatus()
        #expect(ObservabilityServer.respond(method: .GET, uri: "/healthz", Self.sources(status)).status == .ok)
        let stalled = ObservabilityServer.respond(method: .GET, uri: "/healthz", Self.sources(status, liveness: .stalled("loop x stuck")))
        #expect(stalled.status == .serviceUnavailable)
        #expect(String(decoding: stalled.body, as: UTF8.self) == "loop x stuck\n")
    }

    @Test func metricsUseThePrometheusTextContentTypeAndOtherPathsAreNotFound() {
        let status = EngineStatus()
        let metrics = ObservabilityServer.respond(method: .GET, uri: "/metrics", Self.sources(status))
        #expect(metrics.status == .ok)
        #expect(metrics.contentType.hasPrefix("text/plain; version=0.0.4"))
        #expect(ObservabilityServer.respond(method: .GET, uri: "/", Self.sources(status)).status == .notFound)
        #expect(ObservabilityServer.respond(method: .POST, uri: "/metrics", Self.sources(status)).status == .methodNotAllowed)
    }
}
