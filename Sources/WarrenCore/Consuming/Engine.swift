import AMQP
import Logging
import Synchronization

/// `warren run`: connects (retrying with back-off for as long as it takes), declares the
/// topology, consumes every configured queue with its worker pool, and stops gracefully when
/// `stop` is set. A lost connection ends the session and a new one starts; the old session's
/// unsettled deliveries are left to the broker, which redelivers them.
public struct Engine: Sendable {
    public enum Outcome: Sendable, Equatable {
        case stopped
        /// A handler could not be set up (exit 78).
        case handlersRejected(String)
        /// The live broker contradicts the configuration (exit 78).
        case topologyRejected
        /// The dedup store cannot be opened (exit 78).
        case dedupStoreUnavailable(String)
    }

    public let configuration: Configuration
    public let logger: Logger
    public let handlerOverride: HandlerRegistry.Override?
    /// Where readiness, the status line and the state gauges are read from.
    public let status: EngineStatus
    /// Operator pauses (`warren ctl`) and circuit breakers, per queue: they outlive sessions and reloads.
    public let controls: QueueControls
    /// How often an idle consumer is checked for a stall: twice idle with messages ready in its
    /// queue, and it is re-subscribed (StallDetector).
    public let stallCheckInterval: Duration
    /// Span export (`[tracing]`): `.off` unless the executable built an exporter.
    public let tracing: DeliveryTracing

    public init(
        configuration: Configuration, logger: Logger, handlerOverride: HandlerRegistry.Override? = nil, status: EngineStatus = EngineStatus(),
        controls: QueueControls? = nil, stallCheckInterval: Duration = .seconds(30), tracing: DeliveryTracing = .off
    ) {
        self.tracing = tracing
        self.configuration = configuration
        self.logger = logger
        self.handlerOverride = handlerOverride
        self.status = status
        self.controls = controls ?? QueueControls(status: status)
        self.stallCheckInterval = stallCheckInterval
    }

    /// Runs until `stop` is set. `ready` is set each time every queue has a consumer. A
    /// configuration submitted to `reloads` is applied queue by queue while connected (see
    /// Session+Reload); one that changes the connections, or that arrives while disconnected,
    /// is applied by finishing and settling everything in flight and starting over with it
    /// (handlers, dedup store, connections). A restart that the broker or a handler refuses
    /// gives way to the configuration that ran before.
    public func run(stop: Latch, ready: Latch = Latch(), reloads: ConfigurationReloads = ConfigurationReloads()) async -> Outcome {
        var current = configuration
        var previous: Configuration?
        while true {
            // The processors the sessions build read the tracing from here (DeliveryTracing.engine).
            switch await DeliveryTracing.$engine.withValue(tracing, operation: { await generation(current, stop: stop, ready: ready, reloads: reloads) }) {
            case .finished(let outcome):
                if outcome != .stopped, let fallback = previous {
                    logger.error("the reloaded configuration cannot be applied; going back to the previous one", metadata: [
                        "config": "\(current.sourceFile)", LogKeys.reason: "\(outcome)",
                    ])
                    current = fallback
                    previous = nil
                    continue
                }
                logger.info("stopped")
                return outcome
            case .restart(let next, let running):
                logger.info("configuration reloaded", metadata: ["config": "\(next.sourceFile)", "queues": "\(next.queues.count)"])
                previous = running
                current = next
            }
        }
    }

    private enum Generation: Sendable {
        case finished(Outcome)
        /// Start over with the first configuration; the second is the one that was running.
        case restart(Configuration, running: Configuration)
    }

    /// One configuration's life: its handlers, dedup store and sessions.
    private func generation(_ configuration: Configuration, stop: Latch, ready: Latch, reloads: ConfigurationReloads) async -> Generation {
        let handlers: HandlerRegistry
        do {
            handlers = try HandlerRegistry(configuration, logger: logger, override: handlerOverride)
        } catch {
            logger.error("handler setup failed", metadata: [LogKeys.error: "\(error)"])
            return .finished(.handlersRejected(error.description))
        }
        let dedup: (any DedupStore)?
        do {
            dedup = try await DedupStores.open(configuration)
        } catch {
            logger.error("dedup store unavailable", metadata: [LogKeys.error: "\(error)"])
            await handlers.shutdown()
            return .finished(.dedupStoreUnavailable("\(error)"))
        }
        // Handlers' background work (pipe workers) runs beside the sessions for the whole
        // generation and is cancelled only after the last session finished its in-flight messages.
        let supervisor = HandlerSupervisor()
        supervisor.start(handlers)
        let (result, running) = await withTaskGroup(of: Void.self) { background in
            background.addTask { await supervisor.run() }
            let result = await sessions(
                Session.Running(configuration: configuration, handlers: handlers), dedup: dedup, supervisor: supervisor, stop: stop,
                ready: ready, reloads: reloads)
            background.cancelAll()
            return result
        }
        await running.handlers.shutdown()
        await dedup?.close()
        return result
    }

