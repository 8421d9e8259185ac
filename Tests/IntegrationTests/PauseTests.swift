import AMQP
import Foundation
import TestSupport
import Testing

@testable import WarrenCore

/// Pausing a queue at runtime (the engine side of `warren ctl pause`), against RabbitMQ: the
/// consumer is cancelled, running handlers finish and are acked, prefetched deliveries go back
/// unrun, new messages stay ready on the broker, the pause outlives a reload, and resume
/// consumes everything exactly once.
@Suite("Pause and resume against RabbitMQ", .requiresBroker, .timeLimit(.minutes(2)))
struct PauseTests {
    static func config(_ queue: String, prefetch: Int, extraQueue: String? = nil) throws -> Configuration {
        var source = """
            [broker]
            urls = ["\(TestBroker.url)"]
            connection_name = "warren-pause-tests"

            [handlers.scripted]
            kind = "noop"

            [[queues]]
            name = "\(queue)"
            durable = false
            handler = "scripted"
            prefetch = \(prefetch)
            concurrency = 2
            retry = false

            """
        if let extraQueue {
            source += """
                [[queues]]
                name = "\(extraQueue)"
                durable = false
                handler = "scripted"
                retry = false

                """
        }
        return try ConfigurationLoader.parse(source: source, file: "pause-test.toml")
    }

    static func queueState(_ name: String, _ connection: AMQPConnection) async throws -> QueueDeclareResult {
        try await connection.declareQueue(QueueDeclaration(name: name, passive: true))
    }

    /// Polls the broker's view until `condition` holds (true) or 20 s pass (false).
    static func waitFor(
        _ name: String, _ connection: AMQPConnection, _ condition: (QueueDeclareResult) -> Bool
    ) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            if condition(try await queueState(name, connection)) { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    @Test func pauseLetsRunningHandlersFinishGivesBackTheRestOutlivesAReloadAndResumeHandlesEachOnce() async throws {
        let queue = TestBroker.uniqueName("pause")
        let added = TestBroker.uniqueName("pause-added")
        let before = try Self.config(queue, prefetch: 4)
        let after = try Self.config(queue, prefetch: 8, extraQueue: added)  // the paused queue changes too
        let status = EngineStatus()
        let controls = QueueControls(status: status)
        let recorder = Recorder()
        let log = CapturedLog()
        let engine = Engine(
            configuration: before, logger: log.logger(level: .info),
            handlerOverride: { $0.name == "scripted" ? ScriptedHandler(recorder: recorder) : nil }, status: status, controls: controls)
        let (stop, ready, reloads) = (Latch(), Latch(), ConfigurationReloads())
        let run = Task { await engine.run(stop: stop, ready: ready, reloads: reloads) }
        await ready.wait()
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        func publish(_ id: String, held: Bool = false) async throws {
            var headers: FieldTable = ["x-test": "success"]
            if held { headers["x-test-hold"] = true }
            let properties = BasicProperties(headers: headers, messageID: AMQPString(id))
            #expect(try await publisher.publish(routingKey: queue, body: Array("x".utf8), properties: properties) == .confirmed)
        }

        // Four held messages: two run (concurrency 2) until released, two wait in the prefetch
        // window.
        for index in 0..<4 { try await publish("slow\(index)", held: true) }
        #expect(await recorder.wait { $0.running == 2 })
        #expect(try controls.pause(queue))
        recorder.release.set()
        #expect(await recorder.wait { $0.finished == 2 }, "the two running handlers finish")
        #expect(try await Self.waitFor(queue, connection) { $0.consumerCount == 0 && $0.messageCount == 2 },
            "no consumer; the two not started are ready on the broker again")
        #expect(status.snapshot.isReady, "a paused queue keeps warren ready")
        #expect(recorder.snapshot.calls.count == 2, "the prefetched ones did not run")

        reloads.submit(after)
        #expect(await log.wait(for: "configuration reloaded"))
        #expect(await log.wait { $0.message == "consumer up" && $0.metadata[LogKeys.queue] == added } != nil)
        for index in 0..<3 { try await publish("new\(index)") }
        #expect(try await Self.waitFor(queue, connection) { $0.consumerCount == 0 && $0.messageCount == 5 },
            "still paused after the reload: new messages stay ready")
        #expect(controls.report().first { $0.name == queue }?.heldBy == .operator)

        #expect(try controls.resume(queue))
        #expect(await recorder.wait { $0.finished == 7 })
        #expect(try await Self.waitFor(queue, connection) { $0.consumerCount == 1 && $0.messageCount == 0 })
        let ids = recorder.snapshot.calls.map(\.messageID)
        #expect(ids.count == 7 && Set(ids).count == 7, "each message handled exactly once: \(ids)")

        stop.set()
        #expect(await run.value == .stopped)
        await connection.close()
        for name in [queue, added] {
            try? await TestBroker.deleteQueue(name)
            try? await TestBroker.deleteQueue("\(name).dead")
        }
    }
}
