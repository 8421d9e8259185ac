import AMQP
import Logging

extension Session {
    /// Consumes the slot's queue until it drains, then sets `done`. When the consumer ends on
    /// its own, its in-flight messages finish (their settlements go nowhere: the broker
    /// redelivers them), then the queue is re-declared (if warren owns it) and re-subscribed,
    /// with back-off. Without a `first` runner it starts by subscribing (after a back-off step
    /// when `retrying`: the session could not declare or subscribe it a moment ago). Each time
    /// it subscribes and every configured queue has a consumer, it sets `ready`.
    ///
    /// It subscribes only as the queue's gate admits (QueueGate): not while an operator paused
    /// it or its circuit breaker is open, with prefetch 1 and one worker while the breaker
    /// probes. When the admission changes, the consumer is cancelled (what it has not delivered
    /// stays ready on the broker; deliveries not yet started go back unrun; running handlers
    /// finish under the ack policy) and the queue is subscribed again as now admitted.
    func keepConsuming(_ slot: QueueSlot, first: QueueRunner?, consumers: LiveConsumers, retrying: Bool = false, ready: Latch? = nil) async {
        defer { slot.done.set() }
        let queue = slot.queue
        var backoff = Backoff(initial: configuration.broker.reconnectInitialDelay, maximum: configuration.broker.reconnectMaxDelay)
        let clock = ContinuousClock()
        var runner = first
        // Re-subscribing after a consumer ended waits a back-off step first; a new slot does not.
        var resubscribing = retrying
        while true {
            if let current = runner {
                let subscribed = clock.now
                let (error, held) = await consume(current, slot)
                // Everything it delivered is processed or abandoned: where the next one starts.
                slot.streamPosition?.flush()
                // A probe whose consumer went away before its run decided probes again later.
                if current.admission == .probe { slot.gate.probeAbandoned() }
                if slot.draining.isSet { return }
                status.consumer(queue.name, live: false)
                runner = nil
                if held {
                    logger.info("consumer cancelled: queue held", metadata: [
                        LogKeys.queue: "\(queue.name)", LogKeys.reason: "\(slot.gate.isPaused ? "paused" : "circuit breaker")",
                    ])
                    resubscribing = false
                } else {
                    logger.warning("consumer ended; re-subscribing", metadata: [
                        LogKeys.queue: "\(queue.name)", LogKeys.error: "\(error.map { "\($0)" } ?? "stream finished")",
                    ])
                    if clock.now - subscribed > configuration.broker.reconnectMaxDelay { backoff.reset() }
                    resubscribing = true
                }
            }
            var attempts = 0
            while runner == nil {
                if attempts > 0 || resubscribing { await sleep(for: backoff.next(), unless: slot.draining) }
                if slot.draining.isSet { return }
                guard let admission = await slot.gate.waitForAdmission(unless: slot.draining) else { return }
                attempts += 1
                do {
                    if queue.declare {
                        let plan = TopologyPlan(slot.configuration).restricted(to: [queue.name])
                        let declared = try await TopologyDeclarer(plan: plan, logger: logger).declare(on: consumerConnection)
                        if let problems = declared.deferred[queue.name] { throw TopologyError(problems: problems) }
                    }
                    runner = try await subscribe(slot, consumers: consumers, admission: admission)
                    // A drain that began while subscribing would miss this consumer.
                    if slot.draining.isSet { try? await consumers.consumer(of: queue.name)?.cancel() }
                    logger.info(resubscribing ? "consumer up again" : "consumer up", metadata: [
                        LogKeys.queue: "\(queue.name)", "attempts": "\(attempts)", "admission": "\(admission)",
                    ])
                    if let ready, status.snapshot.isReady { ready.set() }
                } catch {
                    let metadata: Logger.Metadata = [LogKeys.queue: "\(queue.name)", LogKeys.error: "\(error)", "attempts": "\(attempts)"]
                    if attempts == 1 {
                        logger.warning("cannot subscribe yet; retrying with back-off", metadata: metadata)
                    } else {
                        logger.debug("subscribe attempt failed", metadata: metadata)
                    }
                }
            }
        }
    }

    /// Runs the pool until its consumer ends, checking meanwhile that the consumer is not
    /// stalled (StallDetector); a stalled consumer's channel is closed, which ends it: the broker
    /// requeues what it had sent, and the caller re-subscribes. The runner stops taking
    /// deliveries when the slot drains or when its gate's admission changes; then the consumer
    /// is cancelled (`held`: the gate ended it).
    private func consume(_ runner: QueueRunner, _ slot: QueueSlot) async -> (error: (any Error)?, held: Bool) {
        enum Event { case ended((any Error)?), held, watched }
        return await withTaskGroup(of: Event.self) { group in
            group.addTask { .ended(await runner.run()) }
            group.addTask {
                await watchForStall(runner, slot)
                return .watched
            }
            group.addTask {
                await slot.gate.waitForChange(from: runner.admission, unless: slot.draining)
                runner.draining.set()
                if slot.draining.isSet || Task.isCancelled { return .watched }
                try? await runner.consumer.cancel()
                return .held
            }
            var ended: (any Error)?
            var held = false
            while let next = await group.next() {
                switch next {
                case .ended(let error):
                    ended = error
                case .held:
                    held = true
                    continue
                case .watched:
                    continue
                }
                break
            }
            group.cancelAll()
            return (ended, held)
        }
    }

