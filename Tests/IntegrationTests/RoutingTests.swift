import AMQP
import Foundation
import Logging
import Synchronization
import Testing
import WarrenCore

/// A handler that records its calls; it fails the first attempt when told to, and replies with
/// `reply` when given one.
struct RecordingHandler: MessageHandler {
    let recorder: Recorder
    var failFirstAttempt = false
    var reply: [UInt8]?

    func handle(_ input: HandlerInput) async -> HandlerOutcome {
        recorder.started(input)
        defer { recorder.finished() }
        if failFirstAttempt, input.attempt == 1 {
            return .failure(HandlerFailure("exit code 1", exitCode: 1))
        }
        return .success(HandlerOutput(reply: reply))
    }
}

/// An engine built from a TOML string, with recording handlers behind the named entries.
struct RoutingEngine {
    let configuration: Configuration
    let recorders: [String: Recorder]
    let stop: Latch
    let run: Task<Engine.Outcome, Never>

    static func start(_ source: String, handlers: [String: RecordingHandler]) async throws -> RoutingEngine {
        try await start(source, overrides: handlers, recorders: handlers.mapValues(\.recorder))
    }

    /// Any handlers behind the named entries; `recorders` are what `calls` reads.
    static func start(_ source: String, overrides: [String: any MessageHandler], recorders: [String: Recorder]) async throws -> RoutingEngine {
        let configuration = try ConfigurationLoader.parse(source: source, file: "routing-test.toml")
        var logger = Logger(label: "warren.routing-tests")
        logger.logLevel = .error
        let engine = Engine(configuration: configuration, logger: logger) { entry in overrides[entry.name] }
        let stop = Latch()
        let ready = Latch()
        let run = Task { await engine.run(stop: stop, ready: ready) }
        guard await EngineHarness.becomesReady(ready) else {
            stop.set()
            _ = await run.value
            throw TestTimeout(what: "waiting for the engine to become ready")
        }
        return RoutingEngine(configuration: configuration, recorders: recorders, stop: stop, run: run)
    }

    init(configuration: Configuration, recorders: [String: Recorder], stop: Latch, run: Task<Engine.Outcome, Never>) {
        self.configuration = configuration
        self.recorders = recorders
        self.stop = stop
        self.run = run
    }

    /// Stops gracefully (in-flight messages finish and are settled) and deletes what it declared.
    func stopAndCleanUp() async -> Engine.Outcome {
        stop.set()
        let outcome = await run.value
        for name in TopologyPlan(configuration).queues.map(\.declaration.name) { try? await TestBroker.deleteQueue(name) }
        for exchange in configuration.exchanges { try? await TestBroker.deleteExchange(exchange.name) }
        return outcome
    }

    func calls(_ handler: String) -> [String] {
        recorders[handler]?.snapshot.calls.map(\.messageID) ?? []
    }
}

@Suite("Routing, fan-out, dedup and replies against RabbitMQ", .requiresBroker, .timeLimit(.minutes(2)))
struct RoutingTests {
    static let broker = """
        [broker]
        urls = ["\(TestBroker.url)"]
        connection_name = "warren-routing-tests"
        """

    @Test func messagesAreRoutedByTypeHeaderAndRoutingKeyAndUnroutedOnesParked() async throws {
        let queue = TestBroker.uniqueName("routes")
        let exchange = "\(queue).x"
        let handlers = ["byType", "byHeader", "byKey"].reduce(into: [String: RecordingHandler]()) { $0[$1] = RecordingHandler(recorder: Recorder()) }
        let engine = try await RoutingEngine.start("""
            \(Self.broker)
            [[exchanges]]
            name = "\(exchange)"
            type = "topic"
            durable = false
            auto_delete = false
            [[queues]]
            name = "\(queue)"
            durable = false
            bindings = [{ exchange = "\(exchange)", routing_key = "#" }]
            routes = [
              { match = { type = "OrderCreated" }, handlers = ["byType"] },
              { match = { headers = { "x-kind" = "refund" } }, handlers = ["byHeader"] },
              { match = { routing_key = "order.*.eu" }, handlers = ["byKey"] },
            ]
            unrouted = "dead_letter"
            [handlers.byType]
            kind = "noop"
            [handlers.byHeader]
            kind = "noop"
            [handlers.byKey]
            kind = "noop"
            """, handlers: handlers)
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        // m1 matches the type route and the routing-key route: the first one wins.
        let sends: [(String, String, BasicProperties)] = [
            ("m1", "order.created.eu", BasicProperties(messageID: "m1", type: "OrderCreated")),
            ("m2", "refund.issued", BasicProperties(headers: ["x-kind": .string("refund")], messageID: "m2")),
            ("m3", "order.paid.eu", BasicProperties(messageID: "m3", type: "OrderPaid")),
            ("m4", "order.paid.us", BasicProperties(messageID: "m4", type: "OrderPaid")),
        ]
        for (_, key, properties) in sends {
            #expect(try await publisher.publish(exchange: exchange, routingKey: key, body: Array("x".utf8), properties: properties) == .confirmed)
        }
        let parkedConsumer = try await connection.consume(ConsumeOptions(queue: "\(queue).dead", prefetch: 10))
        let parked = try await collect(1, from: parkedConsumer, within: .seconds(20)) { parkedConsumer.ack($0) }
        for (name, recorder) in engine.recorders {
            #expect(await recorder.wait(for: .seconds(20)) { $0.finished >= 1 }, "\(name) never ran")
        }
        try await parkedConsumer.close()
        #expect(await engine.stopAndCleanUp() == .stopped)
        await connection.close()

        #expect(engine.calls("byType") == ["m1"])
        #expect(engine.calls("byHeader") == ["m2"])
        #expect(engine.calls("byKey") == ["m3"])
        #expect(parked.map(\.properties.messageID) == ["m4"])
        #expect(parked.first?.properties.headers?["x-warren-reason"]?.stringValue == "unrouted")
    }