    /// Opens sessions, one after another, until `stop` is set, a reload needs a restart, or the
    /// broker rejects the topology. Returns what was running by then.
    private func sessions(
        _ start: Session.Running, dedup: (any DedupStore)?, supervisor: HandlerSupervisor, stop: Latch, ready: Latch,
        reloads: ConfigurationReloads
    ) async -> (Generation, Session.Running) {
        var running = start
        var backoff = Backoff(initial: start.configuration.broker.reconnectInitialDelay, maximum: start.configuration.broker.reconnectMaxDelay)
        var failures = 0
        while !stop.isSet {
            let configuration = running.configuration
            status.configure(queues: configuration.queues.map(\.name))
            let reload = reloads.signal
            if reload.isSet, let next = reloads.take() { return (.restart(next, running: configuration), running) }
            let session: Session
            do {
                session = try await Session.open(
                    configuration, plan: TopologyPlan(configuration), dedup: dedup, status: status, controls: controls,
                    handlerOverride: handlerOverride,
                    stallCheckInterval: stallCheckInterval, logger: logger)
            } catch let error as TopologyError where error.isTransient {
                // The broker's state, not the file: e.g. an exclusive queue still held by the
                // connection of a previous run. Retried like an unreachable broker.
                for problem in error.problems {
                    logger.warning("topology refused for now, retrying", metadata: ["config": "\(configuration.sourceFile)", "problem": "\(problem)"])
                }
                await sleep(for: backoff.next(), unless: stop, reload)
                continue
            } catch let error as TopologyError {
                for problem in error.problems {
                    logger.error("topology rejected", metadata: ["config": "\(configuration.sourceFile)", "problem": "\(problem)"])
                }
                return (.finished(.topologyRejected), running)
            } catch {
                failures += 1
                status.connectionDown(.consumer, failedAttempt: true)
                if failures == 1 {
                    logger.warning("broker unreachable, reconnecting", metadata: [LogKeys.error: "\(error)"])
                } else {
                    logger.debug("reconnect attempt failed", metadata: ["attempt": "\(failures)", LogKeys.error: "\(error)"])
                }
                await sleep(for: backoff.next(), unless: stop, reload)
                continue
            }
            if failures > 0 {
                logger.info("broker reachable again", metadata: ["attempts": "\(failures + 1)"])
            }
            failures = 0
            let clock = ContinuousClock()
            let opened = clock.now
            let (end, after) = await session.run(running, stop: stop, reloads: reloads, ready: ready, supervisor: supervisor)
            running = after
            switch end {
            case .stopped:
                return (.finished(.stopped), running)
            case .restart(let next):
                return (.restart(next, running: running.configuration), running)
            case .lost:
                status.connectionDown(.consumer)
                status.connectionDown(.publisher)
                // A session that ends soon after it opened must not turn into a reconnect loop:
                // back off unless it had been up a while.
                if clock.now - opened > running.configuration.broker.reconnectMaxDelay { backoff.reset() }
                logger.warning("connection lost, reconnecting")
                await sleep(for: backoff.next(), unless: stop, reloads.signal)
            }
        }
        return (.finished(.stopped), running)
    }
}

/// Configurations waiting to replace the running one (SIGHUP). Only the newest counts.
public final class ConfigurationReloads: Sendable {
    private struct State {
        var pending: Configuration?
        var signal = Latch()
    }

    private let state = Mutex(State())

    public init() {}

    /// Asks the engine to apply `configuration` as soon as what is in flight is settled.
    public func submit(_ configuration: Configuration) {
        let signal = state.withLock { state -> Latch in
            state.pending = configuration
            return state.signal
        }
        signal.set()
    }

    /// Set when a configuration is pending.
    var signal: Latch { state.withLock { $0.signal } }

    /// The pending configuration, if any; re-arms the signal.
    func take() -> Configuration? {
        state.withLock { state in
            defer {
                state.pending = nil
                state.signal = Latch()
            }
            return state.pending
        }
    }
}

/// Returns when any of the flags is set.
func firstOf(_ flags: Latch...) async {
    await withTaskGroup(of: Void.self) { group in
        for flag in flags { group.addTask { await flag.wait() } }
        await group.next()
        group.cancelAll()
    }
}
