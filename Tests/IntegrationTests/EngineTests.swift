import AMQP
import Foundation
import Logging
import Synchronization
import Testing
import WarrenCore

/// The engine suites run one test at a time: they measure back-off gaps and concurrency, which a
/// broker flooded by a parallel volume test would distort.
@Suite("Engine against RabbitMQ", .serialized, .requiresBroker)
struct EngineSuites {}

extension EngineSuites {
@Suite("Consuming engine against RabbitMQ", .timeLimit(.minutes(3)))
struct EngineTests {
    enum End: Equatable, CustomStringConvertible {
        case acked
        case requeued
        case retried
        case deadLettered(String)

        var description: String {
            switch self {
            case .acked: "acked"
            case .requeued: "requeued"
            case .retried: "retried"
            case .deadLettered(let reason): "dead-lettered (\(reason))"
            }
        }

        var calls: Int {
            switch self {
            case .acked, .deadLettered: 1
            case .requeued, .retried: 2
            }
        }
    }

    static let behaviours = ["success", "fail", "verdict:ack", "verdict:reject", "verdict:requeue", "verdict:retry"]

    /// The ack-policy table of docs/delivery.md: what each policy does with each outcome.
    static func expected(_ policy: AckPolicy, _ behaviour: String) -> End {
        switch (policy, behaviour) {
        case (.ackFirst, _), (_, "success"), (_, "verdict:ack"): .acked
        case (_, "verdict:reject"): .deadLettered("rejected")
        case (_, "verdict:requeue"): .requeued
        case (_, "verdict:retry"): .retried
        case (.ack, "fail"): .acked
        case (.rejectOnError, "fail"): .deadLettered("failed")
        case (.nackOnError, "fail"): .retried
        case (.manual, "fail"): .requeued
        default: .acked
        }
    }