    enum Dedup: String, CaseIterable, CustomStringConvertible {
        case off, memory, sqlite
        var description: String { rawValue }
    }

    /// A fan-out message is acked only when every handler succeeded; with dedup on, the
    /// retry runs only the handler that failed, with dedup off all of them run again.
    @Test(arguments: Dedup.allCases)
    func aFanOutRetryRerunsOnlyTheFailedHandlerWhenDedupIsOn(dedup: Dedup) async throws {
        let queue = TestBroker.uniqueName("fanout")
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("warren-fanout-\(UUID().uuidString).sqlite").path
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let handlers: [String: RecordingHandler] = [
            "a": RecordingHandler(recorder: Recorder()),
            "b": RecordingHandler(recorder: Recorder(), failFirstAttempt: true),
            "c": RecordingHandler(recorder: Recorder()),
        ]
        let engine = try await RoutingEngine.start("""
            \(Self.broker)
            [dedup]
            store = "\(dedup == .sqlite ? "sqlite" : "memory")"
            path = "\(path)"
            ttl = "1h"
            [[queues]]
            name = "\(queue)"
            durable = false
            dedup = \(dedup != .off)
            routes = [{ match = {}, handlers = ["a", "b", "c"] }]
            [queues.retry]
            max_attempts = 3
            delay = "100ms"
            [handlers.a]
            kind = "noop"
            [handlers.b]
            kind = "noop"
            [handlers.c]
            kind = "noop"
            """, handlers: handlers)
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        #expect(try await publisher.publish(routingKey: queue, body: Array("x".utf8), properties: BasicProperties(messageID: "order-1")) == .confirmed)
        let b = try #require(engine.recorders["b"])
        #expect(await b.wait(for: .seconds(20)) { $0.finished == 2 }, "the failed handler was not retried")
        // The retry is the message's second delivery; with dedup off, a and c run in it too.
        if dedup == .off {
            for name in ["a", "c"] {
                #expect(await engine.recorders[name]?.wait(for: .seconds(20)) { $0.finished == 2 } == true)
            }
        }
        engine.stop.set()
        let stopped = await engine.run.value
        // Nothing was parked: the retry succeeded (read before the queues are deleted).
        let parked = try await connection.declareQueue(QueueDeclaration(name: "\(queue).dead", passive: true)).messageCount
        _ = await engine.stopAndCleanUp()
        await connection.close()

        #expect(stopped == .stopped)
        #expect(engine.calls("b") == ["order-1", "order-1"])
        let expectedRuns = dedup == .off ? 2 : 1
        #expect(engine.calls("a").count == expectedRuns)
        #expect(engine.calls("c").count == expectedRuns)
        #expect(b.snapshot.calls.map(\.attempt) == [1, 2])
        #expect(parked == 0, "nothing parked")
    }

    /// Under ack_first the input is acked before the handler runs; its reply must still go out.
    @Test(arguments: [AckPolicy.nackOnError, .ackFirst])
    func aRequestWithReplyToGetsExactlyOneReplyCarryingItsCorrelationID(policy: AckPolicy) async throws {
        let queue = TestBroker.uniqueName("rpc")
        let handlers = ["answer": RecordingHandler(recorder: Recorder(), reply: Array("{\"ok\":true}".utf8))]
        let engine = try await RoutingEngine.start("""
            \(Self.broker)
            [[queues]]
            name = "\(queue)"
            durable = false
            handler = "answer"
            ack_policy = "\(policy.rawValue)"
            [handlers.answer]
            kind = "noop"
            """, handlers: handlers)
        let connection = try await TestBroker.connect()
        try await TestBroker.withQueue("rpc-replies", on: connection) { replies in
            let publisher = try await connection.openPublisher()
            let request = BasicProperties(correlationID: "corr-42", replyTo: AMQPString(replies), messageID: "req-1")
            #expect(try await publisher.publish(routingKey: queue, body: Array("q".utf8), properties: request) == .confirmed)
            let consumer = try await connection.consume(ConsumeOptions(queue: replies, prefetch: 10))
            let received = try await collect(1, from: consumer, within: .seconds(20)) { consumer.ack($0) }
            try await consumer.close()
            // A graceful stop settles everything in flight: any second reply would be in the
            // queue by then.
            #expect(await engine.stopAndCleanUp() == .stopped)
            let left = try await connection.declareQueue(QueueDeclaration(name: replies, passive: true)).messageCount
            #expect(received.map(\.properties.correlationID) == ["corr-42"])
            #expect(received.first?.body == Array("{\"ok\":true}".utf8))
            #expect(left == 0)
        }
        await connection.close()
    }
}
