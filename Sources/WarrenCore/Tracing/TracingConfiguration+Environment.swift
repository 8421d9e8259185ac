import Foundation

/// The standard OpenTelemetry environment variables over `[tracing]` (docs/tracing.md,
/// "Environment variables"). As the OpenTelemetry specification asks, a value that cannot be
/// used is reported and ignored, never fatal: the section's value (or the default) stays.
extension TracingConfiguration {
    /// The configuration with the environment applied, and a warning for each value ignored;
    /// nil when the environment turns span export off (`OTEL_SDK_DISABLED=true`,
    /// `OTEL_TRACES_EXPORTER=none`). Warnings never quote a header: they may hold a token.
    public func applyingEnvironment(_ environment: [String: String]) -> (configuration: TracingConfiguration?, warnings: [String]) {
        var warnings: [String] = []
        func value(_ name: String) -> String? {
            guard let text = environment[name]?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return nil }
            return text
        }
        func ignored(_ name: String, _ text: String, _ expected: String) {
            warnings.append("\(name)=\"\(text)\" ignored: expected \(expected)")
        }
        if value("OTEL_SDK_DISABLED")?.lowercased() == "true" { return (nil, warnings) }
        if let exporter = value("OTEL_TRACES_EXPORTER")?.lowercased() {
            if exporter == "none" { return (nil, warnings) }
            if exporter != "otlp" { ignored("OTEL_TRACES_EXPORTER", exporter, "otlp or none") }
        }

        var result = self
        if let endpoint = value("OTEL_EXPORTER_OTLP_ENDPOINT") {
            if ConfigurationDecoding.isExportURL(endpoint) {
                result.endpoint = endpoint
            } else {
                ignored("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint, "an http:// or https:// URL")
            }
        }
        if let endpoint = value("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            if ConfigurationDecoding.isExportURL(endpoint) {
                result.tracesEndpoint = endpoint
            } else {
                ignored("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint, "an http:// or https:// URL")
            }
        }
        for name in ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] {
            guard let text = value(name) else { continue }
            if let choice = ExportProtocol(rawValue: text) {
                result.exportProtocol = choice
            } else {
                ignored(name, text, "http/protobuf or http/json (gRPC is not offered)")
            }
        }
        if let text = value("OTEL_EXPORTER_OTLP_TRACES_HEADERS") ?? value("OTEL_EXPORTER_OTLP_HEADERS") {
            if let headers = Self.keyValueList(text) {
                result.headers = headers
            } else {
                warnings.append("OTEL_EXPORTER_OTLP_HEADERS ignored: expected key=value pairs separated by commas")
            }
        }
        for name in ["OTEL_BSP_EXPORT_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"] {
            guard let text = value(name) else { continue }
            if let milliseconds = Int(text), milliseconds > 0 {
                result.exportTimeout = .milliseconds(milliseconds)
            } else {
                ignored(name, text, "a number of milliseconds above 0")
            }
        }
        for name in ["OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"] {
            guard let text = value(name), text.lowercased() != "none" else { continue }
            ignored(name, text, "none (warren sends export requests uncompressed)")
        }
        if let name = value("OTEL_SERVICE_NAME") { result.serviceName = name }
        if let text = value("OTEL_RESOURCE_ATTRIBUTES") {
            if let attributes = Self.keyValueList(text) {
                result.resource.merge(attributes) { _, new in new }
                if value("OTEL_SERVICE_NAME") == nil, let name = attributes["service.name"], !name.isEmpty { result.serviceName = name }
                result.resource["service.name"] = nil
            } else {
                ignored("OTEL_RESOURCE_ATTRIBUTES", text, "key=value pairs separated by commas")
            }
        }
        if let name = value("OTEL_TRACES_SAMPLER") {
            let argument = value("OTEL_TRACES_SAMPLER_ARG")
            if let sampler = Self.sampler(name.lowercased(), argument: argument, warnings: &warnings) {
                result.samplerOverride = sampler
            } else {
                ignored(
                    "OTEL_TRACES_SAMPLER", name,
                    "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio")
            }
        }
        if let text = value("OTEL_BSP_SCHEDULE_DELAY") {
            if let milliseconds = Int(text), milliseconds > 0 {
                result.scheduleDelay = .milliseconds(milliseconds)
            } else {
                ignored("OTEL_BSP_SCHEDULE_DELAY", text, "a number of milliseconds above 0")
            }
        }
        for (name, keyPath) in [("OTEL_BSP_MAX_QUEUE_SIZE", \SpanQueue.Limits.capacity), ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", \.batchSize)] {
            guard let text = value(name) else { continue }
            if let count = Int(text), (1...1_000_000).contains(count) {
                result.queueLimits[keyPath: keyPath] = count
            } else {
                ignored(name, text, "a number of spans from 1 to 1000000")
            }
        }
        if result.queueLimits.batchSize > result.queueLimits.capacity {
            warnings.append("OTEL_BSP_MAX_EXPORT_BATCH_SIZE above OTEL_BSP_MAX_QUEUE_SIZE: batches of \(result.queueLimits.capacity) spans")
            result.queueLimits.batchSize = result.queueLimits.capacity
        }
        return (result, warnings)
    }

    /// `OTEL_TRACES_SAMPLER` and its argument; nil for an unknown sampler. A ratio that is not
    /// a number from 0 to 1 is reported and 1.0 used, as the specification says.
    static func sampler(_ name: String, argument: String?, warnings: inout [String]) -> TraceSampler? {
        func ratio() -> Double {
            guard let argument else { return 1 }
            if let ratio = Double(argument), (0...1).contains(ratio) { return ratio }
            warnings.append("OTEL_TRACES_SAMPLER_ARG=\"\(argument)\" ignored: expected a number from 0 to 1; 1.0 is used")
            return 1
        }
        switch name {
        case "always_on": return TraceSampler(root: .always, followsParent: false)
        case "always_off": return TraceSampler(root: .never, followsParent: false)
        case "traceidratio":
            var sampler = TraceSampler.parentBased(ratio: ratio())
            sampler.followsParent = false
            return sampler
        case "parentbased_always_on": return TraceSampler(root: .always, followsParent: true)
        case "parentbased_always_off": return TraceSampler(root: .never, followsParent: true)
        case "parentbased_traceidratio": return .parentBased(ratio: ratio())
        default: return nil
        }
    }

    /// `key=value,key2=value2` (W3C Baggage's list form, as `OTEL_EXPORTER_OTLP_HEADERS` and
    /// `OTEL_RESOURCE_ATTRIBUTES` use it), with percent-encoded values decoded; nil when a
    /// member has no `=` or an empty key.
    static func keyValueList(_ text: String) -> [String: String]? {
        var result: [String: String] = [:]
        for member in text.split(separator: ",") {
            guard let equals = member.firstIndex(of: "=") else { return nil }
            let key = member[..<equals].trimmingCharacters(in: .whitespaces)
            let raw = member[member.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            guard !key.isEmpty else { return nil }
            result[key] = raw.removingPercentEncoding ?? raw
        }
        return result
    }
}
