import AsyncHTTPClient
import Foundation
import Glibc
import NIOCore
import TestSupport

/// Reading warren's HTTP endpoints the way Prometheus and a load balancer do: plain GETs, and
/// the exposition parsed by a real Prometheus text-format parser (`prometheus_client` from
/// Debian's python3-prometheus-client, which scripts/setup installs), not by the code under test.
enum MetricsScrape {
    struct Sample: Decodable, Sendable {
        var name: String
        var labels: [String: String]
        var value: Double
        /// The family's type as the parser understood it (counter, gauge, histogram).
        var type: String
    }

    /// Debian's interpreter, whose dist-packages hold the parser (a pyenv `python3` on PATH would not).
    static let python = "/usr/bin/python3"

    static func parserAvailable() async -> Bool {
        (try? await runToCompletion(python, ["-c", "import prometheus_client.parser"]))?.status == 0
    }

    static func get(_ url: String) async throws -> (status: Int, body: String) {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(5))
        let body = try await response.body.collect(upTo: 4 << 20)
        return (Int(response.status.code), String(buffer: body))
    }

    /// Every sample of a Prometheus text exposition; throws if the parser rejects the text.
    static func parse(_ exposition: String) async throws -> [Sample] {
        let script = """
            import json, sys
            from prometheus_client.parser import text_string_to_metric_families
            out = []
            for family in text_string_to_metric_families(sys.stdin.read()):
                for s in family.samples:
                    out.append({"name": s.name, "labels": s.labels, "value": s.value, "type": family.type})
            print(json.dumps(out))
            """
        let parsed = try await runToCompletion(python, ["-c", script], stdin: Data(exposition.utf8))
        guard parsed.status == 0 else {
            throw TestTimeout(what: "parsing /metrics (the parser said: \(parsed.stderrText))")
        }
        return try JSONDecoder().decode([Sample].self, from: parsed.stdout)
    }

    /// A TCP port that was free a moment ago on 127.0.0.1.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        return try bindEphemeral(fd)
    }

    /// Binds `fd` to an ephemeral port on 127.0.0.1 and returns the port.
    static func bindEphemeral(_ fd: Int32) throws -> Int {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard fd >= 0, bound else { throw TestTimeout(what: "binding a free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

extension [MetricsScrape.Sample] {
    /// The value of the sample named `name` whose labels include `labels`; nil when absent.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        first { sample in sample.name == name && labels.allSatisfy { key, value in sample.labels[key] == value } }?.value
    }
}
