import AMQP
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

@testable import WarrenCore

/// The `plugin` handler calling into the example plugins (Examples/plugins/), no broker.
@Suite("Plugin handler", .timeLimit(.minutes(2)))
struct PluginHandlerTests {
    static var logger: Logger {
        var logger = Logger(label: "warren.plugin-tests")
        logger.logLevel = .critical
        return logger
    }

    static func handler(_ language: ExamplePlugins.Language, config: String = #"{"prefix":"p:"}"#, threads: Int = 2, logger: Logger = logger) throws -> PluginHandler {
        PluginHandler(try PluginInstance(
            name: "demo", library: try ExamplePlugins.library(language), configJSON: config, threads: threads, logger: logger))
    }

    /// A file for the C plugin's `summary_file`, which its `destroy` appends to.
    static func summaryFile() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("warren-plugin-summary-\(UUID().uuidString)").path
    }

    static func lines(_ path: String) -> [String]? {
        (try? String(contentsOfFile: path, encoding: .utf8))?.split(separator: "\n").map(String.init)
    }

    static func input(_ body: String = "hello", headers: FieldTable = [:], timeout: Duration = .seconds(10), properties: BasicProperties = BasicProperties()) -> HandlerInput {
        var properties = properties
        if !headers.isEmpty { properties.headers = headers }
        return HandlerInput(
            queue: "orders", exchange: "ex", routingKey: "order.created", redelivered: false, attempt: 1, properties: properties,
            body: Array(body.utf8), deliveryTag: 1, timeout: timeout)
    }

    static func reply(_ outcome: HandlerOutcome) -> String? {
        guard case .success(let output) = outcome, let reply = output.reply else { return nil }
        return String(decoding: reply, as: UTF8.self)
    }

    @Test(arguments: ExamplePlugins.Language.allCases)
    func anAckCarriesTheReplyThePluginDerivedFromTheBodyAndItsConfig(_ language: ExamplePlugins.Language) async throws {
        let handler = try Self.handler(language)
        #expect(Self.reply(await handler.handle(Self.input("hello"))) == "p:HELLO")
        #expect(Self.reply(await handler.handle(Self.input(""))) == "p:", "an empty body is a valid view")
        await handler.shutdown()
    }

    @Test(arguments: ExamplePlugins.Language.allCases)
    func theMessageViewCarriesRoutingDataPropertiesAndHeaders(_ language: ExamplePlugins.Language) async throws {
        let handler = try Self.handler(language)
        var input = Self.input("body text", properties: BasicProperties(
            contentType: "text/plain", headers: ["x-demo-reply": "view", "n": .int32(3)], correlationID: "c-1", replyTo: "answers",
            messageID: "m-1", timestamp: 1_763_700_000, type: "OrderCreated"))
        input.redelivered = true
        input.attempt = 3
        let lines = try #require(Self.reply(await handler.handle(input))).split(separator: "\n").map(String.init)
        #expect(lines == [
            "queue=orders", "exchange=ex", "routing_key=order.created", "redelivered=1", "attempt=3", "message_id=m-1",
            "correlation_id=c-1", "reply_to=answers", "content_type=text/plain", "type=OrderCreated", "timestamp=1763700000",
            #"headers={"n":3,"x-demo-reply":"view"}"#, "body=body text",
        ])
        let bare = try #require(Self.reply(await handler.handle(Self.input("", headers: ["x-demo-reply": "view"]))))
        #expect(bare.contains("\nmessage_id=\n"), "absent properties are empty")
        #expect(bare.contains("\ntimestamp=-1\n"), "an absent timestamp is -1")
        await handler.shutdown()
    }

    @Test(arguments: ExamplePlugins.Language.allCases)
    func headersDriveEveryVerdict(_ language: ExamplePlugins.Language) async throws {
        let handler = try Self.handler(language)
        func run(_ headers: FieldTable) async -> HandlerOutcome { await handler.handle(Self.input(headers: headers)) }
        guard case .verdict(.reject, let error?, _, _) = await run(["x-demo-verdict": "reject"]) else {
            Issue.record("reject")
            return
        }
        #expect(error.contains("rejected by the"))
        guard case .verdict(.requeue, nil, _, _) = await run(["x-demo-verdict": "requeue"]) else {
            Issue.record("requeue")
            return
        }
        guard case .verdict(.retry(let delay), _, _, _) = await run(["x-demo-verdict": "retry", "x-demo-delay-ms": .int32(1500)]) else {
            Issue.record("retry")
            return
        }
        #expect(delay == .milliseconds(1500))
        guard case .verdict(.retry(nil), _, _, _) = await run(["x-demo-verdict": "retry"]) else {
            Issue.record("retry without a delay uses the ladder")
            return
        }
        guard case .failure(let failure) = await run(["x-demo-verdict": "error"]) else {
            Issue.record("error")
            return
        }
        #expect(failure.error.contains("demo plugin failed"))
        #expect(!failure.isTimeout)
        guard case .failure(let bogus) = await run(["x-demo-verdict": "bogus"]) else {
            Issue.record("an unknown verdict")
            return
        }
        #expect(bogus.error.contains("verdict 42, which is not a warren_verdict"))
        await handler.shutdown()
    }

    /// ABI version 2 appended `stream_offset`: a stream delivery's offset, -1 for other queues.
    @Test func aPluginSeesTheStreamOffsetOfAStreamDeliveryAndMinusOneOtherwise() async throws {
        let library = try await ExamplePlugins.compile("""
            #include <stdio.h>
            #include "warren_plugin.h"
            static __thread char text[32];
            static int init(const char *c, void **s) { (void)c; *s = 0; return 0; }
            static void handle(void *s, const warren_message *m, warren_result *r) {
                (void)s;
                int n = snprintf(text, sizeof text, "%lld", (long long)m->stream_offset);
                r->reply.data = (const uint8_t *)text;
                r->reply.len = (size_t)n;
            }
            static void destroy(void *s) { (void)s; }
            static const warren_plugin_v1_t table = { 2u, init, handle, destroy };
            const warren_plugin_v1_t *warren_plugin_v1(void) { return &table; }
            """)
        let handler = PluginHandler(try PluginInstance(name: "offset", library: library, configJSON: "{}", threads: 1, logger: Self.logger))
        var input = Self.input()
        input.streamOffset = 1_234_567_890_123
        #expect(Self.reply(await handler.handle(input)) == "1234567890123")
        #expect(Self.reply(await handler.handle(Self.input())) == "-1")
        await handler.shutdown()
    }

    /// ABI version 3 appended `traceparent` and `tracestate`: the run's context.
    @Test func aPluginSeesTheRunsTraceContext() async throws {
        let library = try await ExamplePlugins.compile("""
            #include <stdio.h>
            #include "warren_plugin.h"
            static __thread char text[700];
            static int init(const char *c, void **s) { (void)c; *s = 0; return 0; }
            static void handle(void *s, const warren_message *m, warren_result *r) {
                (void)s;
                int n = snprintf(text, sizeof text, "%.*s|%.*s", (int)m->traceparent.len, (const char *)m->traceparent.data,
                                 (int)m->tracestate.len, m->tracestate.data ? (const char *)m->tracestate.data : "");
                r->reply.data = (const uint8_t *)text;
                r->reply.len = (size_t)n;
            }
            static void destroy(void *s) { (void)s; }
            static const warren_plugin_v1_t table = { 3u, init, handle, destroy };
            const warren_plugin_v1_t *warren_plugin_v1(void) { return &table; }
            """)
        let handler = PluginHandler(try PluginInstance(name: "trace", library: library, configJSON: "{}", threads: 1, logger: Self.logger))
        let delivery = MessageTrace.of(headers: [
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "congo=t61rcWkgMzE",
        ])
        var input = Self.input()
        input.trace = delivery.child()
        #expect(Self.reply(await handler.handle(input)) == "\(input.trace.traceparent)|congo=t61rcWkgMzE")
        input.trace = MessageTrace.started()
        #expect(Self.reply(await handler.handle(input)) == "\(input.trace.traceparent)|")
        await handler.shutdown()
    }

    /// A library built against an older header reads only the fields its version had: it loads
    /// and handles messages as before.
    @Test(arguments: ["1u", "2u"])
    func aPluginOfAnOlderABIVersionStillHandlesMessages(_ abi: String) async throws {
        let library = try await ExamplePlugins.compile("""
            #include "warren_plugin.h"
            static int init(const char *c, void **s) { (void)c; *s = 0; return 0; }
            static void handle(void *s, const warren_message *m, warren_result *r) {
                (void)s;
                r->reply.data = m->body.data ? m->body.data : (const uint8_t *)"";
                r->reply.len = m->body.len;
            }
            static void destroy(void *s) { (void)s; }
            static const warren_plugin_v1_t table = { \(abi), init, handle, destroy };
            const warren_plugin_v1_t *warren_plugin_v1(void) { return &table; }
            """)
        let handler = PluginHandler(try PluginInstance(name: "old", library: library, configJSON: "{}", threads: 1, logger: Self.logger))
        var input = Self.input()
        input.body = Array("echo".utf8)
        #expect(Self.reply(await handler.handle(input)) == "echo")
        await handler.shutdown()
    }

    @Test func aPluginThatSetsNothingAcksWithoutAReply() async throws {
        // Like a plugin built before `reply` was appended to warren_result: Warren zero-fills it.
        let library = try await ExamplePlugins.compile("""
            #include "warren_plugin.h"
            static int init(const char *c, void **s) { (void)c; *s = 0; return 0; }
            static void handle(void *s, const warren_message *m, warren_result *r) { (void)s; (void)m; (void)r; }
            static void destroy(void *s) { (void)s; }
            static const warren_plugin_v1_t table = { WARREN_PLUGIN_ABI_VERSION, init, handle, destroy };
            const warren_plugin_v1_t *warren_plugin_v1(void) { return &table; }
            """)
        let handler = PluginHandler(try PluginInstance(name: "bare", library: library, configJSON: "{}", threads: 1, logger: Self.logger))
        guard case .success(let output) = await handler.handle(Self.input()) else {
            Issue.record("expected success")
            return
        }
        #expect(output.reply == nil)
        #expect(output.publishes.isEmpty)
        await handler.shutdown()
    }

    @Test(arguments: ExamplePlugins.Language.allCases)
    func callsRunOnThePluginsOwnThreadsNeverOnTheCooperativePool(_ language: ExamplePlugins.Language) async throws {
        // More calls at once than the cooperative pool has threads (one per core): they can only
        // overlap on the plugin's own pool.
        let threads = ProcessInfo.processInfo.activeProcessorCount + 2
        let handler = try Self.handler(language, threads: threads)
        #expect(Self.reply(await handler.handle(Self.input(headers: ["x-demo-reply": "thread"])))?.hasPrefix("thread=warren-plugin") == true)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<threads {
                group.addTask { _ = await handler.handle(Self.input(headers: ["x-demo-sleep-ms": .int32(400)])) }
            }
        }
        // The plugin's own count of calls running at once shows they overlapped (a timing
        // bound would fail on a loaded machine).
        let stats = try #require(Self.reply(await handler.handle(Self.input(headers: ["x-demo-reply": "stats"]))))
        #expect(stats == "messages=\(threads + 2) most_running=\(threads)")
        await handler.shutdown()
    }

    @Test(arguments: ExamplePlugins.Language.allCases)
    func aCallThatOverrunsItsTimeoutEndsAsATimeoutFailureWithoutWaitingForThePlugin(_ language: ExamplePlugins.Language) async throws {
        let log = CapturedLog()
        let handler = try Self.handler(language, threads: 1, logger: log.logger())
        // The call sleeps far longer than its timeout: returning well before the sleep ends shows
        // the handler stopped waiting at the timeout, even on a loaded machine.
        let started = ContinuousClock.now
        let outcome = await handler.handle(Self.input(headers: ["x-demo-sleep-ms": .int32(8000)], timeout: .milliseconds(200)))
        #expect(ContinuousClock.now - started < .milliseconds(6000), "the handler stopped waiting at the timeout")
        guard case .failure(let failure) = outcome else {
            Issue.record("expected a failure, got \(outcome)")
            return
        }
        #expect(failure.isTimeout)
        #expect(failure.error == "timeout after 200ms")
        #expect(outcome.resultName == "timeout")
        #expect(log.contains("plugin call timed out; it is still running on its thread, which stays busy until the plugin returns"))
        // A call queued behind the stuck one times out without ever running; the next call
        // waits for the thread and shows that only the stuck call and itself reached the plugin.
        guard case .failure(let queued) = await handler.handle(Self.input(timeout: .milliseconds(100))), queued.isTimeout else {
            Issue.record("a call queued behind the stuck one times out")
            return
        }
        #expect(log.contains("plugin call timed out before a thread was free; it will not run"))
        #expect(Self.reply(await handler.handle(Self.input(headers: ["x-demo-reply": "stats"]))) == "messages=2 most_running=1")
        #expect(log.contains("plugin call returned after its timeout"))
        await handler.shutdown()
    }

    @Test func shutdownDestroysThePluginStateOnceAfterTheLastCall() async throws {
        let summary = Self.summaryFile()
        defer { try? FileManager.default.removeItem(atPath: summary) }
        let handler = try Self.handler(.c, config: #"{"summary_file":"\#(summary)"}"#)
        _ = await handler.handle(Self.input())
        _ = await handler.handle(Self.input())
        #expect(Self.lines(summary) == nil, "not before shutdown")
        await handler.shutdown()
        await handler.shutdown()
        #expect(Self.lines(summary) == ["messages=2"])
    }

    @Test func shutdownWithACallStillRunningLeavesThePluginStateAlone() async throws {
        let summary = Self.summaryFile()
        defer { try? FileManager.default.removeItem(atPath: summary) }
        let log = CapturedLog()
        let handler = try Self.handler(.c, config: #"{"summary_file":"\#(summary)"}"#, threads: 1, logger: log.logger())
        let outcome = await handler.handle(Self.input(headers: ["x-demo-sleep-ms": .int32(6000)], timeout: .milliseconds(50)))
        #expect(outcome.resultName == "timeout")
        // Shutdown returns at once: it neither waits for the call nor destroys the state under it.
        let started = ContinuousClock.now
        await handler.shutdown()
        #expect(ContinuousClock.now - started < .milliseconds(4000), "did not wait for the call (6 s)")
        #expect(log.contains("plugin calls still running at shutdown; the plugin state is not destroyed"))
        guard case .failure(let failure) = await handler.handle(Self.input()) else {
            Issue.record("a call after shutdown fails")
            return
        }
        #expect(failure.error.contains("has shut down"))
        #expect(await log.wait(for: "plugin call returned after its timeout", timeout: .seconds(20)))
        #expect(Self.lines(summary) == nil, "destroy is never called")
    }

    @Test func aRegistryThatFailsOnALaterEntryDestroysThePluginsItHadStarted() throws {
        let summary = Self.summaryFile()
        defer { try? FileManager.default.removeItem(atPath: summary) }
        let library = try ExamplePlugins.library(.c)
        let configuration = try ConfigurationLoader.parse(source: """
            [broker]
            urls = ["amqp://guest:guest@127.0.0.1:5672/"]
            [handlers.first]
            kind = "plugin"
            library = "\(library)"
            config = { summary_file = "\(summary)" }
            [handlers.second]
            kind = "plugin"
            library = "\(library)"
            config = { fail_init = true }
            """, file: "plugin-test.toml")
        let error = #expect(throws: HandlerRegistry.SetupError.self) {
            _ = try HandlerRegistry(configuration, logger: Self.logger)
        }
        #expect(error?.handler == "second")
        #expect(Self.lines(summary) == ["messages=0"])
    }

    @Test func theRegistryRefusesAPluginWhoseInitFailsNamingTheHandlerAndLibrary() throws {
        let library = try ExamplePlugins.library(.c)
        let configuration = try ConfigurationLoader.parse(source: """
            [broker]
            urls = ["amqp://guest:guest@127.0.0.1:5672/"]
            [[queues]]
            name = "q"
            handler = "refunds"
            [handlers.refunds]
            kind = "plugin"
            library = "\(library)"
            config = { fail_init = true }
            """, file: "plugin-test.toml")
        let error = #expect(throws: HandlerRegistry.SetupError.self) {
            _ = try HandlerRegistry(configuration, logger: Self.logger)
        }
        #expect(error?.handler == "refunds")
        #expect(error?.description == "handlers.refunds: the plugin \(library) failed to initialise: init returned 2")
    }

    @Test func theThreadPoolIsSizedByTheLargestConcurrencyOfTheQueuesUsingTheHandler() async throws {
        let library = try ExamplePlugins.library(.c)
        let configuration = try ConfigurationLoader.parse(source: """
            [broker]
            urls = ["amqp://guest:guest@127.0.0.1:5672/"]
            [[queues]]
            name = "a"
            concurrency = 3
            handler = "demo"
            [[queues]]
            name = "b"
            prefetch = 64
            concurrency = 12
            routes = [{ match = { type = "T" }, handlers = ["other", "demo"] }]
            [[queues]]
            name = "c"
            prefetch = 64
            concurrency = 40
            handler = "other"
            [handlers.demo]
            kind = "plugin"
            library = "\(library)"
            [handlers.other]
            kind = "noop"
            [handlers.unused]
            kind = "plugin"
            library = "\(library)"
            """, file: "plugin-test.toml")
        #expect(PluginHandler.threads(for: "demo", in: configuration) == 12)
        #expect(PluginHandler.threads(for: "unused", in: configuration) == 1)
        let registry = try HandlerRegistry(configuration, logger: Self.logger)
        #expect((registry["demo"] as? PluginHandler)?.instance.threads.count == 12)
        await registry.shutdown()
    }
}

