import AMQP
import Foundation
import Glibc
import Logging
import TestSupport
import Testing
import WarrenCore

@Suite("Consumer recovery and reload against RabbitMQ", .requiresBroker, .timeLimit(.minutes(2)))
struct RecoveryAndReloadTests {
    static func config(_ queues: [String], file: String = "recovery-test.toml", name: String = "warren-recovery-tests") throws -> Configuration {
        var source = """
            [broker]
            urls = ["\(TestBroker.url)"]
            connection_name = "\(name)"
            reconnect_initial_delay = "100ms"
            reconnect_max_delay = "1s"

            [handlers.scripted]
            kind = "noop"

            """
        for queue in queues {
            source += """
                [[queues]]
                name = "\(queue)"
                durable = false
                handler = "scripted"
                [queues.retry]
                delay = "100ms"

                """
        }
        return try ConfigurationLoader.parse(source: source, file: file)
    }

    /// An engine with the scripted handler behind "scripted", logging into a `CapturedLog`;
    /// returns once it is ready.
    static func start(
        _ configuration: Configuration, reloads: ConfigurationReloads = ConfigurationReloads()
    ) async -> (Recorder, CapturedLog, Latch, Task<Engine.Outcome, Never>) {
        let recorder = Recorder()
        let log = CapturedLog()
        let engine = Engine(configuration: configuration, logger: log.logger(level: .info)) { entry in
            entry.name == "scripted" ? ScriptedHandler(recorder: recorder) : nil
        }
        let stop = Latch()
        let ready = Latch()
        let run = Task { await engine.run(stop: stop, ready: ready, reloads: reloads) }
        await ready.wait()
        return (recorder, log, stop, run)
    }

    static func publish(_ id: String, to queue: String, on connection: AMQPConnection) async throws {
        let publisher = try await connection.openPublisher()
        #expect(try await publisher.publish(routingKey: queue, body: Array("x".utf8), properties: BasicProperties(messageID: AMQPString(id))) == .confirmed)
    }

    static func delete(_ configuration: Configuration) async {
        for name in TopologyPlan(configuration).queues.map(\.declaration.name) { try? await TestBroker.deleteQueue(name) }
    }

    /// A consumer the broker cancels is recovered; the other queues keep consuming on
    /// the same connection (the session is not restarted).
    @Test func aDeletedQueueIsRedeclaredAndResubscribedWhileTheOtherQueueKeepsItsConsumer() async throws {
        let (deleted, other) = (TestBroker.uniqueName("recover-a"), TestBroker.uniqueName("recover-b"))
        let configuration = try Self.config([deleted, other])
        let (recorder, log, stop, run) = await Self.start(configuration)
        let connection = try await TestBroker.connect()

        try await TestBroker.deleteQueue(deleted)
        #expect(await log.wait(for: "consumer up again"), "the cancelled consumer was not re-subscribed")
        try await Self.publish("after-delete", to: deleted, on: connection)
        try await Self.publish("other", to: other, on: connection)
        #expect(await recorder.wait { Set($0.calls.map(\.messageID)) == ["after-delete", "other"] })

        stop.set()
        #expect(await run.value == .stopped)
        #expect(log.matching("connection lost, reconnecting").isEmpty, "the session restarted instead of one consumer")
        #expect(log.matching("consumer ended; re-subscribing").first?.metadata[LogKeys.queue] == deleted)
        await connection.close()
        await Self.delete(configuration)
    }

