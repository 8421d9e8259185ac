import AMQP
import Foundation
import Glibc
import Logging
import TestSupport
import Testing

@testable import WarrenCore

/// Span export end to end (docs/tracing.md, "Exporting spans"): an in-process engine (or the
/// warren binary) with `[tracing]` pointing at a local OTLP/HTTP receiver (`TestHTTPServer`,
/// protocol "http/json" so the body is readable without protobuf). The spans are read after the
/// exporter shut down, which exports everything still queued: no waiting on the receiver.
@Suite("Span export over OTLP/HTTP against RabbitMQ", .requiresBroker, .timeLimit(.minutes(3)))
final class TraceExportTests: Sendable {
    static let traceHex = TracePropagationTests.traceHex
    static let spanHex = TracePropagationTests.spanHex
    static let traceparent = TracePropagationTests.traceparent

    let scratch: ScratchDirectory
    let queue: String

    init() throws {
        scratch = try ScratchDirectory("trace-export-it")
        queue = TestBroker.uniqueName("otel")
    }

    @Test func theDeliverySpanIsAChildOfTheProducersAndTheRunSpanIsWhatTheHandlerSaw() async throws {
        let receiver = try await Self.receiver()
        let seen = "\(scratch.path)/seen"
        let program = try scratch.script("cat >/dev/null; echo \"$TRACEPARENT\" >> '\(seen)'")
        var properties = BasicProperties(messageID: "m-1")
        properties.headers = ["traceparent": .string(Self.traceparent)]
        try await runEngine(handler: program, endpoint: receiver.url, messages: [properties]) { Self.lines(seen).count >= 1 }
        await receiver.stop()

        let spans = Self.spans(receiver)
        let delivery = try #require(spans.first { $0.name == "\(queue) process" }, "spans: \(spans)")
        #expect(delivery.traceID == Self.traceHex)
        #expect(delivery.parentSpanID == Self.spanHex, "a child of the producer's span")
        #expect(delivery.kind == 5, "SPAN_KIND_CONSUMER")
        #expect(delivery.attributes["messaging.system"] == "rabbitmq")
        #expect(delivery.attributes["messaging.destination.name"] == queue)
        #expect(delivery.attributes["messaging.message.id"] == "m-1")
        #expect(delivery.attributes["warren.ack_decision"] == "acked")
        #expect(delivery.attributes["warren.outcome"] == "success")

        let run = try #require(spans.first { $0.name == "h run" }, "spans: \(spans)")
        #expect(run.traceID == Self.traceHex)
        #expect(run.parentSpanID == delivery.spanID, "a child of the delivery's span")
        let handlerSaw = try #require(Self.lines(seen).first)
        #expect(handlerSaw == "00-\(Self.traceHex)-\(run.spanID)-01", "TRACEPARENT is the run span's context")
        #expect(run.attributes["warren.handler.result"] == "success")
        #expect(receiver.requests.allSatisfy { $0.uri == "/v1/traces" && $0.method == "POST" })
    }

    @Test func theAttemptsOfARetriedMessageShareOneTraceAndTheirCopiesArePublishSpans() async throws {
        let receiver = try await Self.receiver()
        let runs = "\(scratch.path)/runs"
        let program = try scratch.script("cat >/dev/null; echo \"$TRACEPARENT\" >> '\(runs)'; exit 3")
        try await runEngine(
            handler: program, endpoint: receiver.url, messages: [BasicProperties(messageID: "r-1")],
            queueSettings: "[queues.retry]\nmax_attempts = 3\ndelay = \"100ms\""
        ) { try await Self.messageCount("\(self.queue).dead") >= 1 }
        await receiver.stop()

        let spans = Self.spans(receiver)
        let deliveries = spans.filter { $0.name == "\(queue) process" }
        #expect(deliveries.count == 3, "spans: \(spans)")
        let trace = try #require(deliveries.first?.traceID)
        #expect(deliveries.allSatisfy { $0.traceID == trace })
        #expect(Set(deliveries.map(\.spanID)).count == 3)
        #expect(deliveries.map { $0.attributes["warren.ack_decision"] ?? "" }.sorted() == ["dead_lettered", "retried", "retried"])
        let runSpans = spans.filter { $0.name == "h run" }
        #expect(runSpans.count == 3 && runSpans.allSatisfy { $0.traceID == trace && $0.attributes["warren.handler.result"] == "failure" })
        // What the handler saw is what was exported, attempt after attempt.
        #expect(Set(Self.lines(runs)) == Set(runSpans.map { "00-\(trace)-\($0.spanID)-01" }))
        let publishes = spans.filter { $0.kind == 4 }  // SPAN_KIND_PRODUCER
        #expect(publishes.count == 3, "two retry copies and the parked copy: \(publishes)")
        #expect(publishes.allSatisfy { $0.traceID == trace && $0.attributes["warren.publish.result"] == "confirmed" })
        #expect(publishes.allSatisfy { p in deliveries.contains { $0.spanID == p.parentSpanID } })
    }

