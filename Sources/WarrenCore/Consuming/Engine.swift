import AMQP
import Logging

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

    public init(configuration: Configuration, logger: Logger, handlerOverride: HandlerRegistry.Override? = nil) {
        self.configuration = configuration
        self.logger = logger
        self.handlerOverride = handlerOverride
    }

    /// Runs until `stop` is set. `ready` is set each time every queue has a consumer.
    public func run(stop: Latch, ready: Latch = Latch()) async -> Outcome {
        let handlers: HandlerRegistry
        do {
            handlers = try HandlerRegistry(configuration, logger: logger, override: handlerOverride)
        } catch {
            logger.error("handler setup failed", metadata: [LogKeys.error: "\(error)"])
            return .handlersRejected(error.description)
        }
        let dedup: (any DedupStore)?
        do {
            dedup = try await DedupStores.open(configuration)
        } catch {
            logger.error("dedup store unavailable", metadata: [LogKeys.error: "\(error)"])
            await handlers.shutdown()
            return .dedupStoreUnavailable("\(error)")
        }
        // Handlers' background work (pipe workers) runs beside the sessions for the whole run
        // and is cancelled only after the last session has finished its in-flight messages.
        let outcome = await withTaskGroup(of: Void.self) { background in
            background.addTask { await handlers.run() }
            let outcome = await sessions(handlers: handlers, dedup: dedup, stop: stop, ready: ready)
            background.cancelAll()
            return outcome
        }
        await handlers.shutdown()
        await dedup?.close()
        logger.info("stopped")
        return outcome
    }

    /// Opens sessions, one after another, until `stop` is set or the broker rejects the topology.
    private func sessions(handlers: HandlerRegistry, dedup: (any DedupStore)?, stop: Latch, ready: Latch) async -> Outcome {
        let plan = TopologyPlan(configuration)
        var backoff = Backoff(initial: configuration.broker.reconnectInitialDelay, maximum: configuration.broker.reconnectMaxDelay)
        var failures = 0
        var outcome = Outcome.stopped
        while !stop.isSet {
            let session: Session
            do {
                session = try await Session.open(configuration, plan: plan, logger: logger)
            } catch let error as TopologyError {
                for problem in error.problems {
                    logger.error("topology rejected", metadata: ["config": "\(configuration.sourceFile)", "problem": "\(problem)"])
                }
                outcome = .topologyRejected
                break
            } catch {
                failures += 1
                if failures == 1 {
                    logger.warning("broker unreachable, reconnecting", metadata: [LogKeys.error: "\(error)"])
                } else {
                    logger.debug("reconnect attempt failed", metadata: ["attempt": "\(failures)", LogKeys.error: "\(error)"])
                }
                await sleep(for: backoff.next(), unless: stop)
                continue
            }
            if failures > 0 {
                logger.info("broker reachable again", metadata: ["attempts": "\(failures + 1)"])
            }
            failures = 0
            let clock = ContinuousClock()
            let opened = clock.now
            let end = await session.run(handlers: handlers, dedup: dedup, stop: stop, ready: ready, logger: logger)
            if end == .stopped { break }
            // A session that ends soon after it opened (a consumer the broker keeps refusing or
            // cancelling) must not turn into a reconnect loop: back off unless it had been up a while.
            if clock.now - opened > configuration.broker.reconnectMaxDelay { backoff.reset() }
            logger.warning("connection lost, reconnecting")
            await sleep(for: backoff.next(), unless: stop)
        }
        return outcome
    }
}

/// One pair of connections (consumer, publisher) and the consumers on them.
struct Session: Sendable {
    enum End: Sendable, Equatable {
        case stopped
        case lost
    }

    let configuration: Configuration
    let consumerConnection: AMQPConnection
    let publisherConnection: AMQPConnection
    let publisher: EnginePublisher

