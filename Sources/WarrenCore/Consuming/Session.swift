import AMQP
import Logging

/// One pair of connections (consumer, publisher) and the consumers on them.
///
/// A consumer that ends on its own while its connection lives (the broker cancelled it because
/// the queue was deleted or moved, or closed its channel) is recovered alone: its queue is
/// re-declared if warren owns it, and it is re-subscribed with back-off, while the other queues
/// keep consuming. Deliveries of the dead channel are never settled on the new one (their
/// settlements carry the old channel's epoch). Losing a connection ends the session. A reload
/// is applied queue by queue while the session runs (Session+Reload).
struct Session: Sendable {
    /// The configuration and handlers in effect: what the session started with, as changed by
    /// the reloads it applied since.
    struct Running: Sendable {
        var configuration: Configuration
        var handlers: HandlerRegistry
    }

    enum End: Sendable {
        case stopped
        case lost
        /// A reload that cannot be applied under a running session: everything in flight was
        /// finished and settled, and the engine starts over with this configuration.
        case restart(Configuration)
    }

    /// For the connections (`[broker]`, `[publisher]`): a reload that changes them restarts the session.
    let configuration: Configuration
    let consumerConnection: AMQPConnection
    let link: PublisherLink
    let publisher: EnginePublisher
    let dedup: (any DedupStore)?
    let status: EngineStatus
    /// Operator pauses and circuit breakers, per queue, for the engine's life.
    let controls: QueueControls
    /// For the handlers a reload builds (tests script handlers through it).
    let handlerOverride: HandlerRegistry.Override?
    /// How often an idle consumer is checked for a stall (StallDetector).
    let stallCheckInterval: Duration
    /// Queues the broker refused for now when the session opened (TopologyDeclarer.Outcome):
    /// the session starts without them and keeps retrying them while the others consume.
    var deferred: [String: [TopologyError.Problem]] = [:]
    let logger: Logger

    static func open(
        _ configuration: Configuration, plan: TopologyPlan, dedup: (any DedupStore)?, status: EngineStatus, controls: QueueControls,
        handlerOverride: HandlerRegistry.Override?, stallCheckInterval: Duration, logger: Logger
    ) async throws -> Session {
        let consumerConnection = try await AMQPConnection.connect(configuration.connectionConfiguration(role: "consumer"), logger: logger)
        do {
            let declared = try await TopologyDeclarer(plan: plan, logger: logger).declare(on: consumerConnection)
            // Publishing gets a connection of its own: a broker that blocks publishers (resource
            // alarm) stops reading their connection, and acks must keep flowing.
            let (publisherConnection, publisher) = try await PublisherLink.connect(configuration, logger: logger)
            logger.info("connected", metadata: [
                "endpoint": "\(consumerConnection.negotiated.endpoint)", "heartbeat_s": "\(consumerConnection.negotiated.heartbeat)",
            ])
            let link = PublisherLink(connection: publisherConnection, publisher: publisher)
            return Session(
                configuration: configuration, consumerConnection: consumerConnection, link: link,
                publisher: EnginePublisher(
                    link: link, mandatory: configuration.publisher.mandatory, confirmTimeout: configuration.publisher.confirmTimeout,
                    isHealthy: { link.isAttached && status.snapshot.connections[.publisher]?.blocked != true }),
                dedup: dedup, status: status, controls: controls, handlerOverride: handlerOverride,
                stallCheckInterval: stallCheckInterval, deferred: declared.deferred, logger: logger)
        } catch {
            await consumerConnection.close()
            throw error
        }
    }

