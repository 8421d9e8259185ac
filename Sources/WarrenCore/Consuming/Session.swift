import AMQP
import Logging
import Synchronization

/// One pair of connections (consumer, publisher) and the consumers on them.
///
/// A consumer that ends on its own while its connection lives (the broker cancelled it because
/// the queue was deleted or moved, or closed its channel) is recovered alone: its queue is
/// re-declared if warren owns it, and it is re-subscribed with back-off, while the other queues
/// keep consuming. Deliveries of the dead channel are never settled on the new one (their
/// settlements carry the old channel's epoch). Losing a connection ends the session.
struct Session: Sendable {
    enum End: Sendable, Equatable {
        case stopped
        case lost
        /// A new configuration is to be applied: everything in flight was finished and settled.
        case reload
    }

    let configuration: Configuration
    let consumerConnection: AMQPConnection
    let link: PublisherLink
    let publisher: EnginePublisher

    static func open(_ configuration: Configuration, plan: TopologyPlan, logger: Logger) async throws -> Session {
        let consumerConnection = try await AMQPConnection.connect(configuration.connectionConfiguration(role: "consumer"), logger: logger)
        do {
            try await TopologyDeclarer(plan: plan, logger: logger).declare(on: consumerConnection)
            // Publishing gets a connection of its own: a broker that blocks publishers (resource
            // alarm) stops reading their connection, and acks must keep flowing (notes §0.2).
            let (publisherConnection, publisher) = try await PublisherLink.connect(configuration, logger: logger)
            logger.info("connected", metadata: [
                "endpoint": "\(consumerConnection.negotiated.endpoint)", "heartbeat_s": "\(consumerConnection.negotiated.heartbeat)",
            ])
            let link = PublisherLink(connection: publisherConnection, publisher: publisher)
            return Session(
                configuration: configuration, consumerConnection: consumerConnection, link: link,
                publisher: EnginePublisher(
                    link: link, mandatory: configuration.publisher.mandatory, confirmTimeout: configuration.publisher.confirmTimeout))
        } catch {
            await consumerConnection.close()
            throw error
        }
    }

    /// Runs until `stop` or `reload` is set (then drains gracefully) or a connection is lost.
    func run(
        handlers: HandlerRegistry, dedup: (any DedupStore)?, stop: Latch, reload: Latch, ready: Latch, status: EngineStatus, logger: Logger
    ) async -> End {
        status.connectionUp(.consumer)
        status.connectionUp(.publisher)
        let draining = Latch()
        let lost = Latch()
        let runnersDone = Latch()
        let consumers = LiveConsumers()
        var started: [(QueueConfiguration, QueueRunner)] = []
        for queue in configuration.queues {
            do {
                let runner = try await subscribe(queue, handlers: handlers, dedup: dedup, draining: draining, logger: logger)
                consumers.set(runner.consumer, for: queue.name)
                status.consumer(queue.name, live: true)
                started.append((queue, runner))
                logger.info("consumer up", metadata: [LogKeys.queue: "\(queue.name)", "prefetch": "\(queue.prefetch)", "concurrency": "\(queue.concurrency)"])
            } catch {
                logger.error("cannot consume", metadata: [LogKeys.queue: "\(queue.name)", LogKeys.error: "\(error)"])
                await close(consumers)
                await link.close()
                await consumerConnection.close()
                return .lost
            }
        }
        let runners = started
        ready.set()
        logger.info("ready", metadata: ["queues": "\(runners.count)"])

        return await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withTaskGroup(of: Void.self) { pool in
                    for (queue, runner) in runners {
                        pool.addTask {
                            await keepConsuming(
                                queue, first: runner, consumers: consumers, handlers: handlers, dedup: dedup, draining: draining,
                                status: status, logger: logger)
                        }
                    }
                }
                runnersDone.set()
            }
            group.addTask { await watch(consumerConnection, role: .consumer, lost: lost, status: status, logger: logger) }
            group.addTask { await keepPublisherConnected(draining: draining, status: status, logger: logger) }

