import AMQP
import Foundation
import Testing

extension FaultInjectionTests {
    /// Guarantee 4: the consumed queue deleted under a running warren (the broker cancels the
    /// consumer) is recovered from: warren owns the queue (`declare = true`), so it declares it
    /// again and consumes again. Messages published after the queue exists again are all
    /// processed. (What sat in the queue when it was deleted is destroyed by the operator's
    /// delete, so the first batch is fully processed before the delete.)
    @Suite("consumed queue deleted and re-created", .timeLimit(.minutes(2)))
    struct QueueDeletion {
        @Test func queueDeletedAndRecreatedByTheOperatorIsConsumedAgain() async throws {
            try await Self.deletion("queue-recreated", operatorRecreates: true)
        }

        @Test func queueDeletedIsRedeclaredByWarrenAndConsumedAgain() async throws {
            try await Self.deletion("queue-deleted", operatorRecreates: false)
        }

        static func deletion(_ name: String, operatorRecreates: Bool) async throws {
            try await FaultScenario.run(name, count: 400) { scenario in
                let half = scenario.count / 2
                let warren = try await scenario.startWarren(scenario.fileConfig(prefetch: 10, concurrency: 2))
                try await scenario.publish(0..<half)
                #expect(await scenario.waitForProcessed(atLeast: half))

                let connection = try await scenario.broker.connect()
                _ = try await connection.deleteQueue(scenario.queue)
                let repaired = ContinuousClock.now
                if operatorRecreates {
                    // Declared as warren declares it, so warren's own re-declare is equivalent.
                    _ = try await connection.declareQueue(QueueDeclaration(name: scenario.queue, durable: true, arguments: ["x-queue-type": "classic"]))
                }
                await connection.close()
                #expect(await warren.waitForLog("consumer cancelled by the broker", timeout: .seconds(10)),
                        "log tail:\n\(warren.output.suffix(2000))")
                // Consuming again = that one consumer re-subscribed (the session goes on: no second
                // `ready`) and the broker showing a consumer on the queue.
                #expect(await warren.waitForLog("consumer up again", timeout: .seconds(30)),
                        "warren must consume the queue again; log tail:\n\(warren.output.suffix(2000))")
                #expect(scenario.occurrences(of: "event=ready", in: warren) == 1, "the session restarted instead of one consumer")
                #expect(await scenario.wait(.seconds(30)) { await Self.consumers(of: scenario) == 1 })

                try await scenario.publish(half..<scenario.count)
                #expect(await scenario.measureRecovery(since: repaired))
                #expect(await scenario.waitForProcessed(atLeast: scenario.count))
                #expect(await scenario.waitForQueueDrained())
                await scenario.stop(warren)
                scenario.account(processed: scenario.processed(), parked: try await scenario.drain("\(scenario.queue).dead"))
            }
        }

        /// The queue's consumer count from a passive declare (nil while the queue is absent).
        static func consumers(of scenario: FaultScenario) async -> UInt32? {
            guard let connection = try? await scenario.broker.connect() else { return nil }
            let state = try? await connection.declareQueue(QueueDeclaration(name: scenario.queue, passive: true))
            await connection.close()
            return state?.consumerCount
        }
    }
}
