import AMQP
import Foundation
import Testing

/// The TLS listener that `scripts/setup-tls` gives the local broker, and the throwaway PKI it
/// generated: `WARREN_TEST_TLS_DIR` (default /var/lib/warren-test-tls) holds ca.pem, server.pem
/// (DNS:localhost), client.pem/client.key, wrong-ca.pem and
/// wrong-client.pem/.key (signed by the wrong CA); `WARREN_TEST_AMQPS_URL` (default
/// amqps://guest:guest@localhost:5671/) is where the listener answers.
enum TestTLS {
    static let directory = ProcessInfo.processInfo.environment["WARREN_TEST_TLS_DIR"] ?? "/var/lib/warren-test-tls"
    static let url = ProcessInfo.processInfo.environment["WARREN_TEST_AMQPS_URL"] ?? "amqps://guest:guest@localhost:5671/"

    static var caFile: String { directory + "/ca.pem" }
    static var wrongCAFile: String { directory + "/wrong-ca.pem" }
    static var clientCert: String { directory + "/client.pem" }
    static var clientKey: String { directory + "/client.key" }
    static var wrongClientCert: String { directory + "/wrong-client.pem" }
    static var wrongClientKey: String { directory + "/wrong-client.key" }

    static let endpoint: AMQPEndpoint = {
        do {
            return try AMQPEndpoint(url: url)
        } catch {
            fatalError("WARREN_TEST_AMQPS_URL is not a valid AMQP URL: \(error)")
        }
    }()

    /// Under CI a missing listener must fail the TLS tests; elsewhere they skip.
    static let shouldRun: Bool = {
        if TestBroker.isCI { return true }
        guard let fd = tcpConnect(endpoint.host, endpoint.port) else { return false }
        close(fd)
        return true
    }()

    /// Verification on, the test CA, the client certificate: what the broker accepts.
    static var goodSettings: TLSConfiguration {
        TLSConfiguration(caFile: caFile, certFile: clientCert, keyFile: clientKey)
    }

    static func configuration(_ tls: TLSConfiguration, endpoint: AMQPEndpoint = endpoint) -> ConnectionConfiguration {
        var configuration = TestBroker.configuration(endpoint: endpoint)
        configuration.tls = tls
        configuration.connectTimeout = .seconds(5)
        return configuration
    }

    /// The endpoint with another host (same port, credentials, vhost).
    static func endpoint(host: String, password: String? = nil) -> AMQPEndpoint {
        var copy = endpoint
        copy.host = host
        if let password { copy.password = password }
        return copy
    }

    /// The error a connection attempt fails with, or nil if it succeeds (the connection is closed).
    static func connectionError(_ configuration: ConnectionConfiguration) async -> AMQPError? {
        do {
            let connection = try await AMQPConnection.connect(configuration, logger: TestBroker.logger)
            await connection.close()
            return nil
        } catch {
            return error
        }
    }

    /// A `[broker]` + `[broker.tls]` TOML section for the TLS listener.
    static func brokerTOML(caFile: String = caFile, certFile: String? = clientCert, keyFile: String? = clientKey) -> String {
        var lines = [
            "[broker]", "urls = [\"\(url)\"]", "connection_name = \"warren-tls-tests\"", "", "[broker.tls]",
            "ca_file = \"\(caFile)\"",
        ]
        if let certFile { lines.append("cert_file = \"\(certFile)\"") }
        if let keyFile { lines.append("key_file = \"\(keyFile)\"") }
        return lines.joined(separator: "\n") + "\n"
    }
}

extension Trait where Self == ConditionTrait {
    /// Runs when the TLS listener answers, and always under CI (where its absence fails).
    static var requiresTLSListener: Self {
        .enabled(if: TestTLS.shouldRun, "no TLS listener at \(TestTLS.endpoint) (run scripts/setup-tls)")
    }
}
