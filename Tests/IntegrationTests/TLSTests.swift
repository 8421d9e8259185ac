import AMQP
import Foundation
import Testing
import WarrenCore

/// amqps:// against the broker's real TLS listener (scripts/setup-tls: verify_peer,
/// fail_if_no_peer_cert, a server certificate for DNS:localhost only).
@Suite("TLS against RabbitMQ's TLS listener", .requiresBroker, .requiresTLSListener, .serialized, .timeLimit(.minutes(2)))
struct TLSTests {
    @Test func aVerifiedConnectionWithAClientCertificatePublishesWithConfirmAndConsumes() async throws {
        let connection = try await AMQPConnection.connect(TestTLS.configuration(TestTLS.goodSettings), logger: TestBroker.logger)
        try await TestBroker.withQueue("tls-roundtrip", on: connection) { queue in
            let publisher = try await connection.openPublisher()
            let outcome = try await publisher.publish(routingKey: queue, body: Array("over tls".utf8))
            #expect(outcome == .confirmed)
            let consumer = try await connection.consume(ConsumeOptions(queue: queue, prefetch: 1))
            let deliveries = try await collect(1, from: consumer, within: .seconds(10))
            #expect(deliveries.map(\.body) == [Array("over tls".utf8)])
            if let delivery = deliveries.first { connection.ack(delivery) }
        }
        await connection.close()
    }

