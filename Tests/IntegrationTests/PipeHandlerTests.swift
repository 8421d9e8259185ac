import AMQP
import Foundation
import Glibc
import Logging
import TestSupport
import Testing

@testable import WarrenCore

/// The `pipe` handler with real worker processes (the shipped example and a test worker that
/// misbehaves on request), without a broker.
@Suite("Pipe handler with real worker processes", .timeLimit(.minutes(2)))
struct PipeHandlerTests {
    typealias W = PipeWorkers

    @Test func theExampleWorkerAnswersWithRepliesVerdictsAndPublishes() async throws {
        let handler = PipeHandler(settings: W.settings(W.example), logger: CapturedLog().logger())
        try await W.withRunning(handler) {
            let echoed = await handler.handle(W.input("hello pipe", id: "m1"))
            let reply = try #require(W.reply(echoed))
            #expect(reply["body"] as? String == "HELLO PIPE")
            #expect(reply["message_id"] as? String == "m1")
            #expect(reply["attempt"] as? Int == 1)
            #expect(reply["pid"] as? Int == Int(try #require(handler.workerPIDs[0])))

            guard case .verdict(.reject, let error?, _, _) = await handler.handle(W.input(headers: ["x-demo-verdict": "reject"])) else {
                Issue.record("expected a reject verdict"); return
            }
            #expect(error.contains("reject"))
            guard case .verdict(.retry(.seconds(1)), _, _, _) = await handler.handle(W.input(headers: ["x-demo-verdict": "retry"])) else {
                Issue.record("expected a retry verdict with its delay"); return
            }
            guard case .verdict(.requeue, _, _, _) = await handler.handle(W.input(headers: ["x-demo-verdict": "requeue"])) else {
                Issue.record("expected a requeue verdict"); return
            }
            #expect(W.failure(await handler.handle(W.input(headers: ["x-demo-verdict": "error"])))?.error == "x-demo-verdict asked for error")

            var binary = W.input(headers: ["x-demo-forward": "elsewhere"])
            binary.body = [0x00, 0xFF, 0x0A, 0x41]  // not UTF-8, and a newline inside the body
            guard case .success(let output) = await handler.handle(binary) else { Issue.record("expected success"); return }
            #expect(output.publishes.count == 1)
            #expect(output.publishes.first?.routingKey == "elsewhere")
            #expect(output.publishes.first?.body == binary.body, "body_base64 carries any bytes")
            #expect(output.publishes.first?.properties.headers?["x-forwarded-by"] == .string("pipe-worker"))
        }
    }

    @Test func severalInstancesAllTakeRequestsAndEveryCallerGetsItsOwnAnswer() async throws {
        let handler = PipeHandler(settings: W.settings(W.example, instances: 3), logger: CapturedLog().logger())
        try await W.withRunning(handler) {
            let pids = await W.waitForWorkers(handler, count: 3)
            #expect(Set(pids.values).count == 3)
            let outcomes = await withTaskGroup(of: (Int, HandlerOutcome).self) { group in
                for n in 0..<30 {
                    group.addTask { (n, await handler.handle(W.input("message \(n)", id: "m\(n)"))) }
                }
                var outcomes: [Int: HandlerOutcome] = [:]
                for await (n, outcome) in group { outcomes[n] = outcome }
                return outcomes
            }
            let replies = outcomes.compactMapValues { W.reply($0) }
            #expect(replies.count == 30)
            for (n, reply) in replies {
                #expect(reply["body"] as? String == "MESSAGE \(n)")
                #expect(reply["message_id"] as? String == "m\(n)")
            }
            let answering = Set(replies.values.compactMap { $0["pid"] as? Int }.map { Int32($0) })
            #expect(answering == Set(pids.values), "every instance answered some")
        }
    }

