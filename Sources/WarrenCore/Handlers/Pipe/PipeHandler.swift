import Glibc
import Logging
import Subprocess
import SystemPackage

/// `pipe`: long-lived worker processes that answer framed requests on stdin/stdout (docs/handlers.md, "pipe").
///
/// `run()` keeps `instances` workers alive, restarting any that end with back-off. `handle`
/// encodes the message, gives it to a worker with room (or waits for one, oldest first) and
/// waits for the answer with the same id, all within the input's timeout. A worker that runs a
/// request past that timeout is presumed hung: it is killed and replaced, and its other
/// in-flight requests fail with it. The handler bounds itself, so the engine spares its timer.
struct PipeHandler: MessageHandler {
    /// The configuration of one `pipe` handler, with the internal timings (fixed in production,
    /// shortened by tests).
    struct Settings: Sendable {
        var handler: String
        /// argv; the program is an absolute path or a name looked up on `PATH`, never a shell.
        var command: [String]
        var environment: [String: String] = [:]
        /// Which of warren's variables the workers see (`inherit_env`).
        var inherit: InheritedEnvironment = .standard
        /// Warren's environment as `inherit` sees it; nil is the process's own (tests set it).
        var inheritedEnvironment: [String: String]?
        var workingDirectory: String?
        var instances = 1
        var maxInFlightPerInstance = 1
        /// At shutdown: how long a worker has to exit after its stdin is closed.
        var shutdownGrace: Duration = .seconds(5)
        /// At shutdown: how long after SIGTERM before SIGKILL.
        var terminateGrace: Duration = .seconds(2)
        var restartInitialDelay: Duration = .milliseconds(100)
        var restartMaxDelay: Duration = .seconds(30)
        /// A worker that stayed up this long resets the restart back-off.
        var stableAfter: Duration = .seconds(10)
        /// Longest response line accepted: enough for a base64 reply to a `max_body_size`
        /// message; beyond it the worker is treated as broken.
        var maxResponseLine = 96 * 1024 * 1024

        var executable: Executable {
            let program = command.first ?? ""
            return program.contains("/") ? .path(FilePath(program)) : .name(program)
        }
    }

    let settings: Settings
    let dispatcher: PipeDispatcher
    let logger: Logger

    init(settings: Settings, logger: Logger) {
        precondition(!settings.command.isEmpty, "pipe handler \(settings.handler) has an empty command")
        precondition(settings.instances > 0, "pipe handler \(settings.handler) needs at least one instance")
        self.settings = settings
        self.dispatcher = PipeDispatcher(capacity: settings.maxInFlightPerInstance)
        self.logger = logger
    }

    var enforcesOwnTimeout: Bool { true }

    func handle(_ input: HandlerInput) async -> HandlerOutcome {
        let id = dispatcher.makeID()
        let frame: PipeProtocol.Frame
        do {
            frame = try PipeProtocol.request(id: id, input)
        } catch {
            return .failure(HandlerFailure("the message cannot be encoded for the pipe worker: \(error)"))
        }
        let timeout = input.timeout
        let expiry = PipeDispatcher.Expiry(
            deadline: .now + timeout, timeout: timeout, queue: input.queue, messageID: input.properties.messageID)
        return await dispatcher.submit(id, frame, expiry: expiry) ?? .failure(HandlerFailure("the pipe request was cancelled"))
    }

    private func expire(_ id: UInt64, _ expiry: PipeDispatcher.Expiry) {
        let text = "timeout after \(expiry.timeout.configText)"
        let reason = "pipe worker killed: it ran request \(id) past its timeout (\(expiry.timeout.configText)) and is presumed hung"
        let pid = dispatcher.timeOut(id, failure: HandlerFailure(text, isTimeout: true), stopReason: reason)
        if let pid {
            logger.warning("pipe worker presumed hung; killing it", metadata: [
                LogKeys.handler: "\(settings.handler)", LogKeys.pid: "\(pid)", LogKeys.queue: "\(expiry.queue)",
                LogKeys.messageID: "\(expiry.messageID ?? "")", LogKeys.error: "\(text)",
            ])
        }
    }

    /// Times out requests past their deadline: one task per handler, asleep until the earliest
    /// deadline (or until a request with an earlier one kicks it), instead of a timer task per
    /// request, which cost a fifth of warren's CPU on the pipe path.
    private func sweepDeadlines() async {
        let (kicks, kick) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        while !Task.isCancelled {
            for (id, expiry) in dispatcher.expired(at: .now) { expire(id, expiry) }
            let target = dispatcher.armSweep(kick: kick)
            await withTaskGroup(of: Void.self) { group in
                if let target {
                    group.addTask { try? await Task.sleep(until: target, clock: .continuous) }
                }
                group.addTask {
                    var wakeUps = kicks.makeAsyncIterator()
                    _ = await wakeUps.next()
                }
                _ = await group.next()
                group.cancelAll()
            }
        }
    }

    /// Keeps the workers running until cancelled; then they stop (see `PipeWorker`) and
    /// requests still waiting for a worker fail.
    func run() async {
        _ = ChildProcesses.ignoreSIGPIPE
        await withTaskCancellationHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { await sweepDeadlines() }
                for index in 0..<settings.instances {
                    group.addTask { await supervise(index) }
                }
            }
        } onCancel: {
            dispatcher.close()
        }
        dispatcher.close()
    }

    /// One instance slot: start the worker, and when it ends, start it again after a back-off
    /// that grows while workers keep dying young and resets once one stays up.
    private func supervise(_ index: Int) async {
        let worker = PipeWorker(settings: settings, index: index, dispatcher: dispatcher, logger: logger)
        var backoff = Backoff(initial: settings.restartInitialDelay, maximum: settings.restartMaxDelay)
        let clock = ContinuousClock()
        while !Task.isCancelled {
            let started = clock.now
            let exit = await worker.run()
            var metadata: Logger.Metadata = [LogKeys.handler: "\(settings.handler)", LogKeys.worker: "\(index)", LogKeys.error: "\(exit.failure)"]
            if let pid = exit.pid { metadata[LogKeys.pid] = "\(pid)" }
            if Task.isCancelled {
                logger.info("pipe worker stopped", metadata: metadata)
                return
            }
            if clock.now - started >= settings.stableAfter { backoff.reset() }
            let delay = backoff.next()
            metadata["restart_in"] = "\(delay.configText)"
            if exit.pid == nil {
                logger.error("pipe worker could not be started", metadata: metadata)
            } else {
                logger.warning("pipe worker ended; restarting it", metadata: metadata)
            }
            do {
                try await Task.sleep(for: delay)
            } catch {
                return
            }
        }
    }

    /// Workers' pids by instance index (for tests and diagnostics).
    var workerPIDs: [Int: Int32] { dispatcher.workerPIDs }
}
