import Foundation
import Glibc
import Testing

extension FaultInjectionTests {
    /// Guarantee 1: `kill -9` of warren loses nothing; the broker redelivers what was unacked.
    @Suite("kill -9 of warren", .timeLimit(.minutes(2)))
    struct WarrenKill {
        @Test func killNineMidStreamThenRestartProcessesEveryMessage() async throws {
            try await FaultScenario.run("warren-kill9", count: 1000) { scenario in
                let config = scenario.fileConfig(prefetch: 20, concurrency: 2)
                let first = try await scenario.startWarren(config)
                try await scenario.publish(0..<scenario.count)
                #expect(await scenario.waitForProcessed(atLeast: scenario.count / 5))
                first.signal(SIGKILL)
                _ = await first.waitForExit(timeout: .seconds(10))
                let atKill = Set(scenario.processed()).count
                #expect(atKill < scenario.count, "the kill must land mid-stream (\(atKill) of \(scenario.count) done)")

                let restarted = ContinuousClock.now
                let second = try await scenario.startWarren(config)
                #expect(await scenario.measureRecovery(since: restarted))
                #expect(await scenario.waitForProcessed(atLeast: scenario.count))
                #expect(await scenario.waitForQueueDrained())
                await scenario.stop(second)
                scenario.account(processed: scenario.processed(), parked: try await scenario.drain("\(scenario.queue).dead"))
            }
        }
    }
}
