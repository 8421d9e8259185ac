import Logging
import MetricsTestKit
import TestSupport
import Testing

@testable import WarrenCore

/// `[tracing]` (docs/tracing.md, "Exporting spans"): decoding, refusals, and the OpenTelemetry
/// environment variables applied over it (the binary reading its own environment is
/// TraceExportTests.theOpenTelemetryEnvironmentOverridesTheTracingSection).
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

    // MARK: the OpenTelemetry environment

    static let section = TracingConfiguration(endpoint: "http://collector:4318")

    @Test func theEnvironmentOverridesTheSection() throws {
        var section = Self.section
        section.resource = ["deployment.environment": "prod", "team": "billing"]
        let (applied, warnings) = section.applyingEnvironment([
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel.example:4318",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20s3cret, x-tenant = a",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_SERVICE_NAME": "from-env",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=staging,host.name=h1",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_BSP_MAX_QUEUE_SIZE": "100",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10",
        ])
        #expect(warnings.isEmpty, "\(warnings)")
        let tracing = try #require(applied)
        #expect(tracing.tracesURL == "https://otel.example:4318/v1/traces")
        #expect(tracing.exportProtocol == .httpJSON)
        #expect(tracing.headers == ["authorization": "Bearer s3cret", "x-tenant": "a"])
        #expect(tracing.exportTimeout == .milliseconds(2500))
        #expect(tracing.serviceName == "from-env")
        #expect(tracing.resource == ["deployment.environment": "staging", "team": "billing", "host.name": "h1"])
        #expect(tracing.sampler == TraceSampler(root: .ratio(0.25), followsParent: true))
        #expect(tracing.scheduleDelay == .milliseconds(200))
        #expect(tracing.queueLimits == SpanQueue.Limits(capacity: 100, batchSize: 10))
    }

    @Test func theTracesVariablesWinOverTheGeneralOnes() throws {
        let (applied, _) = Self.section.applyingEnvironment([
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://general:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/custom/path",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_HEADERS": "a=1",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=2",
        ])
        let tracing = try #require(applied)
        #expect(tracing.tracesURL == "http://traces:4318/custom/path", "used as it is, without /v1/traces")
        #expect(tracing.exportProtocol == .httpProtobuf)
        #expect(tracing.headers == ["b": "2"])
    }

    @Test func withoutTheEnvironmentTheSectionIsKeptAndSampledByItsRatio() throws {
        var section = Self.section
        section.sampleRatio = 0.1
        let (applied, warnings) = section.applyingEnvironment([:])
        #expect(applied == section && warnings.isEmpty)
        #expect(section.sampler == TraceSampler(root: .ratio(0.1), followsParent: true))
    }

    @Test(arguments: [["OTEL_SDK_DISABLED": "true"], ["OTEL_SDK_DISABLED": "TRUE"], ["OTEL_TRACES_EXPORTER": "none"]])
    func theEnvironmentCanTurnExportOff(environment: [String: String]) {
        #expect(Self.section.applyingEnvironment(environment).configuration == nil)
    }

    @Test func unusableValuesAreReportedAndIgnoredAndHeadersAreNeverQuoted() throws {
        let (applied, warnings) = Self.section.applyingEnvironment([
            "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization Bearer s3cret",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "soon",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            "OTEL_TRACES_SAMPLER": "sometimes",
            "OTEL_BSP_MAX_QUEUE_SIZE": "0",
            "OTEL_TRACES_EXPORTER": "zipkin",
        ])
        let tracing = try #require(applied)
        #expect(tracing == Self.section, "every value ignored")
        for name in [
            "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TIMEOUT",
            "OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_TRACES_SAMPLER", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_TRACES_EXPORTER",
        ] {
            #expect(warnings.contains { $0.hasPrefix(name) }, "\(name): \(warnings)")
        }
        #expect(!warnings.contains { $0.contains("s3cret") }, "\(warnings)")
    }

    @Test(arguments: [
        ("always_on", nil, TraceSampler(root: .always, followsParent: false)),
        ("always_off", nil, TraceSampler(root: .never, followsParent: false)),
        ("traceidratio", "0.5", TraceSampler(root: .ratio(0.5), followsParent: false)),
        ("parentbased_always_on", nil, TraceSampler(root: .always, followsParent: true)),
        ("parentbased_always_off", nil, TraceSampler(root: .never, followsParent: true)),
        ("parentbased_traceidratio", "0.01", TraceSampler(root: .ratio(0.01), followsParent: true)),
        ("parentbased_traceidratio", "2", TraceSampler(root: .always, followsParent: true)),
    ] as [(String, String?, TraceSampler)])
    func everyStandardSamplerIsUnderstood(name: String, argument: String?, expected: TraceSampler) throws {
        var environment = ["OTEL_TRACES_SAMPLER": name]
        environment["OTEL_TRACES_SAMPLER_ARG"] = argument
        let (applied, warnings) = Self.section.applyingEnvironment(environment)
        #expect(try #require(applied).sampler == expected)
        #expect(warnings.isEmpty == (argument != "2"), "an argument outside 0...1 is reported: \(warnings)")
    }

    @Test func theSpanCountersExistAtZeroWhenTracingIsOn() throws {
        let metrics = TestMetrics()
        WarrenMetrics.precreate(try ConfigFixture.parse(Self.broker + "[tracing]\nendpoint = \"http://c:4318\"\n"), factory: metrics)
        #expect(try metrics.expectCounter(WarrenMetrics.traceSpansDropped, []).totalValue == 0)
        #expect(try metrics.expectCounter(WarrenMetrics.traceSpansExported, []).totalValue == 0)
    }
}
