import AMQP
import Foundation
import Synchronization
import Testing

@testable import WarrenCore

/// `circuit_breaker` against RabbitMQ: a failing handler opens it within `min_runs` runs (plus
/// what was already running), the rest of the queue stays ready on the broker (not retried, not
/// parked), it probes one message at a time, and closes once the handler recovers.
@Suite("Circuit breaker against RabbitMQ", .requiresBroker, .timeLimit(.minutes(2)))
struct CircuitBreakerIntegrationTests {
    /// Fails every run while `healthy` is false; counts runs and successes.
    final class SwitchableHandler: MessageHandler {
        let healthy: Mutex<Bool>
        let recorder: Recorder
        let successes = Atomic<Int>(0)

        init(recorder: Recorder) {
            healthy = Mutex(false)
            self.recorder = recorder
        }

        func handle(_ input: HandlerInput) async -> HandlerOutcome {
            recorder.started(input)
            defer { recorder.finished() }
            guard healthy.withLock({ $0 }) else { return .failure(HandlerFailure("downstream unavailable", exitCode: 1)) }
            successes.add(1, ordering: .relaxed)
            return .success(.none)
        }
    }

    /// Every change of the queue's breaker state, in order, awaitable.
    final class CircuitHistory: Sendable {
        private let states = Mutex<[Bool]>([])
        let opened = Latch()
        let closedAfterOpening = Latch()

        init(_ status: EngineStatus, queue: String) {
            status.observe { [self] snapshot in
                let open = snapshot.circuitOpen.contains(queue)
                states.withLock { states in
                    guard states.last != open else { return }
                    states.append(open)
                }
                if open { opened.set() } else if opened.isSet { closedAfterOpening.set() }
            }
        }

        var changes: [Bool] { states.withLock { $0 } }
    }

    @Test func opensWithinMinRunsLeavesTheRestReadyProbesAndClosesOnceTheHandlerRecovers() async throws {
        let total = 60
        let minRuns = 5
        let concurrency = 2
        let harness = try EngineHarness(queueSettings: """
            ack_policy = "reject_on_error"
            retry = false
            prefetch = 4
            concurrency = \(concurrency)
            circuit_breaker = { failure_ratio = 0.5, min_runs = \(minRuns), window = "60s", open_for = "2s" }
            """)
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: harness.queue, durable: false))
        for index in 0..<total { try await harness.publish("m\(index)", on: connection) }
        let history = CircuitHistory(harness.status, queue: harness.queue)
        let handler = SwitchableHandler(recorder: harness.recorder)
        try await harness.start(handler: handler)

        await sleep(for: .seconds(30), unless: history.opened)
        #expect(history.opened.isSet, "the breaker opened")
        let runsWhenOpened = harness.recorder.snapshot.calls.count
        // The run that opened it is the min_runs-th; those already running may end after it.
        #expect(runsWhenOpened >= minRuns && runsWhenOpened <= minRuns + concurrency - 1, "\(runsWhenOpened) runs before it opened")

        // While open: no consumer, and what was not run is ready on the broker, neither retried
        // nor parked (each failed run parked its message: reject_on_error).
        var consistent = false
        let deadline = ContinuousClock.now + .seconds(20)
        while !consistent, ContinuousClock.now < deadline {
            let queue = try await connection.declareQueue(QueueDeclaration(name: harness.queue, passive: true))
            let parked = try await harness.messageCount("\(harness.queue).dead", on: connection)
            let runs = harness.recorder.snapshot.finished
            consistent = queue.consumerCount == 0 && Int(queue.messageCount) + runs == total && Int(parked) == runs
            if !consistent { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(consistent, "no consumer while open; ready + parked == published")
        #expect(harness.status.snapshot.isReady, "/readyz stays 200 while the breaker holds the queue")
        #expect(harness.controls.report().first?.heldBy == .breaker)

        // The handler recovers: the next probe succeeds, it closes, and the rest is handled.
        handler.healthy.withLock { $0 = true }
        await sleep(for: .seconds(30), unless: history.closedAfterOpening)
        #expect(history.closedAfterOpening.isSet, "a successful probe closed it")
        #expect(await harness.recorder.wait { $0.finished == total })
        let parked = try await harness.messageCount("\(harness.queue).dead", on: connection)
        #expect(handler.successes.load(ordering: .relaxed) + Int(parked) == total, "every message not parked was handled once")
        // Closed when the engine started (the observer's first call), then open, then closed.
        #expect(history.changes == [false, true, false])
        let drained = try await connection.declareQueue(QueueDeclaration(name: harness.queue, passive: true))
        #expect(drained.messageCount == 0 && drained.consumerCount == 1, "consuming again with a full consumer")

        await harness.stopAndWait()
        await connection.close()
        await harness.cleanUp()
    }

    @Test func verdictsDoNotOpenIt() async throws {
        let harness = try EngineHarness(queueSettings: """
            retry = false
            circuit_breaker = { failure_ratio = 0.5, min_runs = 3, window = "60s", open_for = "30s" }
            """)
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: harness.queue, durable: false))
        let count = 12
        for index in 0..<count { try await harness.publish("r\(index)", test: "verdict:reject", on: connection) }
        let history = CircuitHistory(harness.status, queue: harness.queue)
        try await harness.start()
        #expect(await harness.recorder.wait { $0.finished == count })
        // Every rejected message is parked: its verdict was carried out, and the breaker stayed closed.
        _ = try await harness.drainParked(expecting: count, on: connection)
        #expect(!history.opened.isSet, "reject verdicts are the handler's decision, not failures")
        await harness.stopAndWait()
        await connection.close()
        await harness.cleanUp()
    }
}
