import AMQP
import Foundation
import Synchronization
import Testing
import WarrenCore

/// A handler that records each start and then waits until the test opens the gate.
final class HandlerGate: MessageHandler, Sendable {
    private struct State {
        var started = 0
        var finished = 0
        var open = false
        var held: [CheckedContinuation<Void, Never>] = []
        var finishWaiters: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let state = Mutex(State())

    var started: Int { state.withLock { $0.started } }
    var finished: Int { state.withLock { $0.finished } }

    func handle(_ input: HandlerInput) async -> HandlerOutcome {
        await withCheckedContinuation { continuation in
            let now = state.withLock { state -> Bool in
                state.started += 1
                if state.open { return true }
                state.held.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
        let due = state.withLock { state in
            state.finished += 1
            let finished = state.finished
            defer { state.finishWaiters.removeAll { $0.count <= finished } }
            return state.finishWaiters.filter { $0.count <= finished }.map(\.continuation)
        }
        for continuation in due { continuation.resume() }
        return .success(.none)
    }

    /// Returns once `count` runs have finished, or after `timeout` (a failure guard).
    func waitFinished(_ count: Int, timeout: Duration = .seconds(30)) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let now = self.state.withLock { state -> Bool in
                        if state.finished >= count { return true }
                        state.finishWaiters.append((count, continuation))
                        return false
                    }
                    if now { continuation.resume() }
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                // The waiter is still parked when time runs out: resume it so the group can end.
                let stale = self.state.withLock { state in
                    defer { state.finishWaiters.removeAll { $0.count == count } }
                    return state.finishWaiters.filter { $0.count == count }.map(\.continuation)
                }
                for continuation in stale { continuation.resume() }
            }
            await group.next()
            group.cancelAll()
        }
    }

    /// Lets every held run and every later one finish.
    func open() {
        let held = state.withLock { state in
            state.open = true
            defer { state.held = [] }
            return state.held
        }
        for continuation in held { continuation.resume() }
    }
}

extension EngineSuites {
    /// `ack_first` acks a delivery when its handler starts, which frees the broker to send
    /// another: the deliveries warren holds (handlers started and not finished, plus deliveries
    /// the broker sent and no handler started) must still stay within `prefetch`.
    @Suite("ack_first window against RabbitMQ", .timeLimit(.minutes(2)))
    struct AckFirstWindowTests {
        @Test(arguments: [(2, 2), (4, 2)])
        func ackFirstNeverHoldsMoreThanPrefetch(prefetch: Int, concurrency: Int) async throws {
            let harness = try EngineHarness(queueSettings: """
                ack_policy = "ack_first"
                prefetch = \(prefetch)
                concurrency = \(concurrency)
                """)
            let gate = HandlerGate()
            let connection = try await TestBroker.connect()
            try await harness.start(handler: gate)
            let total = 20
            for index in 0..<total { try await harness.publish("m\(index)", on: connection) }

            // While every started handler is held, nothing finishes: whatever left the ready
            // count sits in warren, started or not. Sample until the broker has filled the window
            // (held == prefetch) several times in a row; every sample must stay within it.
            let deadline = ContinuousClock.now + .seconds(30)
            var fullSamples = 0
            var maxHeld = 0
            while fullSamples < 10 && ContinuousClock.now < deadline {
                let ready = Int(try await harness.messageCount(harness.queue, on: connection))
                let held = total - ready
                maxHeld = max(maxHeld, held)
                guard held <= prefetch else {
                    Issue.record("warren holds \(held) deliveries with prefetch \(prefetch) (\(gate.started) handlers started)")
                    break
                }
                #expect(gate.finished == 0)
                fullSamples = held == prefetch ? fullSamples + 1 : 0
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(fullSamples == 10, "the window never filled: at most \(maxHeld) held")
            #expect(gate.started >= 1 && gate.started <= min(concurrency, prefetch - 1))

            gate.open()
            await gate.waitFinished(total)
            #expect(gate.finished == total)
            #expect(try await harness.messageCount(harness.queue, on: connection) == 0)
            await harness.stopAndWait()
            await harness.cleanUp()
            await connection.close()
        }
    }
}