    @Test(arguments: AckPolicy.allCases)
    func eachOutcomeEndsAsThePolicyTableSays(policy: AckPolicy) async throws {
        let harness = try EngineHarness(queueSettings: """
            ack_policy = "\(policy.rawValue)"
            [queues.retry]
            max_attempts = 3
            delay = "300ms"
            """)
        let connection = try await TestBroker.connect()
        try await harness.start()
        let suffix = UUID().uuidString.prefix(6)
        func id(_ behaviour: String) -> String { "\(behaviour)-\(suffix)" }
        for behaviour in Self.behaviours {
            try await harness.publish(id(behaviour), test: behaviour, on: connection)
        }
        let expectations = Dictionary(uniqueKeysWithValues: Self.behaviours.map { (id($0), Self.expected(policy, $0)) })
        let done = await harness.recorder.wait { snapshot in
            expectations.allSatisfy { snapshot.calls(for: $0.key).count >= $0.value.calls }
        }
        #expect(done, "not every message reached its expected number of handler calls")
        #expect(await harness.stopAndWait() == .stopped)

        let snapshot = harness.recorder.snapshot
        let deadExpected = expectations.values.filter { if case .deadLettered = $0 { true } else { false } }.count
        let parked = try await harness.drainParked(expecting: deadExpected, on: connection)
        for behaviour in Self.behaviours {
            let messageID = id(behaviour)
            let end = Self.expected(policy, behaviour)
            let calls = snapshot.calls(for: messageID)
            #expect(calls.count == end.calls, "\(policy.rawValue)/\(behaviour): expected \(end), handler ran \(calls.count) times")
            switch end {
            case .acked:
                break
            case .requeued:
                #expect(calls.last?.redelivered == true, "\(policy.rawValue)/\(behaviour): a requeue comes back redelivered")
                #expect(calls.last?.attempt == 1, "a requeue on a classic queue does not count as an attempt")
            case .retried:
                #expect(calls.last?.attempt == 2, "\(policy.rawValue)/\(behaviour): the retry copy carries attempt 2")
                #expect(calls.last?.headers?["x-warren-attempt"]?.integerValue == 2)
                #expect(calls.last?.headers?["x-warren-original-routing-key"] == .string(harness.queue))
                if calls.count == 2 { #expect(calls[1].at - calls[0].at >= .milliseconds(250), "came back through the 300ms delay queue") }
            case .deadLettered(let reason):
                let copy = try #require(parked.first { $0.properties.messageID == AMQPString(messageID) }, "\(messageID) is parked")
                let headers = try #require(copy.properties.headers)
                #expect(headers["x-warren-reason"] == .string(reason))
                #expect(headers["x-warren-handler"] == .string("scripted"))
                #expect(headers["x-warren-attempts"]?.integerValue == 1)
                #expect(headers["x-warren-error"]?.stringValue?.isEmpty == false)
                #expect(headers["x-warren-failed-at"]?.stringValue?.contains("T") == true)
                #expect(headers["x-warren-original-exchange"] == .string(""))
                #expect(headers["x-warren-original-routing-key"] == .string(harness.queue))
                if reason == "failed" {
                    #expect(headers["x-warren-exit-code"]?.integerValue == 3)
                    #expect(headers["x-warren-stderr-tail"] == .string("boom"))
                }
                #expect(copy.body == Array("payload".utf8))
            }
        }
        #expect(parked.count == deadExpected)
        for name in harness.declaredQueues where !name.hasSuffix(".dead") {
            #expect(try await harness.messageCount(name, on: connection) == 0, "\(name) is empty")
        }
        await harness.cleanUp()
        await connection.close()
    }

    @Test func aPoisonMessageIsTriedMaxAttemptsTimesWithBackOffThenParked() async throws {
        let harness = try EngineHarness(queueSettings: """
            [queues.retry]
            max_attempts = 4
            delay = "1s"
            multiplier = 2.0
            """)
        let connection = try await TestBroker.connect()
        try await harness.start()
        try await harness.publish("poison", test: "fail", headers: ["x-test-always": true], on: connection)
        let parked = try await harness.drainParked(expecting: 1, on: connection)
        #expect(await harness.stopAndWait() == .stopped)
        let calls = harness.recorder.snapshot.calls(for: "poison")
        #expect(calls.map(\.attempt) == [1, 2, 3, 4])
        let gaps = zip(calls.dropFirst(), calls).map { $0.at - $1.at }
        // Never shorter than the ladder step (the back-off holds); the upper bound only says it is
        // that step and not the next one, with room for a loaded broker's TTL expiry.
        for (gap, expected) in zip(gaps, [Duration.seconds(1), .seconds(2), .seconds(4)]) {
            #expect(gap >= expected - .milliseconds(50) && gap < expected * 2, "gap \(gap), expected about \(expected)")
        }
        let headers = parked.first?.properties.headers
        #expect(headers?["x-warren-reason"] == .string("attempts_exhausted"))
        #expect(headers?["x-warren-attempts"]?.integerValue == 4)
        for name in harness.declaredQueues where !name.hasSuffix(".dead") {
            #expect(try await harness.messageCount(name, on: connection) == 0, "\(name) is empty: the message does not loop")
        }
        await harness.cleanUp()
        await connection.close()
    }

    @Test(arguments: [AckPolicy.nackOnError, .ackFirst])
    func concurrencyNeverExceedsThePoolAndUnackedNeverExceedsPrefetch(policy: AckPolicy) async throws {
        let harness = try EngineHarness(queueSettings: """
            ack_policy = "\(policy.rawValue)"
            prefetch = 10
            concurrency = 4
            """)
        let connection = try await TestBroker.connect()
        try await harness.start()
        let count = 60
        let publisher = try await connection.openPublisher()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<count {
                group.addTask {
                    let properties = BasicProperties(headers: ["x-test-sleep-ms": 100], messageID: "c\(index)")
                    _ = try await publisher.publish(routingKey: harness.queue, body: [1], properties: properties)
                }
            }
            try await group.waitForAll()
        }
        let sampler = BrokerControl.isAvailable ? UnackedSampler(queue: harness.queue) : nil
        if sampler == nil && TestBroker.isCI {
            Issue.record("rabbitmqctl is not available to observe unacked counts")
        }
        #expect(await harness.recorder.wait { $0.finished == count })
        let samples = await sampler?.stop() ?? []
        #expect(await harness.stopAndWait() == .stopped)
        let snapshot = harness.recorder.snapshot
        #expect(snapshot.maxRunning <= 4, "at most concurrency handlers at once, saw \(snapshot.maxRunning)")
        #expect(snapshot.maxRunning == 4, "the pool is used fully")
        #expect(samples.allSatisfy { $0 <= 10 }, "unacked per the broker never above prefetch: \(samples)")
        #expect(!samples.isEmpty || sampler == nil, "the broker was sampled while handlers ran")
        #expect(try await harness.messageCount(harness.queue, on: connection) == 0)
        await harness.cleanUp()
        await connection.close()
    }

