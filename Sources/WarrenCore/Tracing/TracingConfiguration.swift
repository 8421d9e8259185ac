/// `[tracing]`: span export over OTLP/HTTP (docs/tracing.md, "Exporting spans"). Without it (or
/// without `endpoint`) warren exports nothing and only propagates the trace context.
///
/// The standard OpenTelemetry environment variables (`OTEL_EXPORTER_OTLP_*`, `OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`/`_ARG`) override these values when warren
/// starts: swift-otel applies them over what this builds.
public struct TracingConfiguration: Sendable, Equatable {
    /// The OTLP/HTTP wire encodings swift-otel speaks (gRPC is not compiled in).
    public enum ExportProtocol: String, Sendable, CaseIterable {
        case httpProtobuf = "http/protobuf"
        case httpJSON = "http/json"
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

    public init(endpoint: String) {
        self.endpoint = endpoint
    }

    /// Where the spans go: `<endpoint>/v1/traces`.
    public var tracesURL: String {
        endpoint.hasSuffix("/") ? endpoint + "v1/traces" : endpoint + "/v1/traces"
    }
}