    @Test func answersInAnyOrderFindTheirRequestsById() async throws {
        let handler = PipeHandler(settings: W.settings(W.misbehaving, maxInFlight: 4), logger: CapturedLog().logger())
        try await W.withRunning(handler) {
            // The worker holds four requests, then answers them newest first.
            let bodies = await withTaskGroup(of: (String, String?).self) { group in
                for n in 0..<4 {
                    group.addTask {
                        let outcome = await handler.handle(W.input("body \(n)", headers: ["x-test": "hold", "x-test-batch": .int32(4)]))
                        return ("body \(n)", W.reply(outcome)?["body"] as? String)
                    }
                }
                var bodies: [String: String?] = [:]
                for await (sent, answered) in group { bodies[sent] = answered }
                return bodies
            }
            #expect(bodies == ["body 0": "body 0", "body 1": "body 1", "body 2": "body 2", "body 3": "body 3"])
        }
    }

    @Test(arguments: [
        ("garbage", "pipe worker sent an invalid response: not JSON in \"this is not json\""),
        ("unknown-id", "pipe worker sent an invalid response: an answer to request 1000000000000, which it does not have"),
        ("bad-verdict", "pipe worker sent an invalid response: request 3: unknown verdict \"maybe\" (expected one of ack, reject, requeue, retry, error)"),
        ("exit", "pipe worker exited with code 3"),
        ("close-stdout", "pipe worker closed its stdout"),
    ])
    func aMisbehavingWorkerFailsAllItsInFlightRequestsAndIsReplaced(mode: String, error: String) async throws {
        let log = CapturedLog()
        let handler = PipeHandler(settings: W.settings(W.misbehaving, maxInFlight: 2), logger: log.logger())
        try await W.withRunning(handler) {
            let first = try #require(W.reply(await handler.handle(W.input()))?["pid"] as? Int)
            async let waiting = handler.handle(W.input(headers: ["x-test": "hang"]))
            // The unanswered request is in flight (not queued) before the bad one follows it.
            while handler.dispatcher.pendingCount < 1 || handler.dispatcher.queuedCount > 0 { await Task.yield() }
            let bad = await handler.handle(W.input(headers: ["x-test": .string(mode)]))
            let other = await waiting
            for outcome in [bad, other] {
                let failure = try #require(W.failure(outcome), "\(mode): expected a failure")
                #expect(failure.error == error)
                #expect(!failure.isTimeout)
            }
            if mode == "exit" {
                #expect(W.failure(bad)?.exitCode == 3)
                #expect(W.failure(bad)?.stderrTail == "exiting on request\n", "the worker's last stderr goes with the failure")
            }
            let replaced = await W.waitForWorkers(handler, count: 1, excluding: [Int32(first)])
            let second = try #require(W.reply(await handler.handle(W.input()))?["pid"] as? Int)
            #expect(second != first, "a new worker answers")
            #expect(replaced[0] == Int32(second))
            #expect(!W.exists(Int32(first)), "the old worker was killed and reaped")
            #expect(log.matching("pipe worker ended; restarting it").count == 1)
        }
    }

    @Test func aWorkerThatStopsReadingItsStdinFailsTheNextRequestWithoutHurtingWarren() async throws {
        // Writing to a closed pipe raises SIGPIPE; warren must see EPIPE instead, and live.
        let handler = PipeHandler(settings: W.settings(W.misbehaving), logger: CapturedLog().logger())
        try await W.withRunning(handler) {
            let first = try #require(W.reply(await handler.handle(W.input(headers: ["x-test": "close-stdin"])))?["pid"] as? Int)
            let failure = try #require(W.failure(await handler.handle(W.input("a body the worker never reads"))))
            #expect(failure.error == "pipe worker closed its stdin")
            let second = try #require(W.reply(await handler.handle(W.input()))?["pid"] as? Int)
            #expect(second != first)
        }
    }