    /// Queue workers run on the consumer connection's I/O thread, but a handler that may block
    /// (any but the built-in non-blocking ones) runs on the shared pool: one that holds its thread
    /// must not hold up the loop, so a message behind it is received, handled and acked meanwhile.
    @Test func aHandlerHoldingItsThreadDoesNotHoldUpTheConsumerConnection() async throws {
        let harness = try EngineHarness(queueSettings: """
            prefetch = 10
            concurrency = 2
            """)
        let connection = try await TestBroker.connect()
        try await harness.start()
        let publisher = try await connection.openPublisher()
        let blocking = BasicProperties(headers: ["x-test-block-ms": 3000], messageID: "blocker")
        #expect(try await publisher.publish(routingKey: harness.queue, body: [1], properties: blocking) == .confirmed)
        #expect(await harness.recorder.wait { $0.running == 1 })
        try await harness.publish("quick", on: connection)
        let passed = await harness.recorder.wait(for: .seconds(2)) { $0.calls(for: "quick").count == 1 && $0.finished == 1 }
        #expect(passed, "the second message was handled while the first handler held its thread")
        #expect(harness.recorder.snapshot.running == 1, "the blocking handler was still running then")
        #expect(await harness.recorder.wait { $0.finished == 2 })
        #expect(await harness.stopAndWait() == .stopped)
        #expect(try await harness.messageCount(harness.queue, on: connection) == 0)
        await harness.cleanUp()
        await connection.close()
    }

    @Test func whenTheRetryCopyIsRefusedTheInputIsParkedNotRequeuedForever() async throws {
        let harness = try EngineHarness(queueSettings: """
            [queues.retry]
            max_attempts = 3
            delay = "300ms"
            """)
        let connection = try await TestBroker.connect()
        try await harness.start()
        // The delay queue disappears behind warren's back: the retry copy comes back unroutable,
        // and would come back unroutable on every redelivery.
        try await TestBroker.deleteQueue("\(harness.queue).retry.300ms")
        try await harness.publish("gated", test: "fail", headers: ["x-test-always": true], on: connection)
        let parked = try await harness.drainParked(expecting: 1, on: connection)
        #expect(await harness.stopAndWait() == .stopped)
        #expect(parked.first?.properties.headers?["x-warren-reason"] == .string("publish_failed"))
        #expect(parked.first?.properties.headers?["x-warren-error"]?.stringValue?.contains("retry copy not published") == true)
        #expect(harness.recorder.snapshot.calls(for: "gated").count == 1, "one run, no requeue loop")
        #expect(try await harness.messageCount(harness.queue, on: connection) == 0, "the input was acked once its copy was parked")
        await harness.cleanUp()
        await connection.close()
    }

