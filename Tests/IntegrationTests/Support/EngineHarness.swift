import AMQP
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing
import WarrenCore

/// Everything the scripted handler saw, awaitable: tests wait for a condition on it instead of
/// sleeping.
final class Recorder: Sendable {
    struct Call: Sendable {
        var messageID: String
        var attempt: Int
        var redelivered: Bool
        var headers: FieldTable?
        var at: ContinuousClock.Instant
    }

    private struct State {
        var calls: [Call] = []
        var finished = 0
        var running = 0
        var maxRunning = 0
        var waiters: [(id: Int, predicate: @Sendable (Snapshot) -> Bool, continuation: CheckedContinuation<Bool, Never>)] = []
        var nextWaiter = 0
    }

    struct Snapshot: Sendable {
        var calls: [Call]
        var finished: Int
        var running: Int
        var maxRunning: Int

        func calls(for id: String) -> [Call] { calls.filter { $0.messageID == id } }
    }

    private let state = Mutex(State())
    /// What a run of a message with the `x-test-hold` header waits for before it goes on.
    let release = Latch()

    var snapshot: Snapshot { state.withLock { Snapshot(calls: $0.calls, finished: $0.finished, running: $0.running, maxRunning: $0.maxRunning) } }

    func started(_ input: HandlerInput) {
        update { state in
            state.calls.append(Call(
                messageID: input.properties.messageID?.lossyText ?? "", attempt: input.attempt, redelivered: input.redelivered,
                headers: input.properties.headers, at: .now))
            state.running += 1
            state.maxRunning = max(state.maxRunning, state.running)
        }
    }

    func finished() {
        update { state in
            state.running -= 1
            state.finished += 1
        }
    }

    private func update(_ body: (inout State) -> Void) {
        let ready = state.withLock { state -> [CheckedContinuation<Bool, Never>] in
            body(&state)
            let snapshot = Snapshot(calls: state.calls, finished: state.finished, running: state.running, maxRunning: state.maxRunning)
            let (due, rest) = (state.waiters.filter { $0.predicate(snapshot) }, state.waiters.filter { !$0.predicate(snapshot) })
            state.waiters = rest
            return due.map(\.continuation)
        }
        for continuation in ready { continuation.resume(returning: true) }
    }

    /// Waits until `predicate` holds (true) or `timeout` passes (false).
    func wait(for timeout: Duration = .seconds(30), until predicate: @escaping @Sendable (Snapshot) -> Bool) async -> Bool {
        let id = state.withLock { state -> Int in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let now = self.state.withLock { state -> Bool in
                        let snapshot = Snapshot(calls: state.calls, finished: state.finished, running: state.running, maxRunning: state.maxRunning)
                        if predicate(snapshot) { return true }
                        state.waiters.append((id, predicate, continuation))
                        return false
                    }
                    if now { continuation.resume(returning: true) }
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                let waiter = self.state.withLock { state -> CheckedContinuation<Bool, Never>? in
                    guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                    return state.waiters.remove(at: index).continuation
                }
                waiter?.resume(returning: false)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }
}

/// A handler whose behaviour is scripted per message by the `x-test` header. The script applies
/// to the first delivery only (attempt 1, not redelivered); later deliveries succeed, so that
/// requeues and retries end. `x-test-always` applies it to every delivery.
struct ScriptedHandler: MessageHandler {
    let recorder: Recorder

    func handle(_ input: HandlerInput) async -> HandlerOutcome {
        recorder.started(input)
        defer { recorder.finished() }
        let headers = input.properties.headers
        let always = headers?["x-test-always"] != nil
        let script = headers?["x-test"]?.stringValue ?? "success"
        if let ms = headers?["x-test-sleep-ms"]?.integerValue {
            try? await Task.sleep(for: .milliseconds(ms))
        }
        if headers?["x-test-hold"] != nil {
            await recorder.release.wait()
        }
        if let ms = headers?["x-test-block-ms"]?.integerValue {
            usleep(UInt32(ms) * 1000)  // holds its thread, as a synchronous library call would
        }
        let first = input.attempt == 1 && !input.redelivered
        guard first || always else { return .success(.none) }
        if script.hasPrefix("verdict:retry-ms:"), let ms = Int64(script.dropFirst("verdict:retry-ms:".count)) {
            return .verdict(.retry(delay: .milliseconds(ms)), error: "later", output: .none)
        }
        if script.hasPrefix("publish:") {
            // An output to the exchange named after the prefix (routing key: the rest after '/').
            let target = script.dropFirst("publish:".count).split(separator: "/", omittingEmptySubsequences: false)
            let output = OutgoingMessage(
                exchange: String(target.first ?? ""), routingKey: target.count > 1 ? String(target[1]) : "", mandatory: true,
                properties: BasicProperties(), body: Array("output".utf8))
            return .success(HandlerOutput(publishes: [output]))
        }
        switch script {
        case "reply": return .success(HandlerOutput(reply: Array("pong".utf8)))
        case "fail": return .failure(HandlerFailure("exit code 3", exitCode: 3, stderrTail: "boom"))
        case "verdict:ack": return .verdict(.ack, error: nil, output: .none)
        case "verdict:reject": return .verdict(.reject, error: "bad input", output: .none)
        case "verdict:requeue": return .verdict(.requeue, error: "busy", output: .none)
        case "verdict:retry": return .verdict(.retry(delay: nil), error: "later", output: .none)
        default: return .success(.none)
        }
    }
}

/// An in-process engine against the test broker, with the scripted handler behind every
/// handler entry of kind "noop" named "scripted".
final class EngineHarness: Sendable {
    let queue: String
    let configuration: Configuration
    let recorder = Recorder()
    let stop = Latch()
    /// Where the engine logs at error level and above, when the test wants to read it.
    let log: CapturedLog?
    let ready = Latch()
    /// The engine's status and queue controls (pause, circuit breaker), for tests that watch or drive them.
    let status = EngineStatus()
    let controls: QueueControls
    private let task: Mutex<Task<Engine.Outcome, Never>?> = Mutex(nil)

