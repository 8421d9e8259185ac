import AMQP
import Foundation
import Logging
import TestSupport
import Testing
import WarrenCore

/// A queue exclusive to another connection (405 RESOURCE_LOCKED) is the broker's state, not a
/// mistake in the file: the old connection of a crashed warren holds it until the broker
/// notices. It must never end in exit 78, which tells systemd not to restart.
extension EngineSuites {
    @Suite("Transient topology refusals against RabbitMQ", .timeLimit(.minutes(2)))
    struct TransientRefusalTests {
        @Test func anExclusiveQueueHeldByAnotherConnectionIsRetriedUntilItIsFree() async throws {
            let harness = try EngineHarness()
            let holder = try await TestBroker.connect()
            try await holder.declareQueue(QueueDeclaration(name: harness.queue, durable: false, exclusive: true))
            let log = CapturedLog()
            let recorder = harness.recorder
            let engine = Engine(configuration: harness.configuration, logger: log.logger(level: .info)) { entry in
                entry.name == "scripted" ? ScriptedHandler(recorder: recorder) : nil
            }
            let stop = Latch()
            let ready = Latch()
            async let outcome = engine.run(stop: stop, ready: ready)

            let refused = await log.wait(for: "topology refused for now, retrying")
            #expect(refused)
            #expect(!ready.isSet)
            // The exclusive queue goes with its connection; the next attempt declares it.
            await holder.close()
            await sleep(for: .seconds(30), unless: ready)
            #expect(ready.isSet)
            stop.set()
            #expect(await outcome == .stopped)
            await harness.cleanUp()
        }
    }
}

extension CommandLineTests {
    @Test func checkConnectExitsUnavailableNotConfigWhenAnotherConnectionHoldsTheQueue() async throws {
        let queue = TestBroker.uniqueName("locked")
        let holder = try await TestBroker.connect()
        try await holder.declareQueue(QueueDeclaration(name: queue, durable: false, exclusive: true))
        let config = try WarrenProcess.ConfigFile(WarrenProcess.config(queue: queue))
        defer { config.remove() }
        let result = try await WarrenProcess.run(["check", "--config", config.path, "--connect"])
        await holder.close()
        await Self.deleteWarrenQueues(queue)
        #expect(result.status == 69, "stderr: \(result.stderr)")
        #expect(result.stderr.contains("exclusive to another connection"), "stderr: \(result.stderr)")
    }
}