    @Test func aGracefulStopLetsFiftySlowHandlersFinishAndAcksThemAll() async throws {
        let harness = try EngineHarness(queueSettings: """
            prefetch = 50
            concurrency = 50
            shutdown_timeout = "20s"
            """)
        let connection = try await TestBroker.connect()
        // Queued before the engine starts, so all fifty arrive at once and run together.
        try await connection.declareQueue(QueueDeclaration(name: harness.queue, durable: false, arguments: ["x-queue-type": "classic"]))
        let publisher = try await connection.openPublisher()
        for index in 0..<50 {
            let properties = BasicProperties(headers: ["x-test-sleep-ms": 2000], messageID: "slow\(index)")
            #expect(try await publisher.publish(routingKey: harness.queue, body: [1], properties: properties) == .confirmed)
        }
        try await harness.start()
        #expect(await harness.recorder.wait { $0.running == 50 })
        #expect(await harness.stopAndWait() == .stopped)
        #expect(harness.recorder.snapshot.finished == 50)
        // The engine closed its connection: anything unacked would be back in the queue.
        #expect(try await harness.messageCount(harness.queue, on: connection) == 0)
        await harness.cleanUp()
        await connection.close()
    }

    @Test func aHandlerThatOverrunsItsTimeoutFailsAndIsParkedOnceAttemptsRunOut() async throws {
        let harness = try EngineHarness(queueSettings: """
            handler_timeout = "300ms"
            [queues.retry]
            max_attempts = 2
            delay = "200ms"
            """)
        let connection = try await TestBroker.connect()
        try await harness.start()
        try await harness.publish("slow", headers: ["x-test-sleep-ms": 5000], on: connection)
        let parked = try await harness.drainParked(expecting: 1, on: connection)
        #expect(await harness.stopAndWait() == .stopped)
        #expect(harness.recorder.snapshot.calls(for: "slow").map(\.attempt) == [1, 2])
        let headers = parked.first?.properties.headers
        #expect(headers?["x-warren-reason"] == .string("attempts_exhausted"))
        #expect(headers?["x-warren-error"] == .string("timeout after 300ms"))
        await harness.cleanUp()
        await connection.close()
    }

    @Test func deadLetterBrokerRejectsToTheQueuesOwnDeadLetterExchange() async throws {
        let queue = TestBroker.uniqueName("dlx")
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: "\(queue).broker-dlq", durable: false))
        let harness = try EngineHarness(queueSettings: """
            ack_policy = "reject_on_error"
            dead_letter = "broker"
            arguments = { "x-dead-letter-exchange" = "", "x-dead-letter-routing-key" = "\(queue).broker-dlq" }
            """, queue: queue)
        try await harness.start()
        try await harness.publish("rejected", test: "fail", on: connection)
        let consumer = try await connection.consume(ConsumeOptions(queue: "\(queue).broker-dlq", prefetch: 1))
        let dead = try #require(try await collect(1, from: consumer).first)
        consumer.ack(dead)
        try await consumer.close()
        #expect(await harness.stopAndWait() == .stopped)
        #expect(dead.properties.messageID == "rejected")
        #expect(dead.properties.headers?["x-death"] != nil, "dead-lettered by the broker, not copied by warren")
        #expect(try await harness.messageCount(harness.queue, on: connection) == 0)
        try await connection.deleteQueue("\(queue).broker-dlq")
        await harness.cleanUp()
        await connection.close()
    }

    @Test func deadLetterDropAcksTheFailedMessage() async throws {
        let harness = try EngineHarness(queueSettings: """
            ack_policy = "reject_on_error"
            dead_letter = "drop"
            """)
        let connection = try await TestBroker.connect()
        try await harness.start()
        try await harness.publish("dropped", test: "fail", on: connection)
        #expect(await harness.recorder.wait { $0.finished == 1 })
        #expect(await harness.stopAndWait() == .stopped)
        #expect(try await harness.messageCount(harness.queue, on: connection) == 0, "acked")
        #expect(!harness.declaredQueues.contains("\(harness.queue).dead"), "no parking queue is declared for drop")
        await harness.cleanUp()
        await connection.close()
    }

    @Test func aMessageAboveMaxBodySizeIsParkedWithoutRunningTheHandler() async throws {
        let harness = try EngineHarness(queueSettings: "max_body_size = \"1KiB\"")
        let connection = try await TestBroker.connect()
        try await harness.start()
        try await harness.publish("big", on: connection, body: [UInt8](repeating: 7, count: 2048))
        let parked = try await harness.drainParked(expecting: 1, on: connection)
        #expect(await harness.stopAndWait() == .stopped)
        #expect(harness.recorder.snapshot.calls.isEmpty)
        #expect(parked.first?.properties.headers?["x-warren-reason"] == .string("too_large"))
        #expect(parked.first?.body.count == 2048)
        await harness.cleanUp()
        await connection.close()
    }
}

}