    @Test func aRequestPastItsTimeoutFailsAsATimeoutAndTheHungWorkerIsReplaced() async throws {
        let log = CapturedLog()
        let handler = PipeHandler(settings: W.settings(W.misbehaving, maxInFlight: 2), logger: log.logger())
        try await W.withRunning(handler) {
            let first = try #require(W.reply(await handler.handle(W.input()))?["pid"] as? Int)
            async let patient = handler.handle(W.input(headers: ["x-test": "hang"], timeout: .seconds(30)))
            while handler.dispatcher.pendingCount < 1 || handler.dispatcher.queuedCount > 0 { await Task.yield() }
            let clock = ContinuousClock()
            let started = clock.now
            let timedOut = await handler.handle(W.input(headers: ["x-test": "hang"], timeout: .milliseconds(500)))
            #expect(clock.now - started < .seconds(20), "ended at its timeout, not with the 30 s hang")
            let failure = try #require(W.failure(timedOut))
            #expect(failure.isTimeout)
            #expect(failure.error == "timeout after 500ms")
            let other = try #require(W.failure(await patient), "the hung worker's other request fails with it")
            #expect(!other.isTimeout)
            #expect(other.error.contains("presumed hung"))
            #expect(log.matching("pipe worker presumed hung; killing it").first?.metadata["pid"] == "\(first)")
            let second = try #require(W.reply(await handler.handle(W.input()))?["pid"] as? Int)
            #expect(second != first)
        }
    }

    @Test func aRequestWaitingForAFreeWorkerTimesOutWithoutKillingTheBusyOne() async throws {
        let handler = PipeHandler(settings: W.settings(W.example), logger: CapturedLog().logger())
        try await W.withRunning(handler) {
            let pids = await W.waitForWorkers(handler, count: 1)
            async let busy = handler.handle(W.input(headers: ["x-demo-sleep-ms": .int32(1500)]))
            while handler.dispatcher.pendingCount < 1 || handler.dispatcher.queuedCount > 0 { await Task.yield() }
            let queued = await handler.handle(W.input(timeout: .milliseconds(300)))
            #expect(W.failure(queued)?.error == "timeout after 300ms")
            #expect(handler.dispatcher.queuedCount == 0, "no stale waiter is left behind")
            #expect(W.reply(await busy) != nil, "the busy worker was left alone and answers")
            #expect(handler.workerPIDs == pids)
        }
    }

    @Test func workerStderrIsLoggedLineByLineWithHandlerWorkerAndPidCapped() async throws {
        let log = CapturedLog()
        let handler = PipeHandler(settings: W.settings(W.misbehaving, name: "noisy"), logger: log.logger())
        try await W.withRunning(handler) {
            let pid = try #require(W.reply(await handler.handle(W.input(headers: ["x-test": "stderr"])))?["pid"] as? Int)
            let first = try #require(await log.wait { $0.metadata["line"] == "first diagnostic line" })
            #expect(first.level == .warning)
            #expect(first.message == "pipe worker stderr")
            #expect(first.metadata["handler"] == "noisy")
            #expect(first.metadata["worker"] == "0")
            #expect(first.metadata["pid"] == "\(pid)")
            let long = try #require(await log.wait { $0.metadata["truncated"] == "true" })
            #expect(long.metadata["line"] == String(repeating: "x", count: PipeStderr.maxLineBytes))
        }
    }