    @Test func aBrokerCertificateFromAnotherCAIsRefusedNamingTheCAFile() async throws {
        let endpoint = TestTLS.endpoint(host: TestTLS.endpoint.host, password: "tls-secret-pw")
        var settings = TestTLS.goodSettings
        settings.caFile = TestTLS.wrongCAFile
        let error = try #require(await TestTLS.connectionError(TestTLS.configuration(settings, endpoint: endpoint)))
        #expect(error.code == .tls)
        #expect(error.description.contains("TLS: the broker's certificate is not signed by a CA in \(TestTLS.wrongCAFile)"),
                "\(error)")
        #expect(!error.description.contains("tls-secret-pw"))
    }

    @Test func anIPAddressHostIsAHostnameMismatchWhenHostnamesAreVerified() async throws {
        let error = try #require(
            await TestTLS.connectionError(TestTLS.configuration(TestTLS.goodSettings, endpoint: TestTLS.endpoint(host: "127.0.0.1"))))
        #expect(error.code == .tls)
        #expect(error.description.contains("TLS: certificate hostname mismatch for 127.0.0.1"), "\(error)")
        #expect(error.description.contains("verify_hostname = false"))
    }

    @Test func verifyHostnameFalseAcceptsTheCertificateForAnotherName() async throws {
        var settings = TestTLS.goodSettings
        settings.verifyHostname = false
        let error = await TestTLS.connectionError(TestTLS.configuration(settings, endpoint: TestTLS.endpoint(host: "127.0.0.1")))
        #expect(error == nil, "\(String(describing: error))")
    }

    @Test func withoutAClientCertificateTheBrokerRefusalSaysToSetCertAndKey() async throws {
        let endpoint = TestTLS.endpoint(host: TestTLS.endpoint.host)
        let error = try #require(
            await TestTLS.connectionError(TestTLS.configuration(TLSConfiguration(caFile: TestTLS.caFile), endpoint: endpoint)))
        #expect(error.code == .tls)
        // From the broker's TLS alert ("requires a client certificate") or, when the alert is not
        // in OpenSSL's queue yet, from the closed session ("probably requires a client certificate").
        #expect(error.description.hasPrefix("TLS: "), "\(error)")
        #expect(error.description.contains("requires a client certificate (set cert_file and key_file)"), "\(error)")
        #expect(!error.description.contains(":\(TestTLS.endpoint.password)@"))
    }

    @Test func aClientCertificateFromAnUntrustedCAIsRefusedNamingTheCertificate() async throws {
        let settings = TLSConfiguration(caFile: TestTLS.caFile, certFile: TestTLS.wrongClientCert, keyFile: TestTLS.wrongClientKey)
        let error = try #require(await TestTLS.connectionError(TestTLS.configuration(settings)))
        #expect(error.code == .tls)
        // Named from the broker's TLS alert, or (when the alert is not in OpenSSL's queue yet) from
        // the closed session: either way the certificate and the likely cause are named.
        #expect(error.description.contains("client certificate \(TestTLS.wrongClientCert)"), "\(error)")
        #expect(error.description.contains("signed by a CA the broker trusts"), "\(error)")
    }

    @Test func anEngineConsumesOverTLSFromAnAmqpsConfiguration() async throws {
        let queue = TestBroker.uniqueName("tls-engine")
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("warren-tls-\(UUID().uuidString).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let connection = try await AMQPConnection.connect(TestTLS.configuration(TestTLS.goodSettings), logger: TestBroker.logger)
        let publisher = try await connection.openPublisher()
        let source = TestTLS.brokerTOML() + """
            [[queues]]
            name = "\(queue)"
            durable = false
            concurrency = 1
            handler = "archive"
            [handlers.archive]
            kind = "file"
            path = "\(path)"
            """
        let sent = Latch()
        let declared = try await BuiltinHandlerTests.withEngine(source) {
            if !sent.isSet {
                sent.set()
                let outcome = try await publisher.publish(routingKey: queue, body: Array("engine over tls".utf8))
                #expect(outcome == .confirmed)
            }
            return (try? String(contentsOfFile: path, encoding: .utf8))?.contains("engine over tls") == true
        }
        await connection.close()
        await BuiltinHandlerTests.delete(declared)
    }

    @Test func checkConnectSucceedsOnAnAmqpsConfiguration() async throws {
        let queue = TestBroker.uniqueName("tls-check")
        let config = try WarrenProcess.ConfigFile(TestTLS.brokerTOML() + """
            [[queues]]
            name = "\(queue)"
            handler = "sink"
            [handlers.sink]
            kind = "noop"
            """)
        defer { config.remove() }
        let result = try await WarrenProcess.run(["check", "--config", config.path, "--connect"], timeout: .seconds(30))
        await CommandLineTests.deleteWarrenQueues(queue)
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout.contains("the broker at amqps://"), "stdout: \(result.stdout)")
    }

    @Test func checkConnectReportsTheTLSProblemWithoutThePassword() async throws {
        let config = try WarrenProcess.ConfigFile(TestTLS.brokerTOML(caFile: TestTLS.wrongCAFile) + """
            [[queues]]
            name = "\(TestBroker.uniqueName("tls-check-wrong-ca"))"
            handler = "sink"
            [handlers.sink]
            kind = "noop"
            """)
        defer { config.remove() }
        let result = try await WarrenProcess.run(["check", "--config", config.path, "--connect"], timeout: .seconds(30))
        #expect(result.status != 0)
        #expect(result.stderr.contains("TLS: the broker's certificate is not signed by a CA in \(TestTLS.wrongCAFile)"),
                "stderr: \(result.stderr)")
        #expect(!result.stderr.contains(":\(TestTLS.endpoint.password)@"))
    }

    @Test func checkReportsAMissingTLSFileByItsKey() async throws {
        let missing = "/nonexistent/warren-tls-test/client.pem"
        let config = try WarrenProcess.ConfigFile(TestTLS.brokerTOML(certFile: missing) + """
            [[queues]]
            name = "\(TestBroker.uniqueName("tls-check-missing"))"
            handler = "sink"
            [handlers.sink]
            kind = "noop"
            """)
        defer { config.remove() }
        let result = try await WarrenProcess.run(["check", "--config", config.path], timeout: .seconds(30))
        #expect(result.status == 78)
        #expect(result.stderr.contains("broker.tls.cert_file"), "stderr: \(result.stderr)")
        #expect(result.stderr.contains("\(missing) does not exist or cannot be read"))
    }
}