    /// A lost publisher connection is re-established on its own: the consumers go on (no
    /// session restart, so no redelivery of what they hold) and retries publish again after it.
    @Test func aLostPublisherConnectionIsReconnectedWithoutRestartingTheConsumers() async throws {
        let queue = TestBroker.uniqueName("publisher-loss")
        let name = "warren-publisher-loss-\(UUID().uuidString.prefix(8))"
        let configuration = try Self.config([queue], name: name)
        let (recorder, log, stop, run) = await Self.start(configuration)

        #expect(await BrokerControl.closeConnections(named: "\(name) publisher") == 1)
        #expect(await log.wait(for: "publisher connection up again"), "the publisher connection was not re-established")
        // The first attempt fails: its retry copy goes out on the new publisher connection.
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        let properties = BasicProperties(headers: ["x-test": "fail"], messageID: "after-loss")
        #expect(try await publisher.publish(routingKey: queue, body: Array("x".utf8), properties: properties) == .confirmed)
        #expect(await recorder.wait { $0.calls(for: "after-loss").map(\.attempt) == [1, 2] && $0.finished == 2 })

        stop.set()
        #expect(await run.value == .stopped)
        #expect(log.matching("connection lost, reconnecting").isEmpty, "the whole session restarted")
        #expect(log.matching("consumer up").count == 1)
        await connection.close()
        await Self.delete(configuration)
    }

    /// A reload starts added queues; the queue that stays loses no message across it.
    @Test func aReloadStartsAnAddedQueueAndLosesNothingOnTheQueueThatStays() async throws {
        let (kept, added) = (TestBroker.uniqueName("reload-kept"), TestBroker.uniqueName("reload-added"))
        let before = try Self.config([kept], file: "before.toml")
        let after = try Self.config([kept, added], file: "after.toml")
        let reloads = ConfigurationReloads()
        let (recorder, log, stop, run) = await Self.start(before, reloads: reloads)
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        // Slow messages are in flight when the reload comes: they finish and are acked, not
        // redelivered and run twice.
        for n in 0..<20 {
            let properties = BasicProperties(headers: ["x-test-sleep-ms": .int32(100), "x-test": "success"], messageID: "k\(n)")
            #expect(try await publisher.publish(routingKey: kept, body: Array("x".utf8), properties: properties) == .confirmed)
        }
        #expect(await recorder.wait { $0.calls.count >= 1 })
        reloads.submit(after)
        #expect(await log.wait(for: "configuration reloaded"))
        #expect(await log.wait { $0.message == "consumer up" && $0.metadata[LogKeys.queue] == added } != nil)
        try await Self.publish("a1", to: added, on: connection)
        #expect(await recorder.wait { snapshot in snapshot.calls.contains { $0.messageID == "a1" } && snapshot.finished >= 21 })

        stop.set()
        #expect(await run.value == .stopped)
        let ids = recorder.snapshot.calls.map(\.messageID)
        #expect(Set(ids) == Set((0..<20).map { "k\($0)" } + ["a1"]), "every message handled")
        #expect(ids.count == Set(ids).count, "no message handled twice")
        #expect(try await connection.declareQueue(QueueDeclaration(name: kept, passive: true)).messageCount == 0)
        await connection.close()
        await Self.delete(after)
    }

    /// SIGHUP with an invalid file is logged and ignored; warren keeps consuming.
    @Test func sighupWithAnInvalidFileKeepsTheRunningConfiguration() async throws {
        let queue = TestBroker.uniqueName("reload-invalid")
        let config = try WarrenProcess.ConfigFile(WarrenProcess.config(queue: queue))
        defer { config.remove() }
        let warren = try RunningWarren(config: config.path)
        #expect(await warren.waitForLog("event=ready"))
        try WarrenProcess.config(queue: queue, queueExtra: "prefetch = \"ten\"").write(toFile: config.path, atomically: true, encoding: .utf8)
        warren.signal(SIGHUP)
        #expect(await warren.waitForLog("reload refused: configuration invalid, keeping the running one"))
        #expect(warren.output.contains("queues[0].prefetch"))
        let connection = try await TestBroker.connect()
        try await Self.publish("still-consuming", to: queue, on: connection)
        // The noop handler acks it: the queue drains although the new file was refused.
        let deadline = ContinuousClock.now + .seconds(20)
        var left: UInt32 = 1
        while left > 0, ContinuousClock.now < deadline {
            left = try await connection.declareQueue(QueueDeclaration(name: queue, passive: true)).messageCount
            if left > 0 { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(left == 0)
        warren.signal(SIGTERM)
        #expect(await warren.waitForExit(timeout: .seconds(30)) == 0)
        await connection.close()
        await CommandLineTests.deleteWarrenQueues(queue)
    }
}