    @Test func stoppingClosesStdinSoWorkersExitAndLaterRequestsFailAtOnce() async throws {
        var settings = W.settings(W.example, instances: 2)
        settings.shutdownGrace = .seconds(8)
        let handler = PipeHandler(settings: settings, logger: CapturedLog().logger())
        let clock = ContinuousClock()
        var stopStarted = clock.now
        let pids = try await W.withRunning(handler) {
            let pids = await W.waitForWorkers(handler, count: 2)
            #expect(W.reply(await handler.handle(W.input())) != nil)
            stopStarted = clock.now
            return pids
        }
        #expect(clock.now - stopStarted < .seconds(6), "the example worker exits on end of stdin, within the grace period")
        for pid in pids.values { #expect(!W.exists(pid), "worker \(pid) has exited and been reaped") }
        #expect(W.failure(await handler.handle(W.input()))?.error == PipeDispatcher.stoppedFailure.error)
    }

    @Test func aWorkerThatIgnoresTheEndOfStdinIsTerminatedAfterTheGracePeriod() async throws {
        let handler = PipeHandler(settings: W.settings(W.misbehaving), logger: CapturedLog().logger())
        let clock = ContinuousClock()
        var stopStarted = clock.now
        let pid = try await W.withRunning(handler) {
            let pid = try #require(W.reply(await handler.handle(W.input(headers: ["x-test": "linger"])))?["pid"] as? Int)
            stopStarted = clock.now
            return Int32(pid)
        }
        let took = clock.now - stopStarted
        #expect(took >= .seconds(2) && took < .seconds(10), "grace (2s), then SIGTERM; took \(took)")
        #expect(!W.exists(pid))
    }

    @Test func aWorkerThatCannotStartIsRetriedAndRequestsTimeOut() async throws {
        let log = CapturedLog()
        var settings = W.settings(W.example)
        settings.command = ["/nonexistent/warren-pipe-worker"]
        let handler = PipeHandler(settings: settings, logger: log.logger())
        try await W.withRunning(handler) {
            let outcome = await handler.handle(W.input(timeout: .milliseconds(400)))
            #expect(W.failure(outcome)?.isTimeout == true)
            #expect(await log.wait { $0.message == "pipe worker could not be started" } != nil)
        }
    }
}

/// The `pipe` handler end to end: a real engine, the broker, and the example worker.
@Suite("Pipe handler through the engine against RabbitMQ", .requiresBroker, .serialized, .timeLimit(.minutes(2)))
struct PipeEngineTests {
    typealias W = PipeWorkers