    init(
        queueSettings: String = "", extra: String = "", handler: String = "scripted", handlers: String = "",
        queue: String = TestBroker.uniqueName("engine"), brokerURL: String = TestBroker.url, log: CapturedLog? = nil
    ) throws {
        self.log = log
        self.queue = queue
        controls = QueueControls(status: status)
        let source = """
            [broker]
            urls = ["\(brokerURL)"]
            connection_name = "warren-engine-tests"
            heartbeat = "10s"

            [publisher]
            confirm_timeout = "5s"

            [[queues]]
            name = "\(queue)"
            durable = false
            handler = "\(handler)"
            \(queueSettings)

            [handlers.scripted]
            kind = "noop"
            \(extra)

            \(handlers)
            """
        configuration = try ConfigurationLoader.parse(source: source, file: "engine-test.toml")
    }

    /// Starts the engine; `handler` replaces the scripted handler when given.
    func start(handler: (any MessageHandler)? = nil) async throws {
        let recorder = recorder
        var logger = log?.logger(label: "warren.engine-tests", level: .error) ?? Logger(label: "warren.engine-tests")
        logger.logLevel = .error
        let engine = Engine(
            configuration: configuration, logger: logger,
            handlerOverride: { entry in entry.name == "scripted" ? handler ?? ScriptedHandler(recorder: recorder) : nil },
            status: status, controls: controls)
        let stop = stop
        let ready = ready
        task.withLock { $0 = Task { await engine.run(stop: stop, ready: ready) } }
        guard await Self.becomesReady(ready) else { throw TestTimeout(what: "waiting for the engine to become ready") }
    }

    /// Waits for an engine's `ready` latch: true once set, false if it is not set within a
    /// minute. The bound is generous on purpose: when every suite starts at once, the broker
    /// declares hundreds of queues for them, and an engine of three queues (36 with their retry
    /// ladders) has taken 11 s to be ready on a 2-core machine and over 20 s on a slower one.
    /// Only an engine that never becomes ready should reach it.
    static func becomesReady(_ ready: Latch) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { await ready.wait(); return true }
            group.addTask { try? await Task.sleep(for: .seconds(60)); return false }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    /// Graceful stop; returns the engine's outcome.
    @discardableResult
    func stopAndWait() async -> Engine.Outcome? {
        stop.set()
        return await task.withLock { $0 }?.value
    }

    /// Every queue the configuration made warren declare.
    var declaredQueues: [String] {
        TopologyPlan(configuration).queues.map(\.declaration.name)
    }

    func cleanUp() async {
        for name in declaredQueues { try? await TestBroker.deleteQueue(name) }
    }

    /// Publishes with confirms; `test` scripts the handler.
    func publish(
        _ id: String, test: String = "success", headers extra: FieldTable = [:], properties: BasicProperties = BasicProperties(),
        on connection: AMQPConnection, body: [UInt8] = Array("payload".utf8)
    ) async throws {
        let publisher = try await connection.openPublisher()
        var headers = extra
        headers["x-test"] = .string(test)
        var properties = properties
        properties.headers = headers
        properties.messageID = AMQPString(id)
        let outcome = try await publisher.publish(routingKey: queue, body: body, properties: properties)
        #expect(outcome == .confirmed)
    }

    /// The messages parked in `<queue>.dead`, drained (acked).
    func drainParked(expecting count: Int, on connection: AMQPConnection) async throws -> [Delivery] {
        guard count > 0 else { return [] }
        let consumer = try await connection.consume(ConsumeOptions(queue: "\(queue).dead", prefetch: 100))
        let parked = try await collect(count, from: consumer, within: .seconds(20)) { consumer.ack($0) }
        try await consumer.close()
        return parked
    }

    func messageCount(_ name: String, on connection: AMQPConnection) async throws -> UInt32 {
        try await connection.declareQueue(QueueDeclaration(name: name, passive: true)).messageCount
    }
}
