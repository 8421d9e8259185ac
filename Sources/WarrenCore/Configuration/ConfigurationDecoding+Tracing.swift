import Foundation

/// `[tracing]`: span export over OTLP/HTTP; off unless `endpoint` is set.
extension ConfigurationDecoding {
    func decodeTracing(_ table: TableReader) -> TracingConfiguration? {
        defer { table.finish() }
        let endpoint = table.string("endpoint")
        let exportProtocol = table.enumeration("protocol", TracingConfiguration.ExportProtocol.self)
        let ratio = table.double("sample_ratio", "a number from 0 to 1 such as 0.1", valid: { (0...1).contains($0) })
        let serviceName = table.string("service_name")
        let resource = table.stringTable("resource")
        if let serviceName, serviceName.isEmpty {
            d.report(table.at("service_name"), "expected a service name, got \"\"")
        }
        guard let endpoint, !endpoint.isEmpty else { return nil }
        guard Self.isExportURL(endpoint) else {
            d.report(table.at("endpoint"), "expected an http:// or https:// URL with a host such as \"http://127.0.0.1:4318\", got \"\(endpoint)\"")
            return nil
        }
        var tracing = TracingConfiguration(endpoint: endpoint)
        if let exportProtocol { tracing.exportProtocol = exportProtocol }
        if let ratio { tracing.sampleRatio = ratio }
        if let serviceName, !serviceName.isEmpty { tracing.serviceName = serviceName }
        if let resource { tracing.resource = resource }
        return tracing
    }

    /// An absolute `http`/`https` URL with a host, no query and no fragment (the path `/v1/traces`
    /// is appended to it).
    static func isExportURL(_ text: String) -> Bool {
        guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = url.host, !host.isEmpty, url.query == nil, url.fragment == nil
        else { return false }
        return true
    }
}
