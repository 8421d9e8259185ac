import AMQP
import Foundation
import Logging
import TestSupport
import Testing
import WarrenCore

/// The `plugin` handler end to end: the example plugins behind a real engine or the real
/// `warren` binary, against RabbitMQ.
@Suite("Plugin handler against RabbitMQ", .requiresBroker, .timeLimit(.minutes(2)))
struct PluginHandlerIntegrationTests {
    static func config(queue: String, library: String, pluginConfig: String = #"{ prefix = "p:" }"#) -> String {
        """
        [broker]
        urls = ["\(TestBroker.url)"]
        connection_name = "warren-plugin-tests"
        [[queues]]
        name = "\(queue)"
        durable = false
        concurrency = 2
        handler = "demo"
        [handlers.demo]
        kind = "plugin"
        library = "\(library)"
        config = \(pluginConfig)
        """
    }

    @Test(arguments: ExamplePlugins.Language.allCases)
    func bothExamplePluginsAckRepliesAndParkRejectsEndToEnd(_ language: ExamplePlugins.Language) async throws {
        let queue = TestBroker.uniqueName("plugin-\(language)")
        let replies = "\(queue).replies"
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: replies, durable: false))
        let publisher = try await connection.openPublisher()
        let sent = Latch()
        let declared = try await BuiltinHandlerTests.withEngine(Self.config(queue: queue, library: try ExamplePlugins.library(language))) {
            if !sent.isSet {
                sent.set()
                for (id, body) in [("c1", "hello"), ("c2", "world")] {
                    _ = try await publisher.publish(
                        routingKey: queue, body: Array(body.utf8), properties: BasicProperties(correlationID: AMQPString(id), replyTo: AMQPString(replies), messageID: AMQPString(id)))
                }
                _ = try await publisher.publish(
                    routingKey: queue, body: Array("bad".utf8), properties: BasicProperties(headers: ["x-demo-verdict": "reject"], messageID: "r1"))
            }
            let replied = try await connection.declareQueue(QueueDeclaration(name: replies, passive: true)).messageCount
            let parked = try await connection.declareQueue(QueueDeclaration(name: "\(queue).dead", passive: true)).messageCount
            return replied == 2 && parked == 1
        }
        // The engine has stopped gracefully: whatever it had not acked would be back in the queue.
        #expect(try await connection.declareQueue(QueueDeclaration(name: queue, passive: true)).messageCount == 0, "every input was acked")
        #expect(try await connection.declareQueue(QueueDeclaration(name: replies, passive: true)).messageCount == 2, "exactly one reply each")

        let replyConsumer = try await connection.consume(ConsumeOptions(queue: replies, prefetch: 10))
        let answers = try await collect(2, from: replyConsumer) { replyConsumer.ack($0) }
        let bodies = Dictionary(uniqueKeysWithValues: answers.map { ($0.properties.correlationID ?? "", String(decoding: $0.body, as: UTF8.self)) })
        #expect(bodies == ["c1": "p:HELLO", "c2": "p:WORLD"])
        try await replyConsumer.close()

        let deadConsumer = try await connection.consume(ConsumeOptions(queue: "\(queue).dead", prefetch: 10))
        let parked = try #require(try await collect(1, from: deadConsumer) { deadConsumer.ack($0) }.first)
        #expect(parked.properties.messageID == "r1")
        #expect(parked.properties.headers?["x-warren-reason"] == .string("rejected"))
        #expect(parked.properties.headers?["x-warren-handler"] == .string("demo"))
        #expect(parked.properties.headers?["x-warren-error"]?.stringValue?.contains("rejected by the") == true)
        try await deadConsumer.close()

        try await connection.deleteQueue(replies)
        await BuiltinHandlerTests.delete(declared)
        await connection.close()
    }

    @Test func anEngineWhosePluginFailsToInitialiseStopsBeforeConsuming() async throws {
        let queue = TestBroker.uniqueName("plugin-init")
        let library = try ExamplePlugins.library(.c)
        let configuration = try ConfigurationLoader.parse(
            source: Self.config(queue: queue, library: library, pluginConfig: "{ fail_init = true }"), file: "plugin-test.toml")
        var logger = Logger(label: "warren.plugin-tests")
        logger.logLevel = .critical
        let outcome = await Engine(configuration: configuration, logger: logger).run(stop: Latch())
        #expect(outcome == .handlersRejected("handlers.demo: the plugin \(library) failed to initialise: init returned 2"))
        let connection = try await TestBroker.connect()
        let error = await #expect(throws: AMQPError.self) {
            try await connection.declareQueue(QueueDeclaration(name: queue, passive: true))
        }
        #expect(error?.replyCode == 404, "nothing was declared")
        await connection.close()
    }

    @Test func warrenRunExits78WhenAPluginFailsToInitialise() async throws {
        let library = try ExamplePlugins.library(.swift)
        let queue = TestBroker.uniqueName("plugin-run-init")
        let config = try WarrenProcess.ConfigFile(Self.config(queue: queue, library: library, pluginConfig: "{ fail_init = true }"))
        defer { config.remove() }
        let result = try await WarrenProcess.run(["run", "--config", config.path])
        #expect(result.status == 78, "stderr: \(result.stderr)")
        #expect(result.stderr.contains("handlers.demo: the plugin \(library) failed to initialise: init returned 2"), "stderr: \(result.stderr)")
    }

    @Test(arguments: ExamplePlugins.Language.allCases)
    func warrenRunServesAnExamplePluginAndStopsCleanly(_ language: ExamplePlugins.Language) async throws {
        // The real binary checks the library at start-up and then loads it again for the handler;
        // for a Swift plugin this must not unload it in between.
        let queue = TestBroker.uniqueName("plugin-run-\(language)")
        let replies = "\(queue).replies"
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: replies, durable: false))
        let config = try WarrenProcess.ConfigFile(Self.config(queue: queue, library: try ExamplePlugins.library(language)))
        defer { config.remove() }
        let warren = try RunningWarren(config: config.path)
        #expect(await warren.waitForLog("consumer up"), "log: \(warren.output)")
        let publisher = try await connection.openPublisher()
        _ = try await publisher.publish(routingKey: queue, body: Array("ping".utf8), properties: BasicProperties(correlationID: "x", replyTo: AMQPString(replies)))
        let consumer = try await connection.consume(ConsumeOptions(queue: replies, prefetch: 1))
        let reply = try #require(try await collect(1, from: consumer, within: .seconds(20)) { consumer.ack($0) }.first)
        #expect(String(decoding: reply.body, as: UTF8.self) == "p:PING")
        #expect(reply.properties.correlationID == "x")
        try await consumer.close()
        warren.signal()
        #expect(await warren.waitForExit(timeout: .seconds(30)) == 0, "log: \(warren.output)")
        #expect(warren.output.contains("plugin loaded"))
        try await connection.deleteQueue(replies)
        await CommandLineTests.deleteWarrenQueues(queue)
        await connection.close()
    }

    @Test func warrenCheckAcceptsBothExamplePlugins() async throws {
        for language in ExamplePlugins.Language.allCases {
            let config = try WarrenProcess.ConfigFile(Self.config(queue: "plugin-check", library: try ExamplePlugins.library(language)))
            defer { config.remove() }
            let result = try await WarrenProcess.run(["check", "--config", config.path])
            #expect(result.status == 0, "\(language): \(result.stderr)")
        }
    }

    @Test func warrenCheckExits78ForALibraryWithoutTheEntryPoint() async throws {
        // A real shared library that is not a Warren plugin, as an operator might mistype it.
        let system = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6", "/lib64/libm.so.6"]
        var library = system.first(where: FileManager.default.fileExists(atPath:)) ?? ""
        if library.isEmpty { library = try await ExamplePlugins.compile("int f(void) { return 1; }") }
        let config = try WarrenProcess.ConfigFile(Self.config(queue: "plugin-check", library: library))
        defer { config.remove() }
        let result = try await WarrenProcess.run(["check", "--config", config.path])
        #expect(result.status == 78)
        #expect(result.stderr.contains("handlers.demo.library: \(library) does not export warren_plugin_v1; is it a Warren plugin?"), "stderr: \(result.stderr)")
        #expect(result.stderr.contains("1 problem; nothing was started"))
    }

    @Test func warrenCheckExits78ForAPluginOfAnotherABIVersion() async throws {
        let library = try await ExamplePlugins.compile(ExamplePlugins.minimalSource(abi: "4u"))
        let config = try WarrenProcess.ConfigFile(Self.config(queue: "plugin-check", library: library))
        defer { config.remove() }
        let result = try await WarrenProcess.run(["check", "--config", config.path])
        #expect(result.status == 78)
        #expect(
            result.stderr.contains("handlers.demo.library: \(library) was built for plugin ABI version 4, but this warren speaks versions 1 to 3"),
            "stderr: \(result.stderr)")
    }
}