    static func open(_ configuration: Configuration, plan: TopologyPlan, logger: Logger) async throws -> Session {
        let consumerConnection = try await AMQPConnection.connect(configuration.connectionConfiguration(role: "consumer"), logger: logger)
        do {
            try await TopologyDeclarer(plan: plan, logger: logger).declare(on: consumerConnection)
            // Publishing gets a connection of its own: a broker that blocks publishers (resource
            // alarm) stops reading their connection, and acks must keep flowing (notes §0.2).
            let publisherConnection = try await AMQPConnection.connect(configuration.connectionConfiguration(role: "publisher"), logger: logger)
            do {
                let publisher = try await publisherConnection.openPublisher(PublisherOptions(
                    maxInFlight: configuration.publisher.maxInFlight, confirmTimeout: configuration.publisher.confirmTimeout))
                logger.info("connected", metadata: [
                    "endpoint": "\(consumerConnection.negotiated.endpoint)", "heartbeat_s": "\(consumerConnection.negotiated.heartbeat)",
                ])
                return Session(
                    configuration: configuration, consumerConnection: consumerConnection, publisherConnection: publisherConnection,
                    publisher: EnginePublisher(publisher: publisher, mandatory: configuration.publisher.mandatory))
            } catch {
                await publisherConnection.close()
                throw error
            }
        } catch {
            await consumerConnection.close()
            throw error
        }
    }

    func run(handlers: HandlerRegistry, dedup: (any DedupStore)?, stop: Latch, ready: Latch, logger: Logger) async -> End {
        let draining = Latch()
        let lost = Latch()
        let runnersDone = Latch()
        var started: [QueueRunner] = []
        let handlerConfigurations = Dictionary(configuration.handlers.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for queue in configuration.queues {
            do {
                let consumer = try await consumerConnection.consume(Self.consumeOptions(queue))
                let processor = DeliveryProcessor(
                    queue: queue, router: Router(queue.target), handlers: handlers, handlerConfigurations: handlerConfigurations,
                    publisher: publisher, connection: consumerConnection, dedup: queue.dedup ? dedup : nil, logger: logger)
                started.append(QueueRunner(consumer: consumer, processor: processor, concurrency: queue.concurrency, draining: draining))
                logger.info("consumer up", metadata: [LogKeys.queue: "\(queue.name)", "prefetch": "\(queue.prefetch)", "concurrency": "\(queue.concurrency)"])
            } catch {
                logger.error("cannot consume", metadata: [LogKeys.queue: "\(queue.name)", LogKeys.error: "\(error)"])
                await close(started)
                await publisherConnection.close()
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
                    for runner in runners {
                        pool.addTask {
                            let error = await runner.run()
                            if !draining.isSet {
                                // A consumer ended on its own (cancelled by the broker, channel
                                // closed): start over rather than sit connected but not consuming.
                                logger.warning("consumer ended", metadata: [LogKeys.queue: "\(runner.consumer.queue)", LogKeys.error: "\(error.map { "\($0)" } ?? "stream finished")"])
                                lost.set()
                            }
                        }
                    }
                }
                runnersDone.set()
            }
            group.addTask { await watch(consumerConnection, role: "consumer", lost: lost, logger: logger) }
            group.addTask { await watch(publisherConnection, role: "publisher", lost: lost, logger: logger) }

            await firstOf(stop, lost)
            draining.set()
            let end: End = stop.isSet ? .stopped : .lost
            if end == .stopped {
                logger.info("shutting down: cancelling consumers, finishing in-flight messages")
                for runner in runners { try? await runner.consumer.cancel() }
                let timeout = configuration.queues.map(\.shutdownTimeout).max() ?? .seconds(30)
                await withTaskGroup(of: Void.self) { wait in
                    wait.addTask { await runnersDone.wait() }
                    wait.addTask { try? await Task.sleep(for: timeout) }
                    await wait.next()
                    wait.cancelAll()
                }
                if runnersDone.isSet {
                    await close(runners)
                } else {
                    logger.warning("shutdown timeout passed; unfinished messages are left to the broker", metadata: ["timeout": "\(timeout.configText)"])
                }
            }
            await publisherConnection.close()
            await consumerConnection.close()
            group.cancelAll()
            return end
        }
    }

    /// Sends what is settled and closes each consumer's channel.
    private func close(_ runners: [QueueRunner]) async {
        for runner in runners { try? await runner.consumer.close() }
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
private func watch(_ connection: AMQPConnection, role: String, lost: Latch, logger: Logger) async {
    for await event in connection.events {
        switch event {
        case .blocked(let reason):
            logger.warning("connection blocked by the broker", metadata: ["role": "\(role)", LogKeys.reason: "\(reason)"])
        case .unblocked:
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

/// Returns when any of the flags is set.
func firstOf(_ flags: Latch...) async {
    await withTaskGroup(of: Void.self) { group in
        for flag in flags { group.addTask { await flag.wait() } }
        await group.next()
        group.cancelAll()
    }
}
