import AMQP
import Foundation
import TestSupport
import Testing

extension FaultInjectionTests {
    /// Guarantees 1 and 2: handlers that crash, hang past their timeout or fail 30 % of the
    /// time never lose a message and never loop: every message is processed or parked after
    /// `max_attempts`, with the reason attached.
    @Suite("crashing, hanging and flaky handlers", .timeLimit(.minutes(2)))
    struct HandlerFaults {
        /// Message n: n % 25 == 0 always exits 3 (crash); n % 25 == 1 always hangs past the
        /// timeout; n % 25 == 2 hangs on its first attempt only; the rest fail with exit 1 when
        /// (7n + 13·attempt) % 10 < 3 (30 %, deterministic per message and attempt).
        static let script = """
            #!/bin/sh
            n=${WARREN_MESSAGE_ID#m-}
            attempt=$WARREN_ATTEMPT
            case $((n % 25)) in
              0) echo "crash on $n" >&2; exit 3 ;;
              1) exec sleep 30 ;;
              2) if [ "$attempt" -eq 1 ]; then exec sleep 30; fi ;;
            esac
            if [ $(( (n * 7 + attempt * 13) % 10 )) -lt 3 ]; then exit 1; fi
            echo "$n $attempt" >> "$RECORD"
            """

        @Test func crashingHangingAndFlakyHandlersEndProcessedOrParked() async throws {
            try await FaultScenario.run("handler-faults", count: 200) { scenario in
                let scriptPath = "\(scenario.directory)/handler.sh"
                try writeExecutable(Self.script, to: scriptPath)
                let config = """
                    \(scenario.brokerSection())

                    [[queues]]
                    name = "\(scenario.queue)"
                    declare = true
                    durable = true
                    handler = "flaky"
                    prefetch = 16
                    concurrency = 8

                    [queues.retry]
                    max_attempts = 3
                    delay = "100ms"
                    multiplier = 2.0
                    max_delay = "400ms"

                    [handlers.flaky]
                    kind = "exec"
                    command = ["\(scriptPath)"]
                    env = { RECORD = "\(scenario.recordPath)" }
                    timeout = "1s"
                    """
                let begin = ContinuousClock.now
                let warren = try await scenario.startWarren(config)
                try await scenario.publish(0..<scenario.count)
                let parkedQueue = "\(scenario.queue).dead"
                // Done when processed + parked cover every message (parked counted by the broker).
                #expect(await scenario.wait(.seconds(90)) {
                    let parked = await scenario.broker.queueCounts()[parkedQueue]?.messages ?? 0
                    return Set(scenario.processed()).count + parked >= scenario.count
                }, "log tail:\n\(warren.output.suffix(3000))")
                // No repair to recover from: recover_ms is the time until every message settled.
                scenario.noteRecovery(ContinuousClock.now - begin)
                #expect(await scenario.waitForQueueDrained())
                await scenario.stop(warren)
                let parked = try await scenario.parkedMessages(parkedQueue)
                let numbers = parked.compactMap { Int(String(decoding: $0.body, as: UTF8.self)) }
                for delivery in parked {
                    guard let n = Int(String(decoding: delivery.body, as: UTF8.self)) else { continue }
                    let headers = delivery.properties.headers
                    #expect(headers?["x-warren-reason"] == .string("attempts_exhausted"), "message \(n): \(String(describing: headers))")
                    if n % 25 == 0 { #expect(headers?["x-warren-error"] == .string("exit code 3"), "message \(n)") }
                    if n % 25 == 1 {
                        let error = headers?["x-warren-error"].map { "\($0)" } ?? ""
                        #expect(error.contains("timeout"), "message \(n): \(error)")
                    }
                }
                let always = (0..<scenario.count).filter { $0 % 25 == 0 || $0 % 25 == 1 }
                #expect(Set(always).isSubset(of: Set(numbers)), "crashing and hanging messages must be parked")
                #expect(Set(scenario.processed()).isDisjoint(with: always))
                scenario.account(processed: scenario.processed(), parked: numbers)
            }
        }
    }
}
