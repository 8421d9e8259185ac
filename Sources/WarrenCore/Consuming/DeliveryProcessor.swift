import AMQP
import CSpawn
import Foundation
import Logging

/// Takes one delivery from receipt to settlement: attempt counting, the size limit, routing,
/// the handler run(s) with their timeout, the ack policy's action, and the confirm-gated
/// settlement (SPEC §4). The input is acked only after every publish its processing made is
/// confirmed; any publish problem nacks it with requeue instead.
struct DeliveryProcessor: Sendable {
    let queue: QueueConfiguration
    let router: Router
    let handlers: HandlerRegistry
    let handlerConfigurations: [String: HandlerConfiguration]
    let publisher: EnginePublisher
    let connection: AMQPConnection
    /// Set when the queue has `dedup = true`.
    let dedup: (any DedupStore)?
    let logger: Logger
    /// This queue's series, resolved here, once per consumer, rather than per message.
    let metrics: QueueMetrics
    /// The queue's handlers with their timeouts and series, looked up once. A message's
    /// handler names are found here by comparing a few strings (usually the same storage)
    /// instead of hashing each name into three dictionaries per message.
    private let resolved: [ResolvedHandler]

    private struct ResolvedHandler: Sendable {
        let name: String
        let handler: (any MessageHandler)?
        let timeout: Duration
        let metrics: HandlerMetrics?
    }

    init(
        queue: QueueConfiguration, router: Router, handlers: HandlerRegistry, handlerConfigurations: [String: HandlerConfiguration],
        publisher: EnginePublisher, connection: AMQPConnection, dedup: (any DedupStore)?, logger: Logger
    ) {
        self.queue = queue
        self.router = router
        self.handlers = handlers
        self.handlerConfigurations = handlerConfigurations
        self.publisher = publisher
        self.connection = connection
        self.dedup = dedup
        self.logger = logger
        let metrics = QueueMetrics(queue: queue)
        self.metrics = metrics
        var resolved: [ResolvedHandler] = []
        for name in queue.handlerNames where !resolved.contains(where: { $0.name == name }) {
            resolved.append(Self.resolve(name, queue: queue, handlers: handlers, configurations: handlerConfigurations, metrics: metrics))
        }
        self.resolved = resolved
    }

    private static func resolve(
        _ name: String, queue: QueueConfiguration, handlers: HandlerRegistry, configurations: [String: HandlerConfiguration],
        metrics: QueueMetrics
    ) -> ResolvedHandler {
        ResolvedHandler(
            name: name, handler: handlers[name], timeout: configurations[name]?.timeout ?? queue.handlerTimeout,
            metrics: metrics.handler(name))
    }

    private func resolved(_ name: String) -> ResolvedHandler {
        for entry in resolved where entry.name == name { return entry }
        return Self.resolve(name, queue: queue, handlers: handlers, configurations: handlerConfigurations, metrics: metrics)
    }

    /// Where the queue's workers run (`QueueRunner`): on the consumer connection's I/O thread
    /// when nothing processing a delivery may block a thread (every handler never blocks, and
    /// no dedup store is read or written); on a thread each when every handler waits for a
    /// child process; otherwise on the shared pool.
    var threading: HandlerThreading {
        Self.threading(of: resolved.map { $0.handler?.threading ?? .sharedPool }, dedup: dedup != nil && queue.dedup)
    }

    static func threading(of handlers: [HandlerThreading], dedup: Bool) -> HandlerThreading {
        if handlers.allSatisfy({ $0 == .neverBlocks }) && !dedup { return .neverBlocks }
        if !handlers.isEmpty && handlers.allSatisfy({ $0 == .ownThread }) { return .ownThread }
        return .sharedPool
    }

