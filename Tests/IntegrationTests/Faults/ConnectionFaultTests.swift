import Foundation
import TestSupport
import Testing

extension FaultInjectionTests {
    /// Guarantee 4: a network that goes silent (heartbeats must notice) or resets connections
    /// at random points is recovered from, and nothing is lost (guarantee 1).
    @Suite("black-holed and cut connections", .timeLimit(.minutes(2)))
    struct ConnectionFaults {
        @Test func blackHoleForThreeHeartbeatsIsDetectedAndRecovered() async throws {
            let proxy = try LoopbackProxy(upstreamHost: TestBroker.endpoint.host, upstreamPort: TestBroker.endpoint.port)
            defer { proxy.stop() }
            try await FaultScenario.run("blackhole", count: 1000) { scenario in
                let url = "amqp://guest:guest@127.0.0.1:\(proxy.port)/"
                let warren = try await scenario.startWarren(scenario.fileConfig(url: url, heartbeat: "2s", prefetch: 10, concurrency: 1))
                try await scenario.publish(0..<scenario.count)
                #expect(await scenario.waitForProcessed(atLeast: scenario.count / 5))
                proxy.freeze()
                let atFault = Set(scenario.processed()).count
                // The fault itself lasts three heartbeat intervals: a duration, not a synchronisation.
                try await Task.sleep(for: .seconds(6))
                #expect(warren.output.contains("connection lost"), "missed heartbeats must be detected within 3 × heartbeat; log tail:\n\(warren.output.suffix(2000))")
                let repaired = ContinuousClock.now
                proxy.thaw()
                #expect(atFault < scenario.count, "the fault must land mid-stream (\(atFault) of \(scenario.count) done)")
                #expect(await scenario.measureRecovery(since: repaired))
                #expect(await scenario.waitForProcessed(atLeast: scenario.count))
                #expect(await scenario.waitForQueueDrained())
                await scenario.stop(warren)
                scenario.account(processed: scenario.processed(), parked: try await scenario.drain("\(scenario.queue).dead"))
            }
        }

        @Test func connectionsCutAtRandomPointsLoseNothing() async throws {
            let proxy = try LoopbackProxy(upstreamHost: TestBroker.endpoint.host, upstreamPort: TestBroker.endpoint.port)
            defer { proxy.stop() }
            try await FaultScenario.run("random-cuts", count: 1000) { scenario in
                let url = "amqp://guest:guest@127.0.0.1:\(proxy.port)/"
                let warren = try await scenario.startWarren(scenario.fileConfig(url: url, heartbeat: "2s", prefetch: 10, concurrency: 2))
                try await scenario.publish(0..<scenario.count)
                // Random but reproducible: cut points from a fixed seed, as processed counts.
                var generator = SplitMix64(seed: 0x5eed_fa17)
                let cutPoints = (0..<3).map { _ in Int(generator.next() % UInt64(scenario.count * 7 / 10)) + scenario.count / 10 }.sorted()
                for (index, point) in cutPoints.enumerated() {
                    #expect(await scenario.waitForProcessed(atLeast: point))
                    proxy.cut()
                    let repaired = ContinuousClock.now
                    #expect(await warren.waitForLog("connection lost", timeout: .seconds(10)))
                    #expect(await scenario.wait(.seconds(30)) { scenario.occurrences(of: "event=ready", in: warren) >= index + 2 },
                            "warren must be consuming again after cut \(index + 1)")
                    #expect(await scenario.measureRecovery(since: repaired))
                }
                #expect(await scenario.waitForProcessed(atLeast: scenario.count))
                #expect(await scenario.waitForQueueDrained())
                await scenario.stop(warren)
                print("FAULT random-cuts at processed counts \(cutPoints)")
                scenario.account(processed: scenario.processed(), parked: try await scenario.drain("\(scenario.queue).dead"))
            }
        }
    }
}
