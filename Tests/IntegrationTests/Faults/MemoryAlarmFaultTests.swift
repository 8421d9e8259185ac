import AMQP
import Foundation
import Testing

extension FaultInjectionTests {
    /// Guarantees 1 and 4 under a resource alarm: while the broker blocks publishers, warren's
    /// republishes cannot be confirmed, so the inputs must stay unacked or be requeued (never
    /// acked), consuming must resume by itself, and once the alarm clears every message ends
    /// up in the target queue. Runs on the suite's own node (an alarm blocks every publisher).
    @Suite("memory alarm while republishing", .enabled(if: FaultNode.isAvailable, "no rabbitmq-server to start a second node"), .timeLimit(.minutes(2)))
    struct MemoryAlarm {
        @Test func memoryAlarmWhileRepublishingLosesNothingAndResumes() async throws {
            try await FaultNode.shared.ensureRunning()
            let node = FaultNode.broker
            try await FaultScenario.run("memory-alarm", broker: node, count: 500) { scenario in
                let target = "\(scenario.queue).target"
                let connection = try await node.connect()
                _ = try await connection.declareQueue(QueueDeclaration(name: target, durable: true))
                // The source queue as warren declares it, so the test can fill it before warren runs.
                _ = try await connection.declareQueue(QueueDeclaration(name: scenario.queue, durable: true, arguments: ["x-queue-type": "classic"]))
                await connection.close()
                let config = """
                    \(scenario.brokerSection())

                    [publisher]
                    confirm_timeout = "2s"

                    [[queues]]
                    name = "\(scenario.queue)"
                    declare = true
                    durable = true
                    handler = "shovel"
                    prefetch = 10
                    concurrency = 2

                    [handlers.shovel]
                    kind = "republish"
                    exchange = ""
                    routing_key = "\(target)"
                    """
                // The alarm goes up before warren starts: republishing 500 messages takes less time
                // than one `rabbitmqctl` call, so an alarm raised mid-stream would land after the end.
                try await scenario.publish(0..<scenario.count)
                let alarm = await node.ctl(["set_vm_memory_high_watermark", "0.0001"])
                #expect(alarm.status == 0, "\(alarm.output)")
                let warren: RunningWarren
                do {
                    warren = try await scenario.startWarren(config)
                } catch {
                    _ = await node.ctl(["set_vm_memory_high_watermark", "0.4"])
                    throw error
                }
                let blocked = await warren.waitForLog("connection blocked by the broker", timeout: .seconds(20))
                #expect(blocked, "log tail:\n\(warren.output.suffix(2000))")
                // The alarm lasts past the confirm timeout (2 s): a timed-out republish is a
                // transient failure, so the input goes back and the queue backs off.
                #expect(await warren.waitForLog("queue backing off", timeout: .seconds(20)), "log tail:\n\(warren.output.suffix(2000))")
                try? await Task.sleep(for: .seconds(2))
                let duringAlarm = await scenario.messages(in: target) ?? 0
                _ = await node.ctl(["set_vm_memory_high_watermark", "0.4"])
                let cleared = ContinuousClock.now
                #expect(duringAlarm < scenario.count, "nothing can be confirmed while publishers are blocked (\(duringAlarm) moved)")
                #expect(await scenario.wait(.seconds(30)) { (await scenario.messages(in: target) ?? 0) > duringAlarm })
                scenario.noteRecovery(ContinuousClock.now - cleared)
                #expect(await warren.waitForLog("connection unblocked", timeout: .seconds(10)))
                #expect(warren.process.isRunning, "consuming continues through the alarm")

                #expect(await scenario.wait(.seconds(60)) { (await scenario.messages(in: target) ?? 0) >= scenario.count },
                        "log tail:\n\(warren.output.suffix(3000))")
                #expect(await scenario.waitForQueueDrained())
                #expect(warren.process.isRunning)
                await scenario.stop(warren)
                let moved = try await scenario.drain(target)
                scenario.account(processed: moved, parked: try await scenario.drain("\(scenario.queue).dead"))
            }
        }
    }
}