    nonisolated(nonsending) func process(_ delivery: Delivery) async {
        let attempt = RetryPlanner.attempt(headers: delivery.properties.headers)
        var log = MessageLog(logger: logger, queue: queue.name, delivery: delivery, attempt: attempt)

        if await parkIfOversized(delivery, attempt: attempt, log) {
            return
        }
        guard let names = router.handlers(for: delivery) else {
            await unrouted(delivery, attempt: attempt, log)
            return
        }
        if queue.ackPolicy.acksBeforeHandling {
            settle(delivery, .ack, .acked)
        }
        let input = HandlerInput(
            queue: queue.name, exchange: delivery.exchange, routingKey: delivery.routingKey, redelivered: delivery.redelivered,
            attempt: attempt, properties: delivery.properties, body: delivery.body, deliveryTag: delivery.tag.value,
            timeout: queue.handlerTimeout)
        let dedupID = dedup == nil || !queue.dedup ? nil : delivery.properties.messageID.flatMap { $0.isEmpty ? nil : $0 }
        var runs: [(name: String, outcome: HandlerOutcome)] = []
        let (outcome, failedHandler): (HandlerOutcome, String?)
        if names.count == 1 && dedupID == nil {
            // The common case: one handler, nothing to look up first. Timed once, for the log
            // and the handler's metrics, and its result is not collected in an array.
            let (only, elapsed) = await run(names[0], input)
            (outcome, failedHandler) = (only, names[0])
            log.duration = elapsed
        } else {
            let started = ContinuousClock.now
            let pending = if let dedupID { await notYetDone(names, messageID: dedupID, log) } else { names }
            runs = await runEach(pending, input)
            (outcome, failedHandler) = Self.combine(runs)
            log.duration = .now - started
        }
        log.handler = failedHandler ?? (names.count == 1 ? names[0] : names.joined(separator: ","))
        log.outcome = outcome.resultName
        var succeeded: [(name: String, outcome: HandlerOutcome)] = []
        var recordSuccesses: (@Sendable () async -> Void)?
        if let dedupID {
            succeeded = runs.filter { $0.outcome.isSuccess }
            if !succeeded.isEmpty {
                let done = succeeded.map(\.name)
                let context = log
                recordSuccesses = { await record(done, messageID: dedupID, context) }
            }
        }
        if !outcome.isSuccess, let recordSuccesses {
            // Some handlers of a fan-out succeeded and will be skipped when the message comes
            // back: what they produced is published now, and they are recorded only once it
            // is confirmed.
            let produced = succeeded.flatMap { outputs(of: $0.outcome, delivery) }
            if let problem = await publisher.publishAll(produced) {
                log.error("publish not confirmed; message requeued", metadata: [LogKeys.error: "\(problem)"])
                settle(delivery, .nack(requeue: true), .requeued)
                return
            }
            await recordSuccesses()
        }
        let action = queue.ackPolicy.action(for: outcome)
        await execute(
            action, delivery, outcome: outcome, handler: failedHandler ?? names.first, attempt: attempt, log,
            afterConfirm: outcome.isSuccess ? recordSuccesses : nil)
    }

    // MARK: dedup

    /// The handlers still to run: those that have not already succeeded for this message. A
    /// store that cannot be read runs them all (at-least-once).
    private func notYetDone(_ names: [String], messageID: String, _ log: MessageLog) async -> [String] {
        guard let dedup else { return names }
        do {
            let done = try await dedup.completed(queue: queue.name, messageID: messageID, handlers: names)
            guard !done.isEmpty else { return names }
            log.debug("handlers skipped: already succeeded for this message", metadata: ["skipped": "\(done.sorted().joined(separator: ","))"])
            return names.filter { !done.contains($0) }
        } catch {
            log.warning("dedup store unreadable; running every handler", metadata: [LogKeys.error: "\(error)"])
            return names
        }
    }

    private func record(_ handlers: [String], messageID: String, _ log: MessageLog) async {
        do {
            try await dedup?.record(queue: queue.name, messageID: messageID, handlers: handlers)
        } catch {
            log.warning("dedup store not written; these handlers may run again", metadata: [LogKeys.error: "\(error)"])
        }
    }

    // MARK: running handlers