    @Test func withTheCollectorDownEveryMessageIsStillHandled() async throws {
        let closed = try await TestHTTPServer.start()
        let endpoint = closed.url
        await closed.stop()
        let seen = "\(scratch.path)/seen"
        let program = try scratch.script("cat >/dev/null; echo x >> '\(seen)'")
        let count = 30
        let messages = (0..<count).map { BasicProperties(messageID: AMQPString("d-\($0)")) }
        try await runEngine(handler: program, endpoint: endpoint, messages: messages) { Self.lines(seen).count >= count }
        #expect(Self.lines(seen).count == count, "each message handled once")
    }

    /// The binary reads the OpenTelemetry environment over `[tracing]`: the configured endpoint
    /// is a closed port, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT the receiver; OTEL_SERVICE_NAME
    /// replaces service_name; the OTEL_EXPORTER_OTLP_HEADERS token is sent and never logged.
    @Test func theOpenTelemetryEnvironmentOverridesTheTracingSection() async throws {
        let receiver = try await Self.receiver()
        let closed = try await TestHTTPServer.start()
        let closedURL = closed.url
        await closed.stop()
        let sink = "\(scratch.path)/handled.jsonl"
        let config = try scratch.file("warren.toml", """
            [broker]
            urls = ["\(TestBroker.url)"]
            [control]
            socket = ""
            [tracing]
            endpoint = "\(closedURL)"
            protocol = "http/protobuf"
            service_name = "from-config"
            [handlers.h]
            kind = "file"
            path = "\(sink)"
            [[queues]]
            name = "\(queue)"
            durable = false
            handler = "h"
            """)
        let token = "sekret-\(UUID().uuidString)"
        let warren = try RunningWarren(config: config, arguments: ["--log-level", "debug"], environment: [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "\(receiver.url)/v1/traces",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            "OTEL_SERVICE_NAME": "from-env",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=\(token)",
        ])
        defer { if warren.process.isRunning { warren.signal(SIGKILL) } }
        #expect(await warren.waitForLog("ready"), "log:\n\(warren.output)")
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        _ = try await publisher.publish(routingKey: queue, body: Array("hi".utf8))
        #expect(await Self.eventually { Self.lines(sink).count >= 1 }, "log:\n\(warren.output)")
        warren.signal(SIGTERM)
        #expect(await warren.waitForExit(timeout: .seconds(60)) == 0, "log:\n\(warren.output)")
        await connection.close()
        // The queue, its retry ladder and its dead-letter queue.
        for name in TopologyPlan(try ConfigurationLoader.load(path: config)).queues.map(\.declaration.name) {
            try? await TestBroker.deleteQueue(name)
        }
        await receiver.stop()

        let request = try #require(receiver.requests.first, "no export reached the receiver; log:\n\(warren.output)")
        #expect(request.header("content-type") == "application/json")
        #expect(request.header("x-api-key") == token)
        let exported = Self.parse(request.body)
        #expect(exported.serviceNames == ["from-env"])
        #expect(exported.spans.contains { $0.name == "\(queue) process" })
        #expect(!warren.output.contains(token), "the header's token reached the log")
    }

    // MARK: helpers