    /// Runs an engine for `source` (logging into `log`) while `body` runs, then stops it
    /// gracefully. Returns the queues the configuration declares, for the caller to delete.
    static func withEngine(_ source: String, log: CapturedLog, _ body: () async throws -> Void) async throws -> [String] {
        let configuration = try ConfigurationLoader.parse(source: source, file: "pipe-test.toml")
        let engine = Engine(configuration: configuration, logger: log.logger(level: .info))
        let stop = Latch()
        let ready = Latch()
        let queues = TopologyPlan(configuration).queues.map(\.declaration.name)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                let outcome = await engine.run(stop: stop, ready: ready)
                #expect(outcome == .stopped)
            }
            // Whatever happens in `body`, the engine then stops gracefully (and the group waits).
            defer { stop.set() }
            guard await EngineHarness.becomesReady(ready) else { throw TestTimeout(what: "waiting for the engine to become ready") }
            try await body()
        }
        return queues
    }

    static func source(queue: String, instances: Int = 1, extra: String = "") -> String {
        """
        [broker]
        urls = ["\(TestBroker.url)"]
        connection_name = "warren-pipe-tests"
        [[queues]]
        name = "\(queue)"
        durable = false
        prefetch = 8
        concurrency = 4
        handler = "worker"
        ack_policy = "nack_on_error"
        \(extra)
        [handlers.worker]
        kind = "pipe"
        command = ["python3", "\(W.example)"]
        instances = \(instances)
        timeout = "20s"
        """
    }

    static func count(_ queue: String, on connection: AMQPConnection) async throws -> UInt32 {
        try await connection.declareQueue(QueueDeclaration(name: queue, passive: true)).messageCount
    }

    @Test func aWorkerKilledWithSIGKILLMidMessageIsReplacedAndEveryMessageIsProcessedAsThePolicySays() async throws {
        let queue = TestBroker.uniqueName("pipe-kill")
        let replies = "\(queue).replies"
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: replies, durable: false))
        let publisher = try await connection.openPublisher()
        let log = CapturedLog()
        let source = Self.source(queue: queue, instances: 2, extra: """
            [queues.retry]
            max_attempts = 3
            delay = "200ms"
            """)
        let total = 50
        var received: [Delivery] = []
        var killed: Int32 = 0
        let declared = try await Self.withEngine(source, log: log) {
            for n in 0..<total {
                var headers: FieldTable = [:]
                if n == 10 { headers["x-demo-sleep-ms"] = .int32(6000) }
                let properties = BasicProperties(headers: headers, correlationID: "c\(n)", replyTo: AMQPString(replies), messageID: "m\(n)")
                #expect(try await publisher.publish(routingKey: queue, body: Array("message \(n)".utf8), properties: properties) == .confirmed)
            }
            // The worker says on stderr that it is sleeping on m10: it is mid-message. Kill it.
            let sleeping = try #require(await log.wait { $0.message == "pipe worker stderr" && ($0.metadata["line"] ?? "").hasSuffix("on message m10") })
            killed = try #require(sleeping.metadata["pid"].flatMap { Int32($0) })
            #expect(kill(killed, SIGKILL) == 0)
            let consumer = try await connection.consume(ConsumeOptions(queue: replies, prefetch: 100))
            received = try await collect(total, from: consumer, within: .seconds(30)) { consumer.ack($0) }
            try await consumer.close()
        }
        let byCorrelation = Dictionary(grouping: received) { $0.properties.correlationID ?? "" }
        #expect(Set(byCorrelation.keys) == Set((0..<total).map { "c\($0)" }), "one reply per message, none lost")
        #expect(byCorrelation.values.allSatisfy { $0.count == 1 }, "no message answered twice")
        for (correlation, deliveries) in byCorrelation {
            let reply = try #require(try JSONSerialization.jsonObject(with: Data(deliveries[0].body)) as? [String: Any])
            let expectedAttempt = correlation == "c10" ? 2 : 1
            #expect(reply["attempt"] as? Int == expectedAttempt, "\(correlation): the killed message was retried once, the others ran once")
            if correlation == "c10" { #expect(reply["pid"] as? Int != Int(killed), "a restarted worker handled the retry") }
        }
        let ended = log.matching("pipe worker ended; restarting it")
        #expect(ended.count == 1)
        #expect(ended.first?.metadata["error"] == "pipe worker killed by SIGKILL")
        #expect(ended.first?.metadata["pid"] == "\(killed)")
        #expect(log.matching("message scheduled for retry").first?.metadata["error"] == "pipe worker killed by SIGKILL")
        #expect(try await Self.count(queue, on: connection) == 0, "every input was acked")
        #expect(try await Self.count("\(queue).dead", on: connection) == 0, "nothing was dead-lettered")
        for name in declared + [replies] { try? await TestBroker.deleteQueue(name) }
        await connection.close()
    }

    @Test func aReplyIsPublishedOnceWithTheCorrelationIDAndPublishEntriesArriveBeforeTheAck() async throws {
        let queue = TestBroker.uniqueName("pipe-rpc")
        let replies = "\(queue).replies"
        let forwarded = "\(queue).forwarded"
        let connection = try await TestBroker.connect()
        for name in [replies, forwarded] { try await connection.declareQueue(QueueDeclaration(name: name, durable: false)) }
        let publisher = try await connection.openPublisher()
        let log = CapturedLog()
        let binary: [UInt8] = [0x00, 0xFF, 0x0A, 0x42]
        let declared = try await Self.withEngine(Self.source(queue: queue), log: log) {
            _ = try await publisher.publish(
                routingKey: queue, body: Array("ping".utf8), properties: BasicProperties(correlationID: "corr-1", replyTo: AMQPString(replies), messageID: "rpc-1"))
            _ = try await publisher.publish(
                routingKey: queue, body: binary,
                properties: BasicProperties(contentType: "application/octet-stream", headers: ["x-demo-forward": .string(forwarded)], messageID: "fwd-1"))
            _ = try await publisher.publish(
                routingKey: queue, body: Array("bad".utf8), properties: BasicProperties(headers: ["x-demo-verdict": "reject"], messageID: "rej-1"))
            let deadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < deadline {
                let counts = [try await Self.count(replies, on: connection), try await Self.count(forwarded, on: connection),
                              try await Self.count("\(queue).dead", on: connection)]
                if counts == [1, 1, 1] { break }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        // After a graceful stop everything is settled: a second reply or an unacked input would show here.
        #expect(try await Self.count(replies, on: connection) == 1, "exactly one reply")
        #expect(try await Self.count(forwarded, on: connection) == 1)
        #expect(try await Self.count("\(queue).dead", on: connection) == 1)
        #expect(try await Self.count(queue, on: connection) == 0, "every input was acked")

        let replyConsumer = try await connection.consume(ConsumeOptions(queue: replies, prefetch: 10))
        let reply = try #require(try await collect(1, from: replyConsumer).first)
        replyConsumer.ack(reply)
        try await replyConsumer.close()
        #expect(reply.properties.correlationID == "corr-1")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(reply.body)) as? [String: Any])
        #expect(object["body"] as? String == "PING")
        #expect(object["message_id"] as? String == "rpc-1")

        let forwardConsumer = try await connection.consume(ConsumeOptions(queue: forwarded, prefetch: 10))
        let copy = try #require(try await collect(1, from: forwardConsumer).first)
        forwardConsumer.ack(copy)
        try await forwardConsumer.close()
        #expect(copy.body == binary, "body_base64 carried the bytes unchanged")
        #expect(copy.properties.messageID == "fwd-1")
        #expect(copy.properties.contentType == "application/octet-stream")
        #expect(copy.properties.headers?["x-forwarded-by"] == .string("pipe-worker"))
        #expect(copy.properties.deliveryMode == 2)

        let deadConsumer = try await connection.consume(ConsumeOptions(queue: "\(queue).dead", prefetch: 10))
        let dead = try #require(try await collect(1, from: deadConsumer).first)
        deadConsumer.ack(dead)
        try await deadConsumer.close()
        #expect(dead.properties.messageID == "rej-1")
        #expect(dead.properties.headers?["x-warren-reason"] == .string("rejected"))
        #expect(dead.properties.headers?["x-warren-error"] == .string("x-demo-verdict asked for reject"))
        for name in declared + [replies, forwarded] { try? await TestBroker.deleteQueue(name) }
        await connection.close()
    }

    @Test func anUnroutablePublishEntryIsRetriedThenParkedNeverAckedWithoutItsCopy() async throws {
        let queue = TestBroker.uniqueName("pipe-unroutable")
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        let log = CapturedLog()
        let nowhere = TestBroker.uniqueName("nowhere")
        let ladder = """
            [queues.retry]
            max_attempts = 2
            delay = "100ms"
            """
        var parked: Delivery?
        let declared = try await Self.withEngine(Self.source(queue: queue, extra: ladder), log: log) {
            _ = try await publisher.publish(
                routingKey: queue, body: Array("x".utf8), properties: BasicProperties(headers: ["x-demo-forward": .string(nowhere)], messageID: "u-1"))
            let deadConsumer = try await connection.consume(ConsumeOptions(queue: "\(queue).dead", prefetch: 10))
            parked = try await collect(1, from: deadConsumer).first
            if let parked { deadConsumer.ack(parked) }
            try await deadConsumer.close()
        }
        #expect(parked?.properties.messageID == "u-1")
        #expect(parked?.properties.headers?["x-warren-reason"] == .string("attempts_exhausted"))
        #expect(parked?.properties.headers?["x-warren-error"]?.stringValue?.contains("returned") == true, "the error names the refusal")
        #expect(try await Self.count(queue, on: connection) == 0, "acked only once its parked copy was confirmed")
        for name in declared { try? await TestBroker.deleteQueue(name) }
        await connection.close()
    }
}
