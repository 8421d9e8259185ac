import AMQP
import Foundation
import Glibc
import Testing
import WarrenCore

/// The metrics and health endpoints (docs/metrics-endpoint.md) on the real binary: `/metrics` parsed by Prometheus' own text-format
/// parser after known traffic, `/healthz`, and `/readyz` following the consumer through a
/// queue deletion and its recovery.
@Suite(
    "Metrics and health endpoints of warren run", .requiresBroker, .timeLimit(.minutes(1)),
    .enabled("needs Debian's python3-prometheus-client (scripts/setup)") { await MetricsScrape.parserAvailable() })
struct ObservabilityTests {
    static func source(queue: String, port: Int) -> String {
        """
        [broker]
        urls = ["\(TestBroker.url)"]
        connection_name = "warren-metrics-tests"
        reconnect_initial_delay = "3s"
        reconnect_max_delay = "6s"

        [metrics]
        listen = "127.0.0.1:\(port)"

        [[queues]]
        name = "\(queue)"
        durable = false
        routes = [
          { match = { type = "good" }, handlers = ["sink"] },
          { match = { type = "bad" }, handlers = ["fail"] },
        ]
        unrouted = "reject"
        [queues.retry]
        max_attempts = 1

        [handlers.sink]
        kind = "noop"

        [handlers.fail]
        kind = "exec"
        command = ["/bin/false"]
        """
    }

    /// Polls `url` until its status is `status`; false after `timeout`.
    static func wait(for status: Int, at url: String, timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let response = try? await MetricsScrape.get(url), response.status == status { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    @Test func metricsCountWhatWasProcessedAndReadyzFollowsTheConsumer() async throws {
        let queue = TestBroker.uniqueName("metrics")
        let port = try MetricsScrape.freePort()
        let base = "http://127.0.0.1:\(port)"
        let source = Self.source(queue: queue, port: port)
        let config = try WarrenProcess.ConfigFile(source)
        defer { config.remove() }
        let plan = TopologyPlan(try ConfigurationLoader.parse(source: source, file: config.path))
        let warren = try RunningWarren(config: config.path)
        defer { if warren.process.isRunning { warren.signal(SIGKILL) } }
        #expect(await Self.wait(for: 200, at: "\(base)/readyz", timeout: .seconds(30)), "never ready; log:\n\(warren.output)")

        // Before any traffic, every series of the queue exists at 0.
        let before = try await MetricsScrape.parse(try await MetricsScrape.get("\(base)/metrics").body)
        for outcome in ["acked", "retried", "dead_lettered", "requeued", "rejected", "dropped"] {
            #expect(before.value("warren_messages_total", ["queue": queue, "outcome": outcome]) == 0, "outcome \(outcome)")
        }
        #expect(before.value("warren_handler_runs_total", ["queue": queue, "handler": "fail", "result": "timeout"]) == 0)
        #expect(before.value("warren_connection_blocked", ["role": "publisher"]) == 0)

        // Known traffic: 4 handled, 2 failing (max_attempts 1: dead-lettered at once), 1 unrouted (rejected).
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        for type in Array(repeating: "good", count: 4) + ["bad", "bad", "unknown"] {
            let outcome = try await publisher.publish(routingKey: queue, body: Array("x".utf8), properties: BasicProperties(type: AMQPString(type)))
            #expect(outcome == .confirmed)
        }
        let settled = await Self.samples(at: base, timeout: .seconds(20)) { samples in
            samples.filter { $0.name == "warren_messages_total" && $0.labels["queue"] == queue }.map(\.value).reduce(0, +) >= 7
        }
        let after = try #require(settled, "the 7 messages were not all counted; log:\n\(warren.output)")
        let messages = { (outcome: String) in after.value("warren_messages_total", ["queue": queue, "outcome": outcome]) }
        #expect(messages("acked") == 4)
        #expect(messages("dead_lettered") == 2)
        #expect(messages("rejected") == 1)
        #expect(messages("retried") == 0 && messages("requeued") == 0 && messages("dropped") == 0)
        #expect(after.value("warren_handler_runs_total", ["queue": queue, "handler": "sink", "result": "success"]) == 4)
        #expect(after.value("warren_handler_runs_total", ["queue": queue, "handler": "fail", "result": "failure"]) == 2)
        #expect(after.value("warren_handler_runs_total", ["queue": queue, "handler": "sink", "result": "failure"]) == 0)
        #expect(after.value("warren_handler_duration_seconds_count", ["queue": queue, "handler": "sink"]) == 4)
        #expect(after.first { $0.name == "warren_handler_duration_seconds_count" }?.type == "histogram")
        #expect(after.value("warren_publishes_total", ["result": "confirmed"]) == 2)
        #expect(after.value("warren_publishes_total", ["result": "returned"]) == 0)
        #expect(after.value("warren_inflight_messages", ["queue": queue]) == 0)
        #expect(after.value("warren_consumers", ["queue": queue]) == 1)
        #expect(after.value("warren_connection_up", ["role": "consumer"]) == 1)
        #expect(after.value("warren_connection_up", ["role": "publisher"]) == 1)
        #expect(after.value("warren_reconnects_total", ["role": "consumer"]) == 0)

        let health = try await MetricsScrape.get("\(base)/healthz")
        #expect(health.status == 200 && health.body == "ok\n")

        // The queue is deleted: no live consumer, not ready; warren re-declares it and
        // re-subscribes: ready again.
        // Re-subscribing waits at least reconnect_initial_delay (3 s): a spell without a consumer
        // that polling cannot miss, even on a loaded machine.
        try await TestBroker.deleteQueue(queue)
        #expect(await Self.wait(for: 503, at: "\(base)/readyz", timeout: .seconds(10)), "/readyz stayed 200 without a consumer")
        #expect(await Self.wait(for: 200, at: "\(base)/readyz", timeout: .seconds(15)), "/readyz did not recover; log:\n\(warren.output)")
        let recovered = try await MetricsScrape.parse(try await MetricsScrape.get("\(base)/metrics").body)
        #expect(recovered.value("warren_consumers", ["queue": queue]) == 1)

        warren.signal(SIGTERM)
        #expect(await warren.waitForExit(timeout: .seconds(20)) == 0)
        await connection.close()
        for name in plan.queues.map(\.declaration.name) { try? await TestBroker.deleteQueue(name) }
    }

    /// Scrapes until `done` holds; nil after `timeout`.
    static func samples(at base: String, timeout: Duration, until done: ([MetricsScrape.Sample]) -> Bool) async -> [MetricsScrape.Sample]? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let text = try? await MetricsScrape.get("\(base)/metrics").body, let samples = try? await MetricsScrape.parse(text), done(samples) {
                return samples
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return nil
    }

    @Test func aListenAddressThatCannotBeBoundIsAConfigurationErrorBeforeConnecting() async throws {
        // Hold the port so warren cannot have it.
        let holder = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(holder) }
        let port = try MetricsScrape.bindEphemeral(holder)
        #expect(listen(holder, 1) == 0)
        let queue = TestBroker.uniqueName("metrics-bind")
        let config = try WarrenProcess.ConfigFile(WarrenProcess.config(queue: queue) + "\n[metrics]\nlisten = \"127.0.0.1:\(port)\"\n")
        defer { config.remove() }
        let result = try await WarrenProcess.run(["run", "--config", config.path], timeout: .seconds(30))
        #expect(result.status == 78)
        #expect(result.stderr.contains("cannot listen on [metrics] listen"))
        #expect(!result.stderr.contains("event=connected"), "it connected before failing")
        try? await TestBroker.deleteQueue(queue)
    }
}
