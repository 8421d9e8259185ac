import AMQP
import Foundation
import Testing
@testable import WarrenCore

@Suite("warren check / publish / run against RabbitMQ", .requiresBroker, .timeLimit(.minutes(3)))
struct CommandLineTests {
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Queues a configuration makes warren declare: the queue, its retry ladder and parking queue.
    static func deleteWarrenQueues(
        _ queue: String, ladder: [String] = RetryPolicy().delaySeries.map { $0.configText }
    ) async {
        for name in [queue, "\(queue).dead"] + ladder.map({ "\(queue).retry.\($0)" }) {
            try? await TestBroker.deleteQueue(name)
        }
    }

    @Test func checkConnectPassesOnTheExampleConfig() async throws {
        let example = Self.repositoryRoot.appendingPathComponent("config/warren.example.toml").path
        let result = try await WarrenProcess.run(["check", "--config", example, "--connect"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout.contains("OK"))
    }

    @Test func checkWithoutConnectPassesOnTheReferenceConfig() async throws {
        let reference = Self.repositoryRoot.appendingPathComponent("config/warren.reference.toml").path
        let result = try await WarrenProcess.run(["check", "--config", reference])
        #expect(result.status == 0, "stderr: \(result.stderr)")
    }

    @Test func checkConnectNamesTheQueueTypeThatDiffersFromAnExistingQueue() async throws {
        let queue = TestBroker.uniqueName("quorum-vs-classic")
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: queue, durable: true, arguments: ["x-queue-type": "quorum"]))
        await connection.close()
        let config = try WarrenProcess.ConfigFile(WarrenProcess.config(queue: queue, queueExtra: "type = \"classic\""))
        defer { config.remove() }
        let result = try await WarrenProcess.run(["check", "--config", config.path, "--connect"])
        await Self.deleteWarrenQueues(queue)
        #expect(result.status == 78)
        #expect(result.stderr.contains("queues[0]: queue \"\(queue)\" already exists with x-queue-type = quorum, but the configuration asks for classic"), "stderr: \(result.stderr)")
        #expect(result.stderr.contains("change queues[0].type to match"))
        #expect(result.stderr.contains("rabbitmqctl delete_queue \(queue)"))
    }

    @Test func checkConnectNamesDurableWhenItDiffersFromAnExistingQueue() async throws {
        let queue = TestBroker.uniqueName("transient")
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: queue, durable: false, arguments: ["x-queue-type": "classic"]))
        await connection.close()
        let config = try WarrenProcess.ConfigFile(WarrenProcess.config(queue: queue))
        defer { config.remove() }
        let result = try await WarrenProcess.run(["check", "--config", config.path, "--connect"])
        await Self.deleteWarrenQueues(queue)
        #expect(result.status == 78)
        #expect(result.stderr.contains("queue \"\(queue)\" already exists with durable = false, but the configuration asks for true"), "stderr: \(result.stderr)")
        #expect(result.stderr.contains("change queues[0].durable to match"))
    }

    @Test func checkConnectRequiresADeclareFalseQueueToExistAndCreatesNothing() async throws {
        let queue = TestBroker.uniqueName("must-exist")
        let config = try WarrenProcess.ConfigFile(WarrenProcess.config(queue: queue, queueExtra: "declare = false"))
        defer { config.remove() }
        let result = try await WarrenProcess.run(["check", "--config", config.path, "--connect"])
        #expect(result.status == 78)
        #expect(result.stderr.contains("queue \"\(queue)\" does not exist, and declare = false"), "stderr: \(result.stderr)")
        let connection = try await TestBroker.connect()
        let error = await #expect(throws: AMQPError.self) {
            try await connection.declareQueue(QueueDeclaration(name: "\(queue).dead", passive: true))
        }
        #expect(error?.replyCode == 404, "check --connect must not create the parking queue")
        await connection.close()
    }

    @Test func checkConnectExits69WhenTheBrokerCannotBeReached() async throws {
        let config = try WarrenProcess.ConfigFile("""
            [broker]
            urls = ["amqp://guest:guest@127.0.0.1:1/"]
            connect_timeout = "1s"
            """)
        defer { config.remove() }
        let result = try await WarrenProcess.run(["check", "--config", config.path, "--connect"])
        #expect(result.status == 69)
        #expect(result.stderr.contains("cannot connect to the broker"))
    }

    @Test func publishCount1000ReportsAllConfirmed() async throws {
        let queue = TestBroker.uniqueName("cli-publish")
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: queue, durable: false))
        let config = try WarrenProcess.ConfigFile(WarrenProcess.config(queue: queue))
        defer { config.remove() }
        let result = try await WarrenProcess.run([
            "publish", "--config", config.path, "--routing-key", queue, "--body", "hello", "--count", "1000",
            "--header", "k=v", "--property", "type=Greeting", "--persistent",
        ])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "confirmed=1000 returned=0 nacked=0 timed_out=0")
        let state = try await connection.declareQueue(QueueDeclaration(name: queue, passive: true))
        #expect(state.messageCount == 1000)
        let consumer = try await connection.consume(ConsumeOptions(queue: queue, prefetch: 1))
        let delivery = try #require(try await collect(1, from: consumer).first)
        #expect(delivery.body == Array("hello".utf8))
        #expect(delivery.properties.type == "Greeting")
        #expect(delivery.properties.deliveryMode == 2)
        #expect(delivery.properties.headers?["k"] == .string("v"))
        try await consumer.close()
        try await connection.deleteQueue(queue)
        await connection.close()
    }

    @Test func publishLinesSendsOneMessagePerLine() async throws {
        let queue = TestBroker.uniqueName("cli-lines")
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: queue, durable: false))
        let config = try WarrenProcess.ConfigFile(WarrenProcess.config(queue: queue))
        defer { config.remove() }
        let result = try await WarrenProcess.run(["publish", "--config", config.path, "--routing-key", queue, "--lines"], stdin: "one\ntwo\nthree\n")
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout.contains("confirmed=3 "))
        let consumer = try await connection.consume(ConsumeOptions(queue: queue, prefetch: 10))
        let bodies = try await collect(3, from: consumer).map { String(decoding: $0.body, as: UTF8.self) }
        #expect(bodies == ["one", "two", "three"])
        try await consumer.close()
        try await connection.deleteQueue(queue)
        await connection.close()
    }

    @Test func publishToAnUnboundRoutingKeyReportsReturnedAndExitsNonZero() async throws {
        let config = try WarrenProcess.ConfigFile(WarrenProcess.config(queue: TestBroker.uniqueName("unused")))
        defer { config.remove() }
        let result = try await WarrenProcess.run([
            "publish", "--config", config.path, "--routing-key", TestBroker.uniqueName("nobody-bound"), "--body", "x", "--count", "5",
        ])
        #expect(result.status == 1)
        #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "confirmed=0 returned=5 nacked=0 timed_out=0")
    }

    @Test func runDeclaresTheTopologyAndStopsCleanlyOnSIGTERM() async throws {
        let queue = TestBroker.uniqueName("cli-run")
        let config = try WarrenProcess.ConfigFile(WarrenProcess.config(queue: queue))
        defer { config.remove() }
        let warren = try RunningWarren(config: config.path)
        #expect(await warren.waitForLog("event=ready"), "log: \(warren.output)")
        let connection = try await TestBroker.connect()
        for name in [queue, "\(queue).dead", "\(queue).retry.1s", "\(queue).retry.8s"] {
            _ = try await connection.declareQueue(QueueDeclaration(name: name, passive: true))
        }
        await connection.close()
        warren.signal(SIGTERM)
        #expect(await warren.waitForExit(timeout: .seconds(30)) == 0)
        await Self.deleteWarrenQueues(queue)
    }

    @Test func runExits78BeforeConnectingWhenTheConfigIsInvalid() async throws {
        let config = try WarrenProcess.ConfigFile(WarrenProcess.config(queue: "q", queueExtra: "prefetch = \"ten\""))
        defer { config.remove() }
        let result = try await WarrenProcess.run(["run", "--config", config.path])
        #expect(result.status == 78)
        #expect(result.stderr.contains("queues[0].prefetch: expected a positive integer up to 65535, got \"ten\""))
    }
}