            await firstOf(stop, lost, reload)
            if stop.isSet { status.stopping(true) }
            draining.set()
            let end: End = stop.isSet ? .stopped : lost.isSet ? .lost : .reload
            if end != .lost {
                logger.info(end == .stopped ? "shutting down: cancelling consumers, finishing in-flight messages"
                    : "reloading: cancelling consumers, finishing in-flight messages")
                for consumer in consumers.all { try? await consumer.cancel() }
                let timeout = configuration.queues.map(\.shutdownTimeout).max() ?? .seconds(30)
                await withTaskGroup(of: Void.self) { wait in
                    wait.addTask { await runnersDone.wait() }
                    wait.addTask { try? await Task.sleep(for: timeout) }
                    await wait.next()
                    wait.cancelAll()
                }
                if runnersDone.isSet {
                    await close(consumers)
                } else {
                    logger.warning("shutdown timeout passed; unfinished messages are left to the broker", metadata: ["timeout": "\(timeout.configText)"])
                }
            }
            await link.close()
            await consumerConnection.close()
            group.cancelAll()
            return end
        }
    }

    /// Watches the publisher connection; when it is lost, reconnects it with back-off while the
    /// consumers go on (publishes wait for it, up to the confirm timeout each).
    private func keepPublisherConnected(draining: Latch, status: EngineStatus, logger: Logger) async {
        var backoff = Backoff(initial: configuration.broker.reconnectInitialDelay, maximum: configuration.broker.reconnectMaxDelay)
        while let connection = link.connection {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await watch(connection, role: .publisher, lost: Latch(), status: status, logger: logger) }
                group.addTask { await draining.wait() }
                await group.next()
                group.cancelAll()
            }
            if draining.isSet { return }
            link.detach()
            status.connectionDown(.publisher)
            await connection.close()
            logger.warning("publisher connection lost, reconnecting")
            var attempts = 0
            while !draining.isSet {
                await sleep(for: backoff.next(), unless: draining)
                if draining.isSet { return }
                attempts += 1
                do {
                    let (connection, publisher) = try await PublisherLink.connect(configuration, logger: logger)
                    link.attach(connection, publisher)
                    status.connectionUp(.publisher)
                    backoff.reset()
                    logger.info("publisher connection up again", metadata: ["attempts": "\(attempts)"])
                    break
                } catch {
                    status.connectionDown(.publisher, failedAttempt: true)
                    logger.debug("publisher reconnect attempt failed", metadata: ["attempt": "\(attempts)", LogKeys.error: "\(error)"])
                }
            }
        }
    }

    /// Consumes `queue` until the session drains. When the consumer ends on its own, its
    /// in-flight messages finish (their settlements go nowhere: the broker redelivers them),
    /// then the queue is re-declared (if warren owns it) and re-subscribed, with back-off.
    private func keepConsuming(
        _ queue: QueueConfiguration, first: QueueRunner, consumers: LiveConsumers, handlers: HandlerRegistry, dedup: (any DedupStore)?,
        draining: Latch, status: EngineStatus, logger: Logger
    ) async {
        var runner = first
        var backoff = Backoff(initial: configuration.broker.reconnectInitialDelay, maximum: configuration.broker.reconnectMaxDelay)
        let clock = ContinuousClock()
        while true {
            let subscribed = clock.now
            let error = await runner.run()
            if draining.isSet { return }
            status.consumer(queue.name, live: false)
            logger.warning("consumer ended; re-subscribing", metadata: [
                LogKeys.queue: "\(queue.name)", LogKeys.error: "\(error.map { "\($0)" } ?? "stream finished")",
            ])
            if clock.now - subscribed > configuration.broker.reconnectMaxDelay { backoff.reset() }
            var attempts = 0
            while true {
                await sleep(for: backoff.next(), unless: draining)
                if draining.isSet { return }
                attempts += 1
                do {
                    if queue.declare {
                        var only = configuration
                        only.queues = [queue]
                        try await TopologyDeclarer(plan: TopologyPlan(only), logger: logger).declare(on: consumerConnection)
                    }
                    runner = try await subscribe(queue, handlers: handlers, dedup: dedup, draining: draining, logger: logger)
                    consumers.set(runner.consumer, for: queue.name)
                    // A stop that began while subscribing would miss this consumer.
                    if draining.isSet { try? await runner.consumer.cancel() }
                    status.consumer(queue.name, live: true)
                    logger.info("consumer up again", metadata: [LogKeys.queue: "\(queue.name)", "attempts": "\(attempts)"])
                    break
                } catch {
                    let metadata: Logger.Metadata = [LogKeys.queue: "\(queue.name)", LogKeys.error: "\(error)", "attempts": "\(attempts)"]
                    if attempts == 1 {
                        logger.warning("cannot re-subscribe yet; retrying with back-off", metadata: metadata)
                    } else {
                        logger.debug("re-subscribe attempt failed", metadata: metadata)
                    }
                }
            }
        }
    }

    private func subscribe(
        _ queue: QueueConfiguration, handlers: HandlerRegistry, dedup: (any DedupStore)?, draining: Latch, logger: Logger
    ) async throws -> QueueRunner {
        let handlerConfigurations = Dictionary(configuration.handlers.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let consumer = try await consumerConnection.consume(Self.consumeOptions(queue))
        let processor = DeliveryProcessor(
            queue: queue, router: Router(queue.target), handlers: handlers, handlerConfigurations: handlerConfigurations,
            publisher: publisher, connection: consumerConnection, dedup: queue.dedup ? dedup : nil, logger: logger)
        return QueueRunner(consumer: consumer, processor: processor, concurrency: queue.concurrency, draining: draining)
    }

    /// Sends what is settled and closes each consumer's channel.
    private func close(_ consumers: LiveConsumers) async {
        for consumer in consumers.all { try? await consumer.close() }
    }

    static func consumeOptions(_ queue: QueueConfiguration) -> ConsumeOptions {
        // ack_first acks when a handler starts, which frees broker credit while the handler still
        // runs: lower the prefetch by the pool size so received + running stays within prefetch.
        let prefetch = queue.ackPolicy.acksBeforeHandling ? max(1, queue.prefetch - queue.concurrency) : queue.prefetch
        var arguments: FieldTable = [:]
        if queue.consumerPriority != 0 { arguments["x-priority"] = .int64(Int64(queue.consumerPriority)) }
        return ConsumeOptions(
            queue: queue.name, prefetch: UInt16(clamping: prefetch), arguments: arguments,
            settlement: queue.ackMode == .immediate ? .immediate : .default)
    }
}

/// Logs a connection's events; sets `lost` when it closes.
private func watch(_ connection: AMQPConnection, role: EngineStatus.Role, lost: Latch, status: EngineStatus, logger: Logger) async {
    for await event in connection.events {
        switch event {
        case .blocked(let reason):
            status.blocked(role, reason: reason)
            logger.warning("connection blocked by the broker", metadata: ["role": "\(role)", LogKeys.reason: "\(reason)"])
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

/// The current consumer of each queue: a re-subscribed queue replaces its entry, so a stop or a
/// reload cancels the consumers that are live now.
final class LiveConsumers: Sendable {
    private let consumers = Mutex<[String: Consumer]>([:])

    func set(_ consumer: Consumer, for queue: String) { consumers.withLock { $0[queue] = consumer } }

    var all: [Consumer] { consumers.withLock { Array($0.values) } }
}