    /// Runs every handler of the route concurrently, each result with its handler's name, in
    /// route order.
    private nonisolated(nonsending) func runEach(_ names: [String], _ input: HandlerInput) async -> [(name: String, outcome: HandlerOutcome)] {
        if names.count == 1, let name = names.first {
            return [(name, await run(name, input).outcome)]
        }
        // On a worker's own thread, each handler would block it in turn: the fan-out runs on
        // the shared pool instead, where every handler waits on a thread of its own. Elsewhere
        // the handlers inherit the worker's executor.
        let ownThread = warren_thread_may_block() != 0
        let results = await withTaskGroup(of: (Int, HandlerOutcome).self) { group in
            for (index, name) in names.enumerated() {
                if ownThread {
                    group.addTask(executorPreference: globalConcurrentExecutor) { (index, await run(name, input).outcome) }
                } else {
                    group.addTask { (index, await run(name, input).outcome) }
                }
            }
            var results = [HandlerOutcome?](repeating: nil, count: names.count)
            for await (index, outcome) in group { results[index] = outcome }
            return results
        }
        return zip(names, results).compactMap { name, outcome in outcome.map { (name, $0) } }
    }

    /// One outcome for the message: all must succeed for a success (nothing run is a success);
    /// otherwise the first failure wins, then the first verdict other than ack. Returns the
    /// handler that decided a non-success outcome.
    static func combine(_ runs: [(name: String, outcome: HandlerOutcome)]) -> (HandlerOutcome, String?) {
        if runs.count == 1, let only = runs.first {
            return (only.outcome, only.name)
        }
        var output = HandlerOutput()
        var verdict: (HandlerOutcome, String)?
        for (name, result) in runs {
            switch result {
            case .failure:
                return (result, name)
            case .verdict(.ack, _, let more), .success(let more):
                output.publishes += more.publishes
                if output.reply == nil { output.reply = more.reply }
            case .verdict:
                if verdict == nil { verdict = (result, name) }
            }
        }
        if let verdict { return verdict }
        return (.success(output), nil)
    }

    /// Runs one handler and counts its result and duration; returns both.
    private nonisolated(nonsending) func run(_ name: String, _ input: HandlerInput) async -> (outcome: HandlerOutcome, elapsed: Duration) {
        let entry = resolved(name)
        let started = ContinuousClock.now
        let outcome = await runUncounted(entry, input)
        let elapsed = ContinuousClock.now - started
        entry.metrics?.record(outcome, after: elapsed)
        return (outcome, elapsed)
    }

    private nonisolated(nonsending) func runUncounted(_ entry: ResolvedHandler, _ input: HandlerInput) async -> HandlerOutcome {
        guard let handler = entry.handler else {
            return .failure(HandlerFailure("handler \"\(entry.name)\" is not configured"))
        }
        let timeout = entry.timeout
        var timed = input
        timed.timeout = timeout
        let input = timed
        if handler.enforcesOwnTimeout {
            return await handler.handle(input)
        }
        return await withTaskGroup(of: HandlerOutcome?.self) { group in
            group.addTask { await handler.handle(input) }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            // On timeout this cancels the handler and waits for it to stop (an exec handler
            // kills its process group); otherwise it just stops the timer.
            group.cancelAll()
            return first ?? .failure(HandlerFailure("timeout after \(timeout.configText)", isTimeout: true))
        }
    }

    // MARK: actions

    private nonisolated(nonsending) func execute(
        _ action: DeliveryAction, _ delivery: Delivery, outcome: HandlerOutcome, handler: String?, attempt: Int, _ log: MessageLog,
        afterConfirm: (@Sendable () async -> Void)?
    ) async {
        switch action {
        case .alreadySettled:
            if case .failure(let failure) = outcome {
                log.warning("handler failed after ack_first acked the message", metadata: [LogKeys.error: "\(failure)"])
                return
            }
            // The input is already acked: its reply and outputs still go out, but a publish
            // that fails can only be logged.
            if let problem = await publisher.publishAll(outputs(of: outcome, delivery)) {
                log.error("publish not confirmed after ack_first acked the message", metadata: [LogKeys.error: "\(problem)"])
                return
            }
            await afterConfirm?()
            log.debug("message handled")
        case .ack:
            if case .failure(let failure) = outcome {
                log.warning("handler failed; acked anyway (ack_policy = ack)", metadata: [LogKeys.error: "\(failure)"])
            }
            await settleAfterPublishing(
                outputs(of: outcome, delivery), delivery, .ack, .acked, log, success: "message handled", afterConfirm: afterConfirm)
        case .requeue:
            log.warning("message requeued", metadata: [LogKeys.error: "\(Self.errorText(outcome) ?? "requeue verdict")"])
            settle(delivery, .nack(requeue: true), .requeued)
        case .retry(let delay):
            await retry(delivery, delay: delay, outcome: outcome, handler: handler, attempt: attempt, log)
        case .deadLetter(let reason):
            let failure: HandlerFailure? = if case .failure(let f) = outcome { f } else { nil }
            await deadLetter(delivery, reason, error: Self.errorText(outcome) ?? reason.rawValue, handler: handler, attempt: attempt, failure: failure, log)
        }
    }

