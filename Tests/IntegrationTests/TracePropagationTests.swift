import AMQP
import Foundation
import TestSupport
import Testing

@testable import WarrenCore

/// W3C trace context end to end (docs/tracing.md): a message published with a `traceparent`
/// reaches every handler kind as a child context of the same trace, what the handler produces
/// carries the run's context, and the retry ladder's attempts and the parked copy stay in one
/// trace; a message without one gets a fresh trace that its retries keep.
@Suite("Trace context propagation against RabbitMQ", .requiresBroker, .timeLimit(.minutes(3)))
final class TracePropagationTests: Sendable {
    /// The producer's context every test here publishes with (the W3C specification's example).
    static let traceHex = "4bf92f3577b34da6a3ce929d0e0e4736"
    static let spanHex = "00f067aa0ba902b7"
    static let traceparent = "00-\(traceHex)-\(spanHex)-01"
    static let tracestate = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"

    let scratch: ScratchDirectory
    let queue: String

    init() throws {
        scratch = try ScratchDirectory("trace-it")
        queue = TestBroker.uniqueName("trace")
    }

    // MARK: each handler kind

    @Test func anExecHandlerGetsAChildOfTheMessagesTraceAndItsReplyCarriesIt() async throws {
        let program = try script(#"cat >/dev/null; printf '%s\n%s' "$TRACEPARENT" "${TRACESTATE-unset}""#)
        let seen = try await replyFromHandler("""
            [handlers.h]
            kind = "exec"
            command = ["\(program)"]
            """)
        expectChildOfTheSentTrace(seen)
    }

    @Test func aPipeWorkerGetsTheContextInItsRequestJSON() async throws {
        let worker = try file("worker.py", #"""
            import json, sys
            stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
            while True:
                line = stdin.readline()
                if not line:
                    break
                request = json.loads(line)
                stdin.read(request["body_length"])
                seen = "%s\n%s" % (request.get("traceparent", "absent"), request.get("tracestate", "unset"))
                stdout.write(json.dumps({"id": request["id"], "verdict": "ack", "reply": seen}).encode() + b"\n")
                stdout.flush()
            """#)
        let seen = try await replyFromHandler("""
            [handlers.h]
            kind = "pipe"
            command = ["/usr/bin/env", "python3", "\(worker)"]
            """)
        expectChildOfTheSentTrace(seen)
    }

    @Test func aPluginSeesTheContextInTheMessageView() async throws {
        let library = try await ExamplePlugins.compile("""
            #include <string.h>
            #include "warren_plugin.h"
            static __thread char text[1024];
            static int init(const char *c, void **s) { (void)c; *s = 0; return 0; }
            static void handle(void *s, const warren_message *m, warren_result *r) {
                (void)s;
                size_t n = 0;
                memcpy(text, m->traceparent.data, m->traceparent.len);
                n += m->traceparent.len;
                text[n++] = '\\n';
                if (m->tracestate.len == 0) { memcpy(text + n, "unset", 5); n += 5; }
                else { memcpy(text + n, m->tracestate.data, m->tracestate.len); n += m->tracestate.len; }
                r->reply.data = (const uint8_t *)text;
                r->reply.len = n;
            }
            static void destroy(void *s) { (void)s; }
            static const warren_plugin_v1_t table = { WARREN_PLUGIN_ABI_VERSION, init, handle, destroy };
            const warren_plugin_v1_t *warren_plugin_v1(void) { return &table; }
            """)
        let seen = try await replyFromHandler("""
            [handlers.h]
            kind = "plugin"
            library = "\(library)"
            """)
        expectChildOfTheSentTrace(seen)
    }

    @Test func anHTTPHandlerSendsTheContextAsRequestHeaders() async throws {
        let server = try await TestHTTPServer.start()
        let connection = try await TestBroker.connect()
        let declared = try await HTTPHandlerTests.run(
            HTTPHandlerTests.config(queue: queue, url: "\(server.url)/hook"),
            publishing: [HTTPHandlerTests.message(queue, "x", Self.traced())], on: connection
        ) { try await HTTPHandlerTests.holds(server.requests.count >= 1, andEmpty: self.queue, on: connection) }
        let request = try #require(server.requests.first)
        expectChildOfTheSentTrace(Seen(traceparent: request.header("traceparent") ?? "absent", tracestate: request.header("tracestate") ?? "unset"))
        await BuiltinHandlerTests.delete(declared)
        await server.stop()
        await connection.close()
    }

    // MARK: retries and dead-lettering

    @Test func everyAttemptOfARetriedMessageAndItsParkedCopyAreOneTrace() async throws {
        let attempts = try await attemptsUntilParked(Self.traced())
        #expect(attempts.runs.count == 3, "\(attempts.runs)")
        #expect(attempts.runs.allSatisfy { $0.traceID == Self.traceHex }, "\(attempts.runs)")
        #expect(Set(attempts.runs.map(\.spanID)).count == 3, "each run a span of its own")
        #expect(!attempts.runs.contains { $0.spanID == Self.spanHex })
        #expect(attempts.parked?.traceID == Self.traceHex)
        #expect(attempts.parkedTracestate == Self.tracestate)
    }

    @Test func aMessageWithoutTraceparentGetsAFreshTraceThatItsRetriesKeep() async throws {
        let attempts = try await attemptsUntilParked(BasicProperties(messageID: "fresh"))
        #expect(attempts.runs.count == 3, "\(attempts.runs)")
        let first = try #require(attempts.runs.first)
        #expect(first.traceID != Self.traceHex)
        #expect(attempts.runs.allSatisfy { $0.traceID == first.traceID }, "\(attempts.runs)")
        #expect(Set(attempts.runs.map(\.spanID)).count == 3)
        #expect(attempts.parked?.traceID == first.traceID)
        #expect(attempts.parkedTracestate == nil)
    }

    // MARK: helpers

    struct Seen: CustomStringConvertible {
        var traceparent: String
        var tracestate: String
        var description: String { "traceparent \(traceparent), tracestate \(tracestate)" }
    }

    /// The ids of a `traceparent` that parses as valid.
    struct Parsed: Hashable, CustomStringConvertible {
        var traceID: String
        var spanID: String
        var flags: String
        var description: String { "\(traceID)/\(spanID)" }

        init?(_ value: String) {
            guard let parent = TraceHeaderValue.parseTraceparent(.string(value)) else { return nil }
            let trace = MessageTrace(traceID: parent.traceID, spanID: parent.spanID, flags: parent.flags)
            (traceID, spanID, flags) = (trace.traceIDText, trace.spanIDText, String(value.suffix(2)))
        }
    }

    static func traced(_ properties: BasicProperties = BasicProperties()) -> BasicProperties {
        var properties = properties
        properties.headers = ["traceparent": .string(traceparent), "tracestate": .string(tracestate)]
        return properties
    }

    func expectChildOfTheSentTrace(_ seen: Seen, sourceLocation: SourceLocation = #_sourceLocation) {
        let parsed = Parsed(seen.traceparent)
        #expect(parsed != nil, "a valid traceparent: \(seen)", sourceLocation: sourceLocation)
        #expect(parsed?.traceID == Self.traceHex, "the same trace: \(seen)", sourceLocation: sourceLocation)
        #expect(parsed?.spanID != Self.spanHex, "a span of its own: \(seen)", sourceLocation: sourceLocation)
        #expect(parsed?.flags == "01", "sampled, as the parent: \(seen)", sourceLocation: sourceLocation)
        #expect(seen.tracestate == Self.tracestate, sourceLocation: sourceLocation)
    }

    /// Runs handler `h` (its TOML table given) on a message with the known context and a
    /// `reply_to`; returns what the handler saw (its reply body: traceparent, newline,
    /// tracestate), after checking that the reply carries the run's context.
    func replyFromHandler(_ handler: String) async throws -> Seen {
        let replies = "\(queue).replies"
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: replies, durable: false))
        let publisher = try await connection.openPublisher()
        let sent = Latch()
        let source = """
            [broker]
            urls = ["\(TestBroker.url)"]
            \(handler)
            [[queues]]
            name = "\(queue)"
            durable = false
            handler = "h"
            """
        let declared = try await BuiltinHandlerTests.withEngine(source) {
            if !sent.isSet {
                sent.set()
                let properties = Self.traced(BasicProperties(correlationID: "c-1", replyTo: AMQPString(replies), messageID: "m-1"))
                #expect(try await publisher.publish(routingKey: self.queue, body: Array("hello".utf8), properties: properties) == .confirmed)
            }
            return try await connection.declareQueue(QueueDeclaration(name: replies, passive: true)).messageCount >= 1
        }
        let consumer = try await connection.consume(ConsumeOptions(queue: replies, prefetch: 1))
        let reply = try #require(try await collect(1, from: consumer).first)
        consumer.ack(reply)
        try await consumer.close()
        try await connection.deleteQueue(replies)
        await BuiltinHandlerTests.delete(declared)
        await connection.close()
        let lines = String(decoding: reply.body, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let seen = Seen(traceparent: lines.first ?? "", tracestate: lines.count > 1 ? lines[1] : "")
        #expect(reply.properties.headers?["traceparent"] == .string(seen.traceparent), "the reply continues the run's span")
        #expect(reply.properties.headers?["tracestate"] == .string(Self.tracestate))
        return seen
    }

    struct Attempts {
        var runs: [Parsed]
        var parked: Parsed?
        var parkedTracestate: String?
    }

    /// An exec handler that records `$TRACEPARENT` and fails, on a queue whose retry ladder
    /// gives it three attempts 100 ms apart; returns each run's context and the parked copy's.
    func attemptsUntilParked(_ properties: BasicProperties) async throws -> Attempts {
        let log = "\(scratch.path)/runs"
        let program = try script("""
            cat >/dev/null
            echo "$TRACEPARENT" >> '\(log)'
            exit 3
            """)
        let source = """
            [broker]
            urls = ["\(TestBroker.url)"]
            [handlers.h]
            kind = "exec"
            command = ["\(program)"]
            [[queues]]
            name = "\(queue)"
            durable = false
            handler = "h"
            [queues.retry]
            max_attempts = 3
            delay = "100ms"
            """
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        let sent = Latch()
        let dead = "\(queue).dead"
        let declared = try await BuiltinHandlerTests.withEngine(source) {
            if !sent.isSet {
                sent.set()
                #expect(try await publisher.publish(routingKey: self.queue, body: Array("work".utf8), properties: properties) == .confirmed)
            }
            return try await connection.declareQueue(QueueDeclaration(name: dead, passive: true)).messageCount >= 1
        }
        let consumer = try await connection.consume(ConsumeOptions(queue: dead, prefetch: 1))
        let parked = try #require(try await collect(1, from: consumer).first)
        consumer.ack(parked)
        try await consumer.close()
        await BuiltinHandlerTests.delete(declared)
        await connection.close()
        let runs = (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n").map(String.init) ?? []
        let parsedRuns = runs.compactMap(Parsed.init)
        #expect(parsedRuns.count == runs.count, "every run got a valid traceparent: \(runs)")
        return Attempts(
            runs: parsedRuns, parked: parked.properties.headers?["traceparent"]?.stringValue.flatMap(Parsed.init),
            parkedTracestate: parked.properties.headers?["tracestate"]?.stringValue)
    }

    private func file(_ name: String, _ contents: String) throws -> String { try scratch.file(name, contents) }

    private func script(_ body: String) throws -> String { try scratch.script(body) }
}