/// Counts deliveries per message id, for the volume test.
final class CountingHandler: MessageHandler {
    let counts = Mutex<[String: Int]>([:])
    let total = Atomic<Int>(0)
    let target: Int
    let reached = Latch()

    init(target: Int) { self.target = target }

    func handle(_ input: HandlerInput) async -> HandlerOutcome {
        counts.withLock { $0[input.properties.messageID?.lossyText ?? "", default: 0] += 1 }
        if total.add(1, ordering: .relaxed).newValue >= target { reached.set() }
        return .success(.none)
    }
}

extension EngineSuites {
@Suite("Engine volume against RabbitMQ", .timeLimit(.minutes(5)))
struct EngineVolumeTests {
    @Test func oneHundredThousandMessagesThroughEightQueuesAreAllAckedNoneTwice() async throws {
        let queues = (0..<8).map { _ in TestBroker.uniqueName("volume") }
        let source = """
            [broker]
            urls = ["\(TestBroker.url)"]
            [defaults]
            prefetch = 500
            concurrency = 8
            """ + queues.map { "\n[[queues]]\nname = \"\($0)\"\ndurable = false\nretry = false\ndead_letter = \"drop\"\nhandler = \"count\"\n" }.joined()
            + "\n[handlers.count]\nkind = \"noop\"\n"
        let configuration = try ConfigurationLoader.parse(source: source, file: "volume.toml")
        let counter = CountingHandler(target: 100_000)
        var logger = Logger(label: "warren.volume")
        logger.logLevel = .error
        let engine = Engine(configuration: configuration, logger: logger) { _ in counter }
        let stop = Latch()
        let ready = Latch()
        let run = Task { await engine.run(stop: stop, ready: ready) }
        await ready.wait()

        let perQueue = 12_500
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher(PublisherOptions(maxInFlight: 2000, confirmTimeout: .seconds(60)))
        let confirmed = try await withThrowingTaskGroup(of: Int.self) { group in
            for worker in 0..<400 {
                group.addTask {
                    var confirmed = 0
                    var index = worker
                    while index < perQueue * queues.count {
                        let queue = queues[index % queues.count]
                        if try await publisher.publish(routingKey: queue, body: [0x61], properties: BasicProperties(messageID: "v\(index)")) == .confirmed {
                            confirmed += 1
                        }
                        index += 400
                    }
                    return confirmed
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(confirmed == 100_000)
        await sleep(for: .seconds(120), unless: counter.reached)
        #expect(counter.reached.isSet, "all 100,000 handled within two minutes")
        stop.set()
        #expect(await run.value == .stopped)
        let counts = counter.counts.withLock { $0 }
        #expect(counts.count == 100_000, "every message handled")
        #expect(counts.values.allSatisfy { $0 == 1 }, "none twice: \(counts.values.filter { $0 > 1 }.count) duplicates")
        for queue in queues {
            #expect(try await connection.declareQueue(QueueDeclaration(name: queue, passive: true)).messageCount == 0)
        }
        for name in TopologyPlan(configuration).queues.map(\.declaration.name) { try? await TestBroker.deleteQueue(name) }
        await connection.close()
    }
}
}