    private func watchForStall(_ runner: QueueRunner, _ slot: QueueSlot) async {
        // A standby single-active consumer is idle by design. A stream's message count is not
        // a backlog (RabbitMQ 3.10 answers 0; a count of the whole log would make every idle
        // stream consumer look stalled).
        guard !slot.queue.singleActiveConsumer, slot.queue.type != .stream else { return }
        var detector = StallDetector()
        while true {
            await sleep(for: stallCheckInterval, unless: slot.draining)
            if Task.isCancelled || slot.draining.isSet { return }
            let (received, inFlight) = (runner.activity.received, runner.activity.inFlight)
            var ready: UInt32 = 0
            if detector.isIdle(received: received, inFlight: inFlight) {
                let queue = QueueDeclaration(name: slot.name, passive: true)
                ready = (try? await consumerConnection.declareQueue(queue))?.messageCount ?? 0
            }
            if detector.observe(received: received, inFlight: inFlight, ready: ready) {
                logger.warning("consumer receives nothing while its queue has ready messages; re-subscribing", metadata: [
                    LogKeys.queue: "\(slot.name)", "ready": "\(ready)", "checked_every": "\(stallCheckInterval.configText)",
                ])
                try? await runner.consumer.close()
                return
            }
        }
    }

    /// Starts a consumer on the slot's queue, as its gate admits, and records it as the queue's
    /// live one.
    func subscribe(_ slot: QueueSlot, consumers: LiveConsumers, admission: QueueGate.Admission) async throws -> QueueRunner {
        var options = Self.consumeOptions(slot.queue)
        if admission == .probe { options.prefetch = 1 }
        if let position = slot.streamPosition { options.arguments["x-stream-offset"] = position.consumeArgument() }
        // The feed is the consumer's sink: it exists before the first delivery can arrive.
        let activity = QueueActivity()
        let position = slot.streamPosition
        let feed = QueueRunner.Feed { batch in
            activity.received(batch.count)
            // Arrival order, which the stream's watermark follows.
            if let position {
                for delivery in batch {
                    if let offset = StreamPosition.offset(of: delivery) { position.delivered(offset) }
                }
            }
        }
        let consumer = try await consumerConnection.consume(options, into: QueueFeedSink(feed))
        consumers.set(consumer, for: slot.name)
        status.consumer(slot.name, live: true)
        let handlerConfigurations = Dictionary(
            slot.configuration.handlers.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let processor = DeliveryProcessor(
            queue: slot.queue, router: Router(slot.queue.target), handlers: slot.handlers, handlerConfigurations: handlerConfigurations,
            publisher: publisher, connection: consumerConnection, dedup: slot.queue.dedup ? dedup : nil,
            stream: slot.streamPosition.map { StreamReading(position: $0, consumer: consumer) }, gate: slot.gate, logger: logger)
        return QueueRunner(
            consumer: consumer, feed: feed, processor: processor, concurrency: admission == .probe ? 1 : ConsumerWindow(slot.queue).workers,
            admission: admission, draining: Latch(), activity: activity)
    }

    /// Watches the publisher connection; when it is lost, reconnects it with back-off while the
    /// consumers go on (publishes wait for it, up to the confirm timeout each).
    func keepPublisherConnected(ending: Latch) async {
        var backoff = Backoff(initial: configuration.broker.reconnectInitialDelay, maximum: configuration.broker.reconnectMaxDelay)
        while let connection = link.connection {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await watch(connection, role: .publisher, lost: Latch(), status: status, logger: logger) }
                group.addTask { await ending.wait() }
                await group.next()
                group.cancelAll()
            }
            if ending.isSet { return }
            link.detach()
            status.connectionDown(.publisher)
            await connection.close()
            logger.warning("publisher connection lost, reconnecting")
            var attempts = 0
            while !ending.isSet {
                await sleep(for: backoff.next(), unless: ending)
                if ending.isSet { return }
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

    static func consumeOptions(_ queue: QueueConfiguration) -> ConsumeOptions {
        // ack_first frees broker credit while handlers still run: ConsumerWindow splits prefetch.
        let prefetch = ConsumerWindow(queue).brokerPrefetch
        var arguments: FieldTable = [:]
        if queue.consumerPriority != 0 { arguments["x-priority"] = .int64(Int64(queue.consumerPriority)) }
        return ConsumeOptions(
            queue: queue.name, prefetch: UInt16(clamping: prefetch), arguments: arguments,
            settlement: settlementMode(queue), maxBodySize: queue.maxBodySize)
    }

    /// `ack_first` promises the ack before the handler runs: its acks go out at the next turn of
    /// the loop, not held for a fuller batch.
    static func settlementMode(_ queue: QueueConfiguration) -> SettlementMode {
        switch queue.ackMode {
        case .immediate: .immediate
        case .batched:
            queue.ackPolicy.acksBeforeHandling ? .coalesced(holdBack: SettlementMode.defaultHoldBack, holdingRuns: false) : .default
        }
    }
}
