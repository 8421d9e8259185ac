import AMQP
import Foundation
import TestSupport
import Testing
import WarrenCore

/// The `exec` handler end to end: a real engine consumes from RabbitMQ and runs `#!/bin/sh`
/// scripts; exit codes, timeouts and stdout turn into parked messages, retries and replies.
@Suite("exec handler against RabbitMQ", .requiresBroker, .timeLimit(.minutes(2)))
final class ExecHandlerIntegrationTests: Sendable {
    let scratch: ScratchDirectory
    let queue: String
    var directory: String { scratch.path }

    init() throws {
        scratch = try ScratchDirectory("exec-it")
        queue = TestBroker.uniqueName("exec")
    }

    @Test func exitCode65ParksTheMessageAsRejected() async throws {
        let program = try script("cat >/dev/null; echo 'unknown customer' >&2; exit 65")
        let parked = try await parkOne(handler: "rejecter", program: program)
        let headers = parked.properties.headers
        #expect(parked.body == Array("payload".utf8))
        #expect(headers?["x-warren-reason"] == .string("rejected"))
        #expect(headers?["x-warren-error"] == .string("exit code 65: unknown customer"))
        #expect(headers?["x-warren-handler"] == .string("rejecter"))
        #expect(headers?["x-warren-attempts"]?.integerValue == 1)
    }

    @Test func aFailingProgramIsRetriedThenParkedWithItsExitCodeAndStderr() async throws {
        let program = try script("""
            echo "$WARREN_ATTEMPT" >> '\(directory)/attempts'
            echo "boom on attempt $WARREN_ATTEMPT" >&2
            exit 3
            """)
        let parked = try await parkOne(handler: "failer", program: program, queueSettings: """
            ack_policy = "nack_on_error"
            [queues.retry]
            max_attempts = 2
            delay = "100ms"
            """)
        #expect(attempts() == ["1", "2"], "one retry through the delay queue, then parked")
        let headers = parked.properties.headers
        #expect(headers?["x-warren-reason"] == .string("attempts_exhausted"))
        #expect(headers?["x-warren-error"] == .string("exit code 3"))
        #expect(headers?["x-warren-exit-code"]?.integerValue == 3)
        #expect(headers?["x-warren-stderr-tail"] == .string("boom on attempt 2\n"))
        #expect(headers?["x-warren-attempts"]?.integerValue == 2)
    }