    /// Runs until `stop` is set (then drains gracefully), a connection is lost, or a reload
    /// needs a new session. Returns how it ended and what was in effect by then.
    func run(_ start: Running, stop: Latch, reloads: ConfigurationReloads, ready: Latch, supervisor: HandlerSupervisor) async -> (End, Running) {
        status.connectionsUp([.consumer, .publisher])
        let ending = Latch()
        let lost = Latch()
        let consumers = LiveConsumers()
        // A queue without a runner is retried by keepConsuming, with back-off, while the others run.
        var started: [(slot: QueueSlot, runner: QueueRunner?)] = []
        for queue in start.configuration.queues {
            let slot = QueueSlot(queue: queue, configuration: start.configuration, handlers: start.handlers, controls: controls, logger: logger)
            guard let admission = slot.gate.admission else {
                // Paused by an operator, or its circuit breaker is open: keepConsuming subscribes
                // once it may.
                status.consumer(queue.name, live: false)
                started.append((slot, nil))
                continue
            }
            if let problems = deferred[queue.name] {
                for problem in problems {
                    logger.warning("topology refused for now, retrying", metadata: [
                        LogKeys.queue: "\(queue.name)", "config": "\(start.configuration.sourceFile)", "problem": "\(problem)",
                    ])
                }
                status.consumer(queue.name, live: false)
                started.append((slot, nil))
                continue
            }
            do {
                let runner = try await subscribe(slot, consumers: consumers, admission: admission)
                started.append((slot, runner))
                logger.info("consumer up", metadata: [
                    LogKeys.queue: "\(queue.name)", "prefetch": "\(queue.prefetch)", "concurrency": "\(queue.concurrency)",
                    "workers": "\(runner.concurrency)",
                ])
            } catch let error as AMQPError where error.code == .channelClosed {
                // The broker refused this queue's consumer (on a cluster: its node or leader is
                // gone for now); the connection lives, and so do the other queues.
                logger.warning("cannot subscribe yet; retrying with back-off", metadata: [LogKeys.queue: "\(queue.name)", LogKeys.error: "\(error)"])
                status.consumer(queue.name, live: false)
                started.append((slot, nil))
            } catch {
                logger.error("cannot consume", metadata: [LogKeys.queue: "\(queue.name)", LogKeys.error: "\(error)"])
                await close(consumers)
                await link.close()
                await consumerConnection.close()
                return (.lost, start)
            }
        }
        let consuming = started.filter { $0.runner != nil }.count
        if status.snapshot.isReady { ready.set() }
        logger.info("ready", metadata: ["queues": "\(consuming)", "waiting": "\(started.count - consuming)"])
        var slots = started.map(\.slot)

        return await withTaskGroup(of: Void.self) { group in
            for (slot, runner) in started {
                let retrying = runner == nil && slot.gate.admission != nil
                group.addTask { await keepConsuming(slot, first: runner, consumers: consumers, retrying: retrying, ready: ready) }
            }
            group.addTask { await watch(consumerConnection, role: .consumer, lost: lost, status: status, logger: logger) }
            group.addTask { await keepPublisherConnected(ending: ending) }

            var running = start
            var end = End.lost
            while true {
                let reload = reloads.signal
                await firstOf(stop, lost, reload)
                if stop.isSet {
                    end = .stopped
                    break
                }
                if lost.isSet { break }
                guard let next = reloads.take() else { continue }
                if let restart = await applyReload(next, running: &running, slots: &slots, consumers: consumers, supervisor: supervisor, group: &group) {
                    end = .restart(restart)
                    break
                }
            }

            ending.set()
            for slot in slots { slot.draining.set() }
            if case .lost = end {} else {
                if case .stopped = end { status.stopping(true) }
                logger.info(
                    end.isStop ? "shutting down: cancelling consumers, finishing in-flight messages"
                        : "reloading: cancelling consumers, finishing in-flight messages")
                if await drain(slots, consumers: consumers) {
                    await close(consumers)
                }
            }
            await link.close()
            await consumerConnection.close()
            group.cancelAll()
            return (end, running)
        }
    }

    /// Cancels the slots' consumers and waits, up to the longest `shutdown_timeout` among them,
    /// until what they started is processed. False when the timeout passed first.
    func drain(_ slots: [QueueSlot], consumers: LiveConsumers) async -> Bool {
        for slot in slots {
            slot.draining.set()
            try? await consumers.consumer(of: slot.name)?.cancel()
        }
        let timeout = slots.map(\.queue.shutdownTimeout).max() ?? .seconds(30)
        let finished = await withTaskGroup(of: Bool.self) { wait in
            wait.addTask {
                for slot in slots { await slot.done.wait() }
                return true
            }
            wait.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await wait.next() ?? false
            wait.cancelAll()
            return first
        }
        if !finished {
            logger.warning("shutdown timeout passed; unfinished messages are left to the broker", metadata: [
                "timeout": "\(timeout.configText)", "queues": "\(slots.map(\.name).joined(separator: ","))",
            ])
        }
        return finished
    }

    /// Sends what is settled and closes each consumer's channel.
    func close(_ consumers: LiveConsumers) async {
        for consumer in consumers.all { try? await consumer.close() }
    }
}

extension Session.End {
    var isStop: Bool {
        if case .stopped = self { return true }
        return false
    }
}

/// Logs a connection's events and reports them to the status; sets `lost` when it closes.
func watch(_ connection: AMQPConnection, role: EngineStatus.Role, lost: Latch, status: EngineStatus, logger: Logger) async {
    for await event in connection.events {
        switch event {
        case .blocked(let reason):
            status.blocked(role, reason: reason)
            // A lifecycle event, not a failure: publishing waits (confirm_timeout), consuming goes on.
            logger.info("connection blocked by the broker", metadata: ["role": "\(role)", LogKeys.reason: "\(reason)"])
        case .unblocked:
            status.blocked(role, reason: nil)
            logger.info("connection unblocked", metadata: ["role": "\(role)"])
        case .consumerCancelled(let queue, _, _):
            logger.warning("consumer cancelled by the broker", metadata: [LogKeys.queue: "\(queue)"])
        case .channelClosed(let channel, let error):
            logger.warning("channel closed by the broker", metadata: ["role": "\(role)", "channel": "\(channel)", LogKeys.error: "\(error)"])
        case .closed(let error):
            if let error { logger.warning("connection closed", metadata: ["role": "\(role)", LogKeys.error: "\(error)"]) }
            lost.set()
            return
        }
    }
    lost.set()
}