    private func retry(_ delivery: Delivery, delay: Duration?, outcome: HandlerOutcome, handler: String?, attempt: Int, _ log: MessageLog) async {
        switch RetryPlanner.step(queue: queue, attempt: attempt, requestedDelay: delay) {
        case .requeue:
            log.warning("message requeued (retry = false)", metadata: [LogKeys.error: "\(Self.errorText(outcome) ?? "")"])
            settle(delivery, .nack(requeue: true), .requeued)
        case .deadLetter(let reason):
            let failure: HandlerFailure? = if case .failure(let f) = outcome { f } else { nil }
            await deadLetter(delivery, reason, error: Self.errorText(outcome) ?? "retry requested", handler: handler, attempt: attempt, failure: failure, log)
        case .delay(let delayQueue, let step, let nextAttempt):
            let copy = RetryPlanner.retryCopy(of: delivery, delayQueue: delayQueue, nextAttempt: nextAttempt)
            await settleAfterPublishing([copy], delivery, .ack, .retried, log, success: "message scheduled for retry", warning: true, metadata: [
                "retry_in": "\(step.configText)", LogKeys.error: "\(Self.errorText(outcome) ?? "retry verdict")",
            ])
        }
    }

    private func deadLetter(
        _ delivery: Delivery, _ reason: DeadLetterReason, error: String, handler: String?, attempt: Int, failure: HandlerFailure?, _ log: MessageLog
    ) async {
        switch queue.deadLetter {
        case .publish(let exchange, let routingKey):
            let copy = RetryPlanner.deadLetterCopy(
                of: delivery, exchange: exchange, routingKey: routingKey, reason: reason, error: error, handler: handler, attempts: attempt,
                failure: failure)
            await settleAfterPublishing([copy], delivery, .ack, .deadLettered, log, success: "message dead-lettered", warning: true, metadata: [
                LogKeys.reason: "\(reason.rawValue)", LogKeys.error: "\(error)", "destination": "\(EnginePublisher.destination(copy))",
            ])
        case .broker:
            log.warning("message rejected to the broker's dead-letter exchange", metadata: [LogKeys.reason: "\(reason.rawValue)", LogKeys.error: "\(error)"])
            settle(delivery, .reject(requeue: false), .rejected)
        case .drop:
            log.warning("message dropped (dead_letter = drop)", metadata: [LogKeys.reason: "\(reason.rawValue)", LogKeys.error: "\(error)"])
            settle(delivery, .ack, .dropped)
        }
    }

    private func unrouted(_ delivery: Delivery, attempt: Int, _ log: MessageLog) async {
        guard case .routes(_, let action) = queue.target else { return }
        let details: Logger.Metadata = [
            "exchange": "\(delivery.exchange)", "routing_key": "\(delivery.routingKey)", "type": "\(delivery.properties.type ?? "")",
        ]
        switch action {
        case .deadLetter:
            await deadLetter(delivery, .unrouted, error: "no route matched", handler: nil, attempt: attempt, failure: nil, log)
        case .ack:
            log.warning("unrouted message acked", metadata: details)
            settle(delivery, .ack, .acked)
        case .reject:
            log.warning("unrouted message rejected", metadata: details)
            settle(delivery, .reject(requeue: false), .rejected)
        }
    }