    @Test func aProgramOverrunningItsTimeoutIsRetriedThenParkedWithTheTimeoutError() async throws {
        let program = try script("""
            echo "$WARREN_ATTEMPT" >> '\(directory)/attempts'
            exec sleep 30
            """)
        let parked = try await parkOne(handler: "sleeper", program: program, handlerSettings: #"timeout = "300ms""#, queueSettings: """
            [queues.retry]
            max_attempts = 2
            delay = "100ms"
            """)
        #expect(attempts() == ["1", "2"])
        let headers = parked.properties.headers
        #expect(headers?["x-warren-reason"] == .string("attempts_exhausted"))
        #expect(headers?["x-warren-error"] == .string("timeout after 300ms"))
        #expect(headers?["x-warren-exit-code"] == nil)
    }

    @Test func aMessageWithReplyToGetsExactlyOneReplyWithItsCorrelationID() async throws {
        let program = try script("tr a-z A-Z")
        let replies = "\(queue).replies"
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: replies, durable: false))
        let publisher = try await connection.openPublisher()
        let sent = Latch()
        let declared = try await BuiltinHandlerTests.withEngine(source(handler: "upper", program: program)) {
            if !sent.isSet {
                sent.set()
                let properties = BasicProperties(correlationID: "corr-1", replyTo: AMQPString(replies), messageID: "rpc-1")
                #expect(try await publisher.publish(routingKey: self.queue, body: Array("hello".utf8), properties: properties) == .confirmed)
            }
            return try await connection.declareQueue(QueueDeclaration(name: replies, passive: true)).messageCount >= 1
        }
        #expect(try await connection.declareQueue(QueueDeclaration(name: replies, passive: true)).messageCount == 1, "exactly one reply")
        #expect(try await connection.declareQueue(QueueDeclaration(name: queue, passive: true)).messageCount == 0, "the request was acked")
        let consumer = try await connection.consume(ConsumeOptions(queue: replies, prefetch: 1))
        let reply = try #require(try await collect(1, from: consumer).first)
        consumer.ack(reply)
        #expect(reply.body == Array("HELLO".utf8))
        #expect(reply.properties.correlationID == "corr-1")
        try await consumer.close()
        try await connection.deleteQueue(replies)
        await BuiltinHandlerTests.delete(declared)
        await connection.close()
    }

    /// A fan-out started on an exec worker's own thread must not run its handlers one by one.
    @Test func aFanOutOfExecHandlersRunsThemAtTheSameTime() async throws {
        let source = """
            [broker]
            urls = ["\(TestBroker.url)"]
            [[queues]]
            name = "\(queue)"
            durable = false
            concurrency = 1
            routes = [{ match = { type = "meet" }, handlers = ["left", "right"] }]
            [handlers.left]
            kind = "exec"
            command = ["\(try meeting("left", "right"))"]
            [handlers.right]
            kind = "exec"
            command = ["\(try meeting("right", "left"))"]
            """
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        let sent = Latch()
        let declared = try await BuiltinHandlerTests.withEngine(source) { () async throws -> Bool in
            if !sent.isSet {
                sent.set()
                let properties = BasicProperties(messageID: "meet-1", type: "meet")
                #expect(try await publisher.publish(routingKey: self.queue, body: [], properties: properties) == .confirmed)
            }
            return Self.met(["left", "right"], onFirstAttemptIn: self.directory)
        }
        await BuiltinHandlerTests.delete(declared)
        await connection.close()
    }

    // MARK: helpers

    /// A script that waits (up to 5 s) for `other` to have started, then records the attempt it
    /// met it on. Two of them run one after the other, the first gives up and fails its attempt.
    private func meeting(_ me: String, _ other: String) throws -> String {
        try script("""
            touch '\(directory)/\(me).started'
            i=0
            while [ ! -e '\(directory)/\(other).started' ]; do
              i=$((i + 1)); [ $i -gt 100 ] && exit 3
              sleep 0.05
            done
            touch "\(directory)/\(me).met.$WARREN_ATTEMPT"
            """)
    }

    /// Whether every one of `handlers` met the other on the message's first attempt.
    private static func met(_ handlers: [String], onFirstAttemptIn directory: String) -> Bool {
        handlers.allSatisfy { FileManager.default.fileExists(atPath: "\(directory)/\($0).met.1") }
    }

    /// Runs an engine with one exec handler until one message published to the queue is parked
    /// in `<queue>.dead`; returns the parked copy and deletes every queue the engine declared.
    private func parkOne(handler: String, program: String, handlerSettings: String = "", queueSettings: String = "") async throws -> Delivery {
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        let dead = "\(queue).dead"
        let sent = Latch()
        let source = source(handler: handler, program: program, handlerSettings: handlerSettings, queueSettings: queueSettings)
        let declared = try await BuiltinHandlerTests.withEngine(source) {
            if !sent.isSet {
                sent.set()
                let properties = BasicProperties(messageID: "\(handler)-1")
                #expect(try await publisher.publish(routingKey: self.queue, body: Array("payload".utf8), properties: properties) == .confirmed)
            }
            return try await connection.declareQueue(QueueDeclaration(name: dead, passive: true)).messageCount == 1
        }
        let consumer = try await connection.consume(ConsumeOptions(queue: dead, prefetch: 1))
        let parked = try #require(try await collect(1, from: consumer).first)
        consumer.ack(parked)
        try await consumer.close()
        await BuiltinHandlerTests.delete(declared)
        await connection.close()
        return parked
    }

    private func source(handler: String, program: String, handlerSettings: String = "", queueSettings: String = "") -> String {
        """
        [broker]
        urls = ["\(TestBroker.url)"]
        [[queues]]
        name = "\(queue)"
        durable = false
        concurrency = 2
        handler = "\(handler)"
        \(queueSettings)
        [handlers.\(handler)]
        kind = "exec"
        command = ["\(program)"]
        \(handlerSettings)
        """
    }

    /// Writes an executable `#!/bin/sh` script and returns its path.
    private func script(_ body: String) throws -> String { try scratch.script(body) }

    /// The attempt numbers the script recorded, one per run.
    private func attempts() -> [String] {
        let text = (try? String(contentsOfFile: "\(directory)/attempts", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map(String.init)
    }
}
