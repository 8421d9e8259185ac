import Logging
import MetricsTestKit
import TestSupport
import Testing

@testable import WarrenCore

/// `[tracing]` (docs/tracing.md, "Exporting spans"): decoding, refusals, what swift-otel is
/// given, and the diagnostics handler that counts the spans swift-otel drops. That swift-otel's
/// environment variables win over the section is checked with the binary
/// (TraceExportTests.theOpenTelemetryEnvironmentOverridesTheTracingSection): it reads the
/// process environment, which a unit test cannot set without touching every other test.
@Suite("[tracing]: decoding and span export set-up")
struct TracingConfigurationTests {
    static let broker = "[broker]\nurls = [\"amqp://guest:guest@localhost/\"]\n"

    @Test func everyKeyIsDecoded() throws {
        let configuration = try ConfigFixture.parse(Self.broker + """
            [tracing]
            endpoint = "https://otel.example:4318/base/"
            protocol = "http/json"
            sample_ratio = 0.25
            service_name = "billing-consumer"
            resource = { "deployment.environment" = "prod", "service.version" = "7" }
            """)
        let tracing = try #require(configuration.tracing)
        #expect(tracing.endpoint == "https://otel.example:4318/base/")
        #expect(tracing.tracesURL == "https://otel.example:4318/base/v1/traces")
        #expect(tracing.exportProtocol == .httpJSON)
        #expect(tracing.sampleRatio == 0.25)
        #expect(tracing.serviceName == "billing-consumer")
        #expect(tracing.resource == ["deployment.environment": "prod", "service.version": "7"])
    }

    @Test func tracingIsOffWithoutAnEndpoint() throws {
        #expect(try ConfigFixture.parse(Self.broker).tracing == nil)
        #expect(try ConfigFixture.parse(Self.broker + "[tracing]\nsample_ratio = 0.5\n").tracing == nil)
        #expect(try ConfigFixture.parse(Self.broker + "[tracing]\nendpoint = \"\"\n").tracing == nil)
    }

    @Test func theDefaultsAreProtobufEverythingSampledAndServiceWarren() throws {
        let tracing = try #require(try ConfigFixture.parse(Self.broker + "[tracing]\nendpoint = \"http://127.0.0.1:4318\"\n").tracing)
        #expect(tracing.exportProtocol == .httpProtobuf)
        #expect(tracing.sampleRatio == 1.0)
        #expect(tracing.serviceName == "warren")
        #expect(tracing.tracesURL == "http://127.0.0.1:4318/v1/traces")
    }

    @Test(arguments: ["127.0.0.1:4318", "ftp://collector:4318", "http://", "http://collector:4318/?x=1", "not a url"])
    func anEndpointThatIsNotAnHTTPURLIsRefused(endpoint: String) throws {
        let error = try #require(ConfigFixture.issues(Self.broker + "[tracing]\nendpoint = \"\(endpoint)\"\n"))
        #expect(error.issues.contains { "\($0)".contains("tracing.endpoint") && "\($0)".contains("http://") }, "\(error.issues)")
    }

    @Test(arguments: ["1.5", "-0.1", "\"half\""])
    func aSampleRatioOutsideZeroToOneIsRefused(ratio: String) throws {
        let error = try #require(ConfigFixture.issues(Self.broker + "[tracing]\nendpoint = \"http://c:4318\"\nsample_ratio = \(ratio)\n"))
        #expect(error.issues.contains { "\($0)".contains("tracing.sample_ratio") }, "\(error.issues)")
    }

    @Test func anUnknownProtocolIsRefused() throws {
        let error = try #require(ConfigFixture.issues(Self.broker + "[tracing]\nendpoint = \"http://c:4318\"\nprotocol = \"grpc\"\n"))
        #expect(error.issues.contains { "\($0)".contains("tracing.protocol") && "\($0)".contains("http/protobuf") }, "\(error.issues)")
    }

    @Test func anUnknownKeyIsRefused() throws {
        let error = try #require(ConfigFixture.issues(Self.broker + "[tracing]\nendpoint = \"http://c:4318\"\nsampler = \"on\"\n"))
        #expect(error.issues.contains { "\($0)".contains("sampler") }, "\(error.issues)")
    }

    @Test func swiftOTelIsGivenTheSectionAsItsConfiguration() throws {
        var tracing = TracingConfiguration(endpoint: "http://collector:4318")
        tracing.exportProtocol = .httpJSON
        tracing.serviceName = "svc"
        tracing.resource = ["deployment.environment": "prod"]
        let otel = SpanExport.otelConfiguration(tracing, logger: Logger(label: "test"))
        #expect(otel.traces.otlpExporter.endpoint == "http://collector:4318/v1/traces")
        #expect(otel.traces.otlpExporter.protocol == .httpJSON)
        #expect(otel.serviceName == "svc")
        #expect(otel.resourceAttributes == ["deployment.environment": "prod"])
        #expect(otel.traces.enabled && !otel.metrics.enabled && !otel.logs.enabled)
    }

    // MARK: swift-otel's diagnostics

    @Test func droppedAndUnexportedSpansAreCountedAndLoggedAsWarnings() throws {
        let metrics = TestMetrics()
        let log = CapturedLog()
        let otel = Logger(label: "otel") { _ in SpanExportDiagnostics(logger: log.logger(level: .info), factory: metrics) }
        otel.warning("\(SpanExportDiagnostics.droppedMessage)", metadata: ["queue_size": "2048", "dropped_count": "7"])
        otel.warning("\(SpanExportDiagnostics.exportFailedMessage)", metadata: ["batch_id": "3", "batch_size": "5"])
        #expect(try metrics.expectCounter(WarrenMetrics.traceSpansDropped, []).totalValue == 12)
        #expect(log.matching("trace spans dropped: export queue full").first?.metadata["dropped"] == "7")
        #expect(log.matching("trace spans not exported: the collector did not take the batch").first?.metadata["dropped"] == "5")
        #expect(log.all.allSatisfy { $0.level == .warning })
    }

    @Test func otherDiagnosticsGoToDebugWithoutTheEnvironmentValuesTheyCarry() throws {
        let log = CapturedLog()
        var otel = Logger(label: "otel") { _ in SpanExportDiagnostics(logger: log.logger(level: .debug), factory: TestMetrics()) }
        otel.logLevel = .debug
        otel[metadataKey: "environment_key"] = "OTEL_EXPORTER_OTLP_HEADERS"
        otel[metadataKey: "environment_value"] = "authorization=Bearer s3cret"
        otel[metadataKey: "new_value"] = "authorization=Bearer s3cret"
        otel.info("Configuration updated from environment")
        let entry = try #require(log.matching("swift-otel diagnostic").first)
        #expect(entry.level == .debug)
        #expect(entry.metadata["otel_message"] == "Configuration updated from environment")
        #expect(entry.metadata["environment_key"] == "OTEL_EXPORTER_OTLP_HEADERS")
        #expect(!entry.metadata.values.contains { $0.contains("s3cret") }, "\(entry.metadata)")
    }

    @Test func theDroppedCounterExistsAtZeroWhenTracingIsOn() throws {
        let metrics = TestMetrics()
        WarrenMetrics.precreate(try ConfigFixture.parse(Self.broker + "[tracing]\nendpoint = \"http://c:4318\"\n"), factory: metrics)
        #expect(try metrics.expectCounter(WarrenMetrics.traceSpansDropped, []).totalValue == 0)
    }
}
