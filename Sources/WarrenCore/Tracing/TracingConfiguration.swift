/// `[tracing]`: span export over OTLP/HTTP (docs/tracing.md, "Exporting spans"). Without it (or
/// without `endpoint`) warren exports nothing and only propagates the trace context.
///
/// The standard OpenTelemetry environment variables override these values when warren starts
/// (`applyingEnvironment`, in TracingConfiguration+Environment.swift).
public struct TracingConfiguration: Sendable, Equatable {
    /// The OTLP/HTTP wire encodings warren speaks (gRPC is not offered).
    public enum ExportProtocol: String, Sendable, CaseIterable {
        case httpProtobuf = "http/protobuf"
        case httpJSON = "http/json"

        var contentType: String {
            switch self {
            case .httpProtobuf: "application/x-protobuf"
            case .httpJSON: "application/json"
            }
        }
    }

    /// The collector's base URL (`http://` or `https://`); spans are POSTed to
    /// `<endpoint>/v1/traces`.
    public var endpoint: String
    public var exportProtocol = ExportProtocol.httpProtobuf
    /// The share of the traces warren starts that are sampled (exported). A delivery whose
    /// producer sent a `traceparent` follows the producer's sampled flag instead.
    public var sampleRatio = 1.0
    /// The resource's `service.name`.
    public var serviceName = "warren"
    /// More resource attributes (`deployment.environment`, ...).
    public var resource: [String: String] = [:]

    // Only from the environment (OpenTelemetry's variables): what the file does not offer.

    /// The full URL spans are POSTed to, when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` names one
    /// (used as is); nil: `<endpoint>/v1/traces`.
    public var tracesEndpoint: String?
    /// Headers sent with every export request (`OTEL_EXPORTER_OTLP_HEADERS`): often a token,
    /// so never logged.
    public var headers: [String: String] = [:]
    /// How long one export request may take (`OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s by default).
    public var exportTimeout: Duration = .seconds(10)
    /// The sampler, when `OTEL_TRACES_SAMPLER` names one; nil: parent-based with `sampleRatio`.
    public var samplerOverride: TraceSampler?
    /// How often a partial batch is sent (`OTEL_BSP_SCHEDULE_DELAY`, 5 s).
    public var scheduleDelay: Duration = .seconds(5)
    public var queueLimits = SpanQueue.Limits()

    public init(endpoint: String) {
        self.endpoint = endpoint
    }

    /// Where the spans go: `<endpoint>/v1/traces`, or the traces endpoint the environment set.
    public var tracesURL: String {
        if let tracesEndpoint { return tracesEndpoint }
        return endpoint.hasSuffix("/") ? endpoint + "v1/traces" : endpoint + "/v1/traces"
    }

    /// Which traces get spans.
    public var sampler: TraceSampler {
        samplerOverride ?? .parentBased(ratio: sampleRatio)
    }
}
