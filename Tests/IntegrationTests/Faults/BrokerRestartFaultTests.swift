import Foundation
import Testing

extension FaultInjectionTests {
    /// Guarantees 1 and 4: the broker going away mid-stream (cleanly or killed) loses nothing,
    /// and warren reconnects and consumes again on its own. Runs on the suite's own node.
    @Suite("broker stopped and killed", .enabled(if: FaultNode.isAvailable, "no rabbitmq-server to start a second node"), .timeLimit(.minutes(3)))
    struct BrokerRestart {
        @Test func brokerStopAppAndStartAppMidStreamLosesNothing() async throws {
            try await FaultNode.shared.ensureRunning()
            try await Self.outage("broker-stop-app") {
                try await FaultNode.shared.stopApp()
            } repair: {
                try await FaultNode.shared.startApp()
            }
        }

        @Test func brokerKilledWithSIGKILLAndRestartedMidStreamLosesNothing() async throws {
            try await FaultNode.shared.ensureRunning()
            try await Self.outage("broker-kill9") {
                try await FaultNode.shared.killHard()
            } repair: {
                try await FaultNode.shared.start()
            }
        }

        /// Publishes 70 % of N, breaks the broker as soon as processing runs (a `rabbitmqctl`
        /// call takes about a second to land, by which time hundreds are done), repairs it once
        /// warren has noticed, publishes the rest, and checks that everything is processed.
        static func outage(_ name: String, fault: () async throws -> Void, repair: () async throws -> Void) async throws {
            try await FaultScenario.run(name, broker: FaultNode.broker, count: 1000) { scenario in
                let warren = try await scenario.startWarren(scenario.fileConfig(prefetch: 10, concurrency: 1))
                let early = scenario.count * 7 / 10
                try await scenario.publish(0..<early)
                #expect(await scenario.waitForProcessed(atLeast: 1))
                try await fault()
                let atFault = Set(scenario.processed()).count
                #expect(atFault < scenario.count, "the fault must land mid-stream (\(atFault) of \(scenario.count) done)")
                #expect(await warren.waitForLog("connection lost", timeout: .seconds(20)) || warren.output.contains("connection closed"),
                        "warren must notice the outage; log tail:\n\(warren.output.suffix(2000))")
                let repaired = ContinuousClock.now
                try await repair()
                try await scenario.publish(early..<scenario.count)
                #expect(await scenario.measureRecovery(since: repaired))
                #expect(await scenario.waitForProcessed(atLeast: scenario.count))
                #expect(await scenario.waitForQueueDrained())
                #expect(warren.process.isRunning, "warren must not exit because the broker went away")
                await scenario.stop(warren)
                scenario.account(processed: scenario.processed(), parked: try await scenario.drain("\(scenario.queue).dead"))
            }
        }
    }
}