    /// Publishes, then settles with `disposition` only if every publish was confirmed;
    /// otherwise nacks with requeue so the broker redelivers the input.
    private nonisolated(nonsending) func settleAfterPublishing(
        _ messages: [OutgoingMessage], _ delivery: Delivery, _ disposition: Disposition, _ outcome: MessageOutcome, _ log: MessageLog,
        success: Logger.Message, warning: Bool = false, metadata: Logger.Metadata = [:], afterConfirm: (@Sendable () async -> Void)? = nil
    ) async {
        if !messages.isEmpty, let problem = await publisher.publishAll(messages) {
            log.error("publish not confirmed; message requeued", metadata: [LogKeys.error: "\(problem)"])
            settle(delivery, .nack(requeue: true), .requeued)
            return
        }
        // Dedup records go after the confirms (a recorded handler is skipped next time, so
        // what it produced must be out) and before the ack (a lost ack then finds it done).
        await afterConfirm?()
        settle(delivery, disposition, outcome)
        if warning {
            log.warning(success, metadata: metadata)
        } else {
            log.debug(success, metadata: metadata)
        }
    }

    /// Every settlement goes through here, so `warren_messages_total` counts each delivery once,
    /// by what warren decided (a settlement of a channel that died meanwhile still counts).
    private func settle(_ delivery: Delivery, _ disposition: Disposition, _ outcome: MessageOutcome) {
        connection.settle(delivery.tag, disposition)
        metrics.count(outcome)
    }

    /// The reply (to `reply_to`, with the request's correlation id) and the handler's publishes.
    private func outputs(of outcome: HandlerOutcome, _ delivery: Delivery) -> [OutgoingMessage] {
        let output: HandlerOutput
        switch outcome {
        case .success(let o), .verdict(.ack, _, let o): output = o
        default: return []
        }
        var messages = output.publishes
        if let reply = output.reply, let replyTo = delivery.properties.replyTo, !replyTo.isEmpty {
            messages.append(OutgoingMessage(
                exchange: "", routingKey: replyTo, mandatory: true,
                properties: BasicProperties(correlationID: delivery.properties.correlationID), body: reply))
        }
        return messages
    }

    static func errorText(_ outcome: HandlerOutcome) -> String? {
        switch outcome {
        case .success: nil
        case .failure(let failure): failure.error
        case .verdict(_, let error, _): error
        }
    }
}

/// A delivery's log context, kept as plain values: the metadata dictionary is built only when an
/// event is actually logged (swift-log evaluates metadata lazily), not for every message.
struct MessageLog {
    let logger: Logger
    let queue: String
    /// What the metadata needs of the delivery, not a copy of all of it.
    let deliveryTag: UInt64
    let messageID: String?
    let attempt: Int
    var handler: String?
    var outcome: String?
    var duration: Duration?

    init(logger: Logger, queue: String, delivery: Delivery, attempt: Int) {
        self.logger = logger
        self.queue = queue
        self.deliveryTag = delivery.tag.value
        self.messageID = delivery.properties.messageID
        self.attempt = attempt
    }

    func metadata(_ extra: Logger.Metadata) -> Logger.Metadata {
        var metadata: Logger.Metadata = [
            LogKeys.queue: "\(queue)", LogKeys.deliveryTag: "\(deliveryTag)", LogKeys.attempt: "\(attempt)",
        ]
        if let messageID { metadata[LogKeys.messageID] = "\(messageID)" }
        if let handler { metadata[LogKeys.handler] = "\(handler)" }
        if let outcome { metadata[LogKeys.outcome] = "\(outcome)" }
        if let duration { metadata[LogKeys.durationMS] = "\(duration.milliseconds)" }
        return metadata.merging(extra) { _, new in new }
    }

    func debug(_ message: @autoclosure () -> Logger.Message, metadata extra: @autoclosure () -> Logger.Metadata = [:]) {
        logger.debug(message(), metadata: metadata(extra()))
    }

    func warning(_ message: @autoclosure () -> Logger.Message, metadata extra: @autoclosure () -> Logger.Metadata = [:]) {
        logger.warning(message(), metadata: metadata(extra()))
    }

    func error(_ message: @autoclosure () -> Logger.Message, metadata extra: @autoclosure () -> Logger.Metadata = [:]) {
        logger.error(message(), metadata: metadata(extra()))
    }
}