    /// Runs an engine with an exec handler `h` and `[tracing]` at `endpoint` (http/json), publishes
    /// `messages`, waits for `done`, then stops the engine and the exporter (which exports what
    /// is queued).
    func runEngine(
        handler program: String, endpoint: String, messages: [BasicProperties], queueSettings: String = "",
        until done: @escaping @Sendable () async throws -> Bool
    ) async throws {
        let source = """
            [broker]
            urls = ["\(TestBroker.url)"]
            [tracing]
            endpoint = "\(endpoint)"
            protocol = "http/json"
            [handlers.h]
            kind = "exec"
            command = ["\(program)"]
            [[queues]]
            name = "\(queue)"
            durable = false
            handler = "h"
            \(queueSettings)
            """
        let configuration = try ConfigurationLoader.parse(source: source, file: "trace-export-test.toml")
        var logger = Logger(label: "warren.trace-export-tests")
        logger.logLevel = .error
        let tracing = try #require(configuration.tracing)
        let export = SpanExport(tracing, logger: logger)
        let engineStopped = Latch()
        let exporting = Task { await export.run(until: engineStopped) }
        let engine = Engine(configuration: configuration, logger: logger, tracing: export.tracing)
        let stop = Latch()
        let ready = Latch()
        let run = Task { await engine.run(stop: stop, ready: ready) }
        await ready.wait()
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        for properties in messages {
            #expect(try await publisher.publish(routingKey: queue, body: Array("work".utf8), properties: properties) == .confirmed)
        }
        let satisfied = await Self.eventually { (try? await done()) == true }
        stop.set()
        #expect(await run.value == .stopped)
        engineStopped.set()
        await exporting.value
        for name in TopologyPlan(configuration).queues.map(\.declaration.name) { _ = try? await connection.deleteQueue(name) }
        await connection.close()
        #expect(satisfied, "the condition was not reached within 30 s")
    }

    /// An OTLP/HTTP receiver: takes every POST and answers an empty JSON export response.
    static func receiver() async throws -> TestHTTPServer {
        try await TestHTTPServer.start { _, _ in
            TestHTTPServer.Response(status: 200, headers: [("Content-Type", "application/json")], body: Array("{}".utf8))
        }
    }

    static func eventually(within timeout: Duration = .seconds(30), _ condition: @Sendable () async -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if await condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return await condition()
    }

    static func messageCount(_ name: String) async throws -> UInt32 {
        let connection = try await TestBroker.connect()
        let count = try await connection.declareQueue(QueueDeclaration(name: name, passive: true)).messageCount
        await connection.close()
        return count
    }

    static func lines(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    struct ExportedSpan: CustomStringConvertible {
        var name: String
        var traceID: String
        var spanID: String
        var parentSpanID: String
        var kind: Int
        var attributes: [String: String]
        var description: String { "\(name) \(traceID)/\(spanID)<-\(parentSpanID)" }
    }

    static func spans(_ receiver: TestHTTPServer) -> [ExportedSpan] {
        receiver.requests.flatMap { parse($0.body).spans }
    }

    /// An OTLP/JSON `ExportTraceServiceRequest`: its spans and the resources' `service.name`.
    static func parse(_ body: [UInt8]) -> (spans: [ExportedSpan], serviceNames: Set<String>) {
        guard let root = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else { return ([], []) }
        var spans: [ExportedSpan] = []
        var names: Set<String> = []
        for resourceSpans in root["resourceSpans"] as? [[String: Any]] ?? [] {
            let resource = attributes((resourceSpans["resource"] as? [String: Any])?["attributes"])
            if let name = resource["service.name"] { names.insert(name) }
            for scope in resourceSpans["scopeSpans"] as? [[String: Any]] ?? [] {
                for span in scope["spans"] as? [[String: Any]] ?? [] {
                    spans.append(ExportedSpan(
                        name: span["name"] as? String ?? "", traceID: id(span["traceId"]), spanID: id(span["spanId"]),
                        parentSpanID: id(span["parentSpanId"]), kind: (span["kind"] as? Int) ?? 0,
                        attributes: attributes(span["attributes"])))
                }
            }
        }
        return (spans, names)
    }

    /// OTLP/JSON writes ids in hex; protobuf's JSON mapping writes bytes in base64: either is read.
    static func id(_ value: Any?) -> String {
        guard let text = value as? String, !text.isEmpty else { return "" }
        if text.count == 32 || text.count == 16, text.allSatisfy(\.isHexDigit) { return text.lowercased() }
        guard let bytes = Data(base64Encoded: text) else { return text }
        return bytes.map { String(format: "%02x", $0) }.joined()
    }

    static func attributes(_ value: Any?) -> [String: String] {
        var result: [String: String] = [:]
        for entry in value as? [[String: Any]] ?? [] {
            guard let key = entry["key"] as? String, let value = entry["value"] as? [String: Any], let first = value.first else { continue }
            result[key] = "\(first.value)"
        }
        return result
    }
}
