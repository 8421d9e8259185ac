import Logging
import Testing

@testable import WarrenCore

/// The queue gate and the status it reports: what a paused queue or an open breaker does to
/// admission, readiness, the status line and `warren ctl status`.
@Suite struct QueueGateTests {
    static func configuration(_ queueExtra: String = "", defaults: String = "") throws -> Configuration {
        try ConfigurationLoader.parse(source: """
            [broker]
            url = "amqp://guest:guest@127.0.0.1:5672/"
            [defaults]
            \(defaults)
            [[queues]]
            name = "orders"
            handler = "h"
            \(queueExtra)
            [[queues]]
            name = "mail"
            handler = "h"
            [handlers.h]
            kind = "noop"
            """, file: "gate.toml")
    }

    @Test func circuitBreakerKeysDecodeWithDefaultsAndDefaultsSectionApplies() throws {
        let set = try Self.configuration(#"circuit_breaker = { failure_ratio = 0.25, open_for = "5s" }"#)
        let policy = try #require(set.queues[0].circuitBreaker)
        #expect(policy.failureRatio == 0.25 && policy.openFor == .seconds(5))
        #expect(policy.minRuns == 20 && policy.window == .seconds(30), "keys left out keep their defaults")
        #expect(set.queues[1].circuitBreaker == nil, "off unless configured")

        let inherited = try Self.configuration("circuit_breaker = false", defaults: "circuit_breaker = { min_runs = 3 }")
        #expect(inherited.queues[0].circuitBreaker == nil, "false turns off the one [defaults] sets")
        #expect(inherited.queues[1].circuitBreaker?.minRuns == 3)
    }

    @Test func aPausedQueueIsNotAdmittedYetKeepsWarrenReadyAndIsReported() throws {
        let status = EngineStatus()
        let controls = QueueControls(status: status)
        let configuration = try Self.configuration()
        status.configure(queues: configuration.queues.map(\.name))
        status.connectionsUp([.consumer, .publisher])
        let gate = controls.gate(for: configuration.queues[0])
        status.consumer("mail", live: true)
        #expect(gate.admission == .full)
        #expect(!status.snapshot.isReady, "orders has no consumer and is not held")

        #expect(try controls.pause("orders"))
        #expect(try !controls.pause("orders"), "already paused")
        #expect(gate.admission == nil)
        #expect(status.snapshot.isReady, "a queue paused on purpose does not make warren unready")
        #expect(status.snapshot.summary == "consuming 1/2 queues, paused by an operator: orders")
        #expect(controls.report().map(\.name) == ["orders", "mail"], "configuration order")
        #expect(controls.report().first?.heldBy == .operator)
        #expect(throws: QueueControls.Refusal(queue: "nope")) { try controls.pause("nope") }

        #expect(try controls.resume("orders"))
        #expect(gate.admission == .full)
        #expect(!status.snapshot.isReady)
    }

    @Test func anOpenBreakerHoldsTheQueueThenProbesAndAdmitsFullyAfterASuccess() async throws {
        let status = EngineStatus()
        let controls = QueueControls(status: status)
        let configuration = try Self.configuration(#"circuit_breaker = { min_runs = 2, open_for = "1ms" }"#)
        status.configure(queues: configuration.queues.map(\.name))
        status.connectionsUp([.consumer, .publisher])
        let gate = controls.gate(for: configuration.queues[0])
        let logger = Logger(label: "gate-tests")
        gate.record(.failure, logger: logger)
        #expect(gate.admission == .full)
        gate.record(.failure, logger: logger)
        #expect(gate.admission == nil, "two failures in two runs open it")
        #expect(status.snapshot.circuitOpen == ["orders"])
        #expect(status.snapshot.summary.contains("circuit open: orders"))

        let draining = Latch()
        #expect(await gate.waitForAdmission(unless: draining) == .probe, "after open_for it probes")
        #expect(controls.report().first?.probing == true)
        gate.record(.success, logger: logger)
        #expect(gate.admission == .full)
        #expect(status.snapshot.circuitOpen.isEmpty)
        #expect(controls.gate(for: configuration.queues[0]) === gate, "one gate per queue for the engine's life")
    }

    @Test func aProbeAbandonedBeforeItsRunEndedProbesAgain() async throws {
        let status = EngineStatus()
        let controls = QueueControls(status: status)
        let configuration = try Self.configuration(#"circuit_breaker = { min_runs = 1, open_for = "1ms" }"#)
        status.configure(queues: configuration.queues.map(\.name))
        let gate = controls.gate(for: configuration.queues[0])
        gate.record(.failure, logger: Logger(label: "gate-tests"))
        #expect(await gate.waitForAdmission(unless: Latch()) == .probe)
        gate.probeAbandoned()
        #expect(gate.admission == nil)
        #expect(await gate.waitForAdmission(unless: Latch()) == .probe)
    }

    @Test func aReloadThatRemovesAPausedQueueForgetsThePauseInOnePlace() throws {
        let status = EngineStatus()
        let controls = QueueControls(status: status)
        let configuration = try Self.configuration()
        status.configure(queues: configuration.queues.map(\.name))
        let gate = controls.gate(for: configuration.queues[0])
        #expect(try controls.pause("orders"))
        #expect(gate.admission == nil)
        status.configure(queues: ["mail"])  // a reload without "orders"
        status.configure(queues: configuration.queues.map(\.name))  // and one that brings it back
        #expect(controls.gate(for: configuration.queues[0]) === gate)
        #expect(gate.admission == .full && gate.admits(.full), "consumes again: the pause went with the queue")
        #expect(controls.report().first?.heldBy == nil, "and ctl status agrees")
    }
}
