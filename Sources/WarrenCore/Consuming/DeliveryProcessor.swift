import AMQP
import CSpawn
import Foundation
import Logging

/// Takes one delivery from receipt to settlement: attempt counting, the size limit, routing, the
/// handler run(s) with their timeout, then what `DeliveryDecision` says to publish and how to
/// settle (docs/delivery.md). The input is acked only after every publish its processing made
/// is confirmed. This type runs handlers and carries out the decision's actions; it decides
/// nothing about the message itself.
struct DeliveryProcessor: Sendable {
    let queue: QueueConfiguration
    let router: Router
    let handlers: HandlerRegistry
    let handlerConfigurations: [String: HandlerConfiguration]
    let publisher: EnginePublisher
    let connection: AMQPConnection
    /// Set when the queue has `dedup = true`.
    let dedup: (any DedupStore)?
    /// Set for a stream queue: its read position and the consumer to end when a delivery must
    /// be read again (a stream takes nothing back).
    let stream: StreamReading?
    /// `stream != nil`, kept as a flag: reading an optional struct copies it, on every settlement.
    private let isStream: Bool
    /// A dedup store is set and the queue uses it, kept as a flag: comparing the optional
    /// existential with nil copies and destroys it, on every delivery.
    private let deduplicates: Bool
    /// The queue's gate: its circuit breaker hears of each handler run, its counts of each
    /// delivery (nil in tests that exercise the processor alone).
    let gate: QueueGate?
    /// Spans exported or not (docs/tracing.md, "Exporting spans"); `.off` costs nothing per delivery.
    let tracing: DeliveryTracing
    let logger: Logger
    /// This queue's series, resolved here, once per consumer, rather than per message.
    let metrics: QueueMetrics
    /// Set after a transient publish failure; the queue's workers wait on it.
    let backOff = PublishBackOff()
    /// The queue's handlers with their timeouts and series, looked up once. A message's
    /// handler names are found here by comparing a few strings (usually the same storage)
    /// instead of hashing each name into three dictionaries per message.
    private let resolved: [ResolvedHandler]
    /// What each delivery's decision and log context read, shared rather than copied per message.
    private let sharedQueue: Shared<QueueConfiguration>
    private let logBase: Shared<MessageLog.Base>

    /// A class: looked up for every run, and one reference is cheaper to hand out than a copy
    /// of its four fields (each with references of its own).
    private final class ResolvedHandler: Sendable {
        let name: String
        /// Not optional: a method called on an optional existential read from a class copies
        /// it (and its reference) to unwrap it, for every run. A name with no handler behind
        /// it has `Unconfigured`.
        let handler: any MessageHandler
        let isConfigured: Bool
        let timeout: Duration
        let metrics: HandlerMetrics?

        init(name: String, handler: (any MessageHandler)?, timeout: Duration, metrics: HandlerMetrics?) {
            self.name = name
            self.handler = handler ?? Unconfigured()
            isConfigured = handler != nil
            self.timeout = timeout
            self.metrics = metrics
        }

        /// Stands in for a handler that is not configured; never run (`runUncounted`).
        private struct Unconfigured: MessageHandler {
            func handle(_ input: HandlerInput) async -> HandlerOutcome { .failure(HandlerFailure("handler not configured")) }
        }

        var threading: HandlerThreading { isConfigured ? handler.threading : .sharedPool }
    }

    init(
        queue: QueueConfiguration, router: Router, handlers: HandlerRegistry, handlerConfigurations: [String: HandlerConfiguration],
        publisher: EnginePublisher, connection: AMQPConnection, dedup: (any DedupStore)?, stream: StreamReading? = nil,
        gate: QueueGate? = nil, tracing: DeliveryTracing = DeliveryTracing.engine, logger: Logger
    ) {
        self.gate = gate
        self.tracing = tracing
        self.queue = queue
        self.router = router
        self.handlers = handlers
        self.handlerConfigurations = handlerConfigurations
        self.publisher = publisher
        self.connection = connection
        self.dedup = dedup
        self.stream = stream
        isStream = stream != nil
        deduplicates = dedup != nil && queue.dedup
        self.logger = logger
        let metrics = QueueMetrics(queue: queue)
        self.metrics = metrics
        sharedQueue = Shared(queue)
        logBase = Shared(MessageLog.Base(logger: logger, queue: queue.name))
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
        Self.threading(of: resolved.map(\.threading), dedup: deduplicates)
    }

    /// How many of the queue's handlers wait with a thread held (`.ownThread`): a route runs at
    /// most this many such runs at once, so its workers need as many `BlockingThreads` each.
    var blockingHandlers: Int {
        resolved.count { $0.threading == .ownThread }
    }

    /// Where a worker runs, and the threads its handlers may block (`QueueRunner`).
    struct WorkerPlace: Sendable {
        /// The queue's threads that may block; nil when none of its handlers blocks.
        var threads: BlockingThreads?
        /// The worker runs on one of `threads`, its own while it runs a handler.
        var onOwnThread = false

        static let anywhere = WorkerPlace(threads: nil)

        /// Where a route of one handler may block.
        var forRun: BlockingWait { onOwnThread ? .here : forFanOut }
        /// Where each handler of a fan-out may block (they run at once, so not on the worker's thread).
        var forFanOut: BlockingWait { threads.map { .on($0) } ?? .spare }
    }

    static func threading(of handlers: [HandlerThreading], dedup: Bool) -> HandlerThreading {
        if handlers.allSatisfy({ $0 == .neverBlocks }) && !dedup { return .neverBlocks }
        if !handlers.isEmpty && handlers.allSatisfy({ $0 == .ownThread }) { return .ownThread }
        return .sharedPool
    }

    /// `place`: where the calling worker runs, and where its handlers may block
    /// (`HandlerInput.blocking`).
    nonisolated(nonsending) func process(_ delivery: Delivery, at place: WorkerPlace = .anywhere) async {
        guard let rest = processAtOnce(delivery, at: place) else { return }
        await finish(rest)
    }

    /// What is left of a delivery once `processAtOnce` came to a step that suspends. Indirect:
    /// one pointer in the worker's frame, which holds it across the wait, instead of the
    /// delivery, its input, log and decision inline (about 8 KB of every worker's frame).
    indirect enum Unfinished: Sendable {
        /// The handler(s) must run with `handle`.
        case run(Run)
        /// The decision's next action publishes.
        case carryOut(DeliveryDecision.Action, DeliveryDecision, MessageLog, TracedDelivery?)
    }

    struct Run: Sendable {
        let names: [String]
        var input: HandlerInput
        var log: MessageLog
        var decision: DeliveryDecision
        let traced: TracedDelivery?
        let dedupID: AMQPString?
        /// Where each handler of a fan-out may block.
        let fanOut: BlockingWait
    }

    /// Takes the delivery as far as it goes without suspending: to its settlement when the
    /// route is one handler that answers at once (`MessageHandler.outcomeAtOnce`) and nothing
    /// is to be published; nil then. Otherwise what is left, for `finish`.
    ///
    /// Never inlined, nor is `finish`: inlined into a worker's loop (`QueueRunner`), their
    /// locals become part of that loop's async frame, which every worker holds for as long as it
    /// lives (about 23 KB each, 16 MiB for 100 queues of 8 workers). Kept apart, this part runs
    /// on the thread's stack, and `finish`'s frame exists only while a delivery suspends.
    @inline(never)
    func processAtOnce(_ delivery: Delivery, at place: WorkerPlace = .anywhere) -> Unfinished? {
        let attempt = RetryPlanner.attempt(headers: delivery.properties.headers)
        let (trace, traced) = tracing.start(queue: queue.name, delivery, attempt: attempt)
        // The log context, like the decision, is made only when something needs it.
        func log(_ trace: MessageTrace) -> MessageLog { MessageLog(logBase, delivery: delivery, attempt: attempt, trace: trace) }
        // Made only when the delivery needs more than a settlement (most need none): it holds
        // a copy of the delivery.
        func decision() -> DeliveryDecision {
            DeliveryDecision(.init(queue: sharedQueue, delivery: delivery, attempt: attempt, trace: trace))
        }

        if let (size, bodyLost) = oversized(delivery) {
            gate?.tally.processed(failed: false)
            var decision = decision()
            return conclude(decision.start(.tooLarge(bodySize: size, bodyLost: bodyLost)), decision, delivery, log(trace), traced)
        }
        guard let names = router.handlers(for: delivery) else {
            var log = log(trace)
            log.unrouted = Shared((delivery.exchange, delivery.routingKey, delivery.properties.type ?? ""))
            gate?.tally.processed(failed: false)
            var decision = decision()
            return conclude(decision.start(.unrouted), decision, delivery, log, traced)
        }
        if queue.ackPolicy.acksBeforeHandling {
            settle(delivery, .ack, .acked)
        }
        var input = HandlerInput(
            queue: queue.name, exchange: delivery.exchange, routingKey: delivery.routingKey, redelivered: delivery.redelivered,
            attempt: attempt, properties: delivery.properties, body: delivery.body, deliveryTag: delivery.tag.value,
            timeout: queue.handlerTimeout, trace: traced == nil ? trace.child() : trace, deliveryTrace: trace)
        // With spans, the run's context is its span's (no id drawn for nothing).
        if let traced { input.startRun(names[0], in: traced) }
        if isStream { input.streamOffset = StreamPosition.offset(of: delivery) }
        input.blocking = place.forRun
        let dedupID = deduplicates ? delivery.properties.messageID.flatMap { $0.isEmpty ? nil : $0 } : nil
        if names.count == 1 && dedupID == nil, let outcome = runAtOnce(names[0], input) {
            let outputs = reported(outcome, delivery)
            // The one handler's run: its lines name its run's span.
            func runLog() -> MessageLog {
                var log = log(input.trace)
                (log.handler, log.outcome, log.duration) = (names[0], outcome.resultName, .zero)
                return log
            }
            if let action = DeliveryDecision.settlesAtOnce(outcome, outputs: outputs, policy: queue.ackPolicy) {
                end(action, delivery, runLog(), traced)
                return nil
            }
            var decision = decision()
            return conclude(decision.start(.handled(outcome, handler: names[0], outputs: outputs)), decision, delivery, runLog(), traced)
        }
        // One handler: its lines name its run's span. A fan-out's name the delivery's.
        return .run(Run(
            names: names, input: input, log: log(names.count == 1 ? input.trace : trace), decision: decision(), traced: traced,
            dedupID: dedupID, fanOut: place.forFanOut))
    }

    /// Carries on from where `processAtOnce` stopped. Never inlined (see `processAtOnce`).
    @inline(never)
    nonisolated(nonsending) func finish(_ unfinished: Unfinished) async {
        switch unfinished {
        case .carryOut(let action, var decision, let log, let traced):
            let delivery = decision.context.delivery
            await carryOut(action, &decision, delivery, log, traced)
        case .run(var run):
            await runHandlers(&run)
        }
    }

    private nonisolated(nonsending) func runHandlers(_ run: inout Run) async {
        let (names, delivery, dedupID) = (run.names, run.decision.context.delivery, run.dedupID)
        var runs: [(name: String, outcome: HandlerOutcome)] = []
        let (outcome, failedHandler): (HandlerOutcome, String?)
        if names.count == 1 && dedupID == nil {
            // The common case: one handler, nothing to look up first. Timed once, for the log
            // and the handler's metrics, and its result is not collected in an array.
            let (only, elapsed) = await self.run(names[0], run.input)
            (outcome, failedHandler) = (only, names[0])
            run.log.duration = elapsed
        } else {
            let started = ContinuousClock.now
            let pending = if let dedupID { await notYetDone(names, messageID: dedupID, run.log) } else { names }
            runs = await runEach(pending, run.input, fanOut: run.fanOut)
            (outcome, failedHandler) = Self.combine(runs)
            run.log.duration = .now - started
            // A first handler the dedup store skipped: its span ends unrun.
            run.input.tracing?.run.endSkipped(handler: names[0])
        }
        let trigger = DeliveryDecision.Trigger.handled(
            outcome, handler: failedHandler ?? names.first, outputs: handled(outcome, by: failedHandler, names, &run.log, delivery))
        var recordSuccesses: (@Sendable () async -> Void)?
        if let dedupID {
            let succeeded = runs.filter { $0.outcome.isSuccess }
            if !succeeded.isEmpty {
                let done = succeeded.map(\.name)
                let context = run.log
                recordSuccesses = { await record(done, messageID: dedupID, context) }
            }
            if !outcome.isSuccess, let recordSuccesses {
                // Some handlers of a fan-out succeeded and will be skipped when the message
                // comes back: what they produced is published now, and they are recorded only
                // once it is confirmed. If it is not, they are not recorded and run again.
                let produced = succeeded.flatMap { outputs(of: $0.outcome, delivery) }
                let problem = await publisher.publishAll(produced, tracing: run.traced)
                if let problem {
                    run.log.warning("outputs of the handlers that succeeded not published; they will run again", metadata: [LogKeys.error: "\(problem)"])
                } else {
                    await recordSuccesses()
                }
            }
        }
        await carryOut(
            run.decision.start(trigger), &run.decision, delivery, run.log, run.traced, afterConfirm: outcome.isSuccess ? recordSuccesses : nil)
    }

    /// Notes the route's outcome in the log context and tells the queue's gate; returns what
    /// the outcome publishes (`outputs(of:_:)`). `handler`: the one that decided a non-success
    /// outcome, if one did.
    private func handled(
        _ outcome: HandlerOutcome, by handler: String?, _ names: [String], _ log: inout MessageLog, _ delivery: Delivery
    ) -> [OutgoingMessage] {
        log.handler = handler ?? (names.count == 1 ? names[0] : names.joined(separator: ","))
        log.outcome = outcome.resultName
        return reported(outcome, delivery)
    }

    /// Tells the queue's gate of the route's outcome; returns what the outcome publishes.
    private func reported(_ outcome: HandlerOutcome, _ delivery: Delivery) -> [OutgoingMessage] {
        if let gate { report(outcome, to: gate) }
        return outputs(of: outcome, delivery)
    }

    /// The size of a delivery over `max_body_size`, and whether its body is lost (the spool file
    /// could not be written); nil for one within the limit. The consumer is opened with the
    /// queue's limit, so the AMQP layer decides from the content header and spools such a body to
    /// an unnamed temporary file instead of memory (docs/limits.md).
    private func oversized(_ delivery: Delivery) -> (size: Int, bodyLost: Bool)? {
        if let oversized = delivery.oversizedBody {
            guard oversized.size > queue.maxBodySize else { return nil }
            if case .failure = oversized.spool { return (oversized.size, true) }
            return (oversized.size, false)
        }
        // A consumer opened without the limit (or with a larger one) buffered it.
        return delivery.body.count > queue.maxBodySize ? (delivery.body.count, false) : nil
    }

    /// Carries out the decision's actions until it settles, holds or finishes the delivery: each
    /// publish's result goes back to the decision. `afterConfirm` (recording a success in the
    /// dedup store) runs once the outputs are confirmed and before the ack: a recorded handler
    /// is skipped next time, so what it produced must be out, and a lost ack then finds it done.
    private nonisolated(nonsending) func carryOut(
        _ first: DeliveryDecision.Action, _ decision: inout DeliveryDecision, _ delivery: Delivery, _ log: MessageLog,
        _ traced: TracedDelivery?, afterConfirm: (@Sendable () async -> Void)? = nil
    ) async {
        var action = first
        var recordPending = afterConfirm != nil
        while case .publish(let messages, let purpose) = action {
            let problem = await publisher.publishAll(messages, tracing: traced)
            if let problem {
                log.debug("publish not confirmed", metadata: [LogKeys.error: "\(problem)", "class": "\(problem.kind.rawValue)"])
            } else {
                backOff.succeeded()
                if recordPending && (purpose == .outputs || purpose == .outputsAfterAck) {
                    recordPending = false
                    await afterConfirm?()
                }
            }
            action = decision.published(problem)
        }
        if recordPending, Self.isSuccessfulEnd(action) { await afterConfirm?() }
        end(action, delivery, log, traced)
    }

    /// The action, carried out now when it ends the delivery (nil then); else what is left.
    private func conclude(
        _ action: DeliveryDecision.Action, _ decision: DeliveryDecision, _ delivery: Delivery, _ log: MessageLog, _ traced: TracedDelivery?
    ) -> Unfinished? {
        if case .publish = action { return .carryOut(action, decision, log, traced) }
        end(action, delivery, log, traced)
        return nil
    }

    /// Whether the delivery ends as a success: what a dedup store records.
    private static func isSuccessfulEnd(_ action: DeliveryDecision.Action) -> Bool {
        switch action {
        case .settle(_, let outcome, _, _): outcome == .acked
        case .finished(let event): event.level < .error
        case .hold, .publish: false
        }
    }

    /// Settles, holds or finishes the delivery, as the decision's last action says.
    ///
    /// The log context is made only when the event is logged at the logger's level or the
    /// delivery has a span: most deliveries end with a debug line that is not written.
    private func end(
        _ action: consuming DeliveryDecision.Action, _ delivery: Delivery, _ log: @autoclosure () -> MessageLog,
        _ traced: TracedDelivery?
    ) {
        let (event, outcome): (DeliveryDecision.Event, MessageOutcome)
        var holds = false
        // Taken apart, not copied: its event's strings would be retained and released again.
        switch consume action {
        case .settle(let disposition, let settled, let settledEvent, let backOff):
            settle(delivery, disposition, settled)
            if backOff { self.backOff.failed() }
            (event, outcome) = (settledEvent, settled)
        case .finished(let finishedEvent):
            (event, outcome) = (finishedEvent, .acked)
        case .hold(let heldEvent):
            metrics.count(.held)
            (event, outcome, holds) = (heldEvent, .held, true)
        case .publish:
            assertionFailure("a publish is carried out, not ended")
            return
        }
        if traced != nil || logBase.value.logLevel <= event.level {
            let log = log()
            log.event(event)
            traced?.end(log, outcome, event)
        }
        // A stream keeps nothing unacked for later: its next consumer reads it again.
        if holds && isStream { putBack(delivery) }
    }

    // MARK: dedup

    /// The handlers still to run: those that have not already succeeded for this message. A
    /// store that cannot be read runs them all (at-least-once).
    private func notYetDone(_ names: [String], messageID: AMQPString, _ log: MessageLog) async -> [String] {
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

    private func record(_ handlers: [String], messageID: AMQPString, _ log: MessageLog) async {
        do {
            try await dedup?.record(queue: queue.name, messageID: messageID, handlers: handlers)
        } catch {
            log.warning("dedup store not written; these handlers may run again", metadata: [LogKeys.error: "\(error)"])
        }
    }

    // MARK: running handlers

    /// Runs every handler of the route concurrently, each result with its handler's name, in
    /// route order. `fanOut`: where each may block.
    private nonisolated(nonsending) func runEach(
        _ names: [String], _ input: HandlerInput, fanOut: BlockingWait
    ) async -> [(name: String, outcome: HandlerOutcome)] {
        if names.count == 1, let name = names.first {
            return [(name, await run(name, input).outcome)]
        }
        // Each handler of a fan-out waits on a thread of its own (`fanOut`), never the
        // worker's: on a worker's own thread the runs go to the shared pool, elsewhere they
        // inherit the worker's executor.
        let onWorkersThread = if case .here = input.blocking { true } else { false }
        let results = await withTaskGroup(of: (Int, HandlerOutcome).self) { group in
            for (index, name) in names.enumerated() {
                var input = index == 0 ? input : input.nextRun(name)
                input.blocking = fanOut
                if onWorkersThread {
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
            case .verdict(.ack, _, let more, _), .success(let more):
                output.publishes += more.publishes
                if output.reply == nil { (output.reply, output.replyTrace) = (more.reply, more.replyTrace) }
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
        return (ran(entry, input, outcome, after: elapsed), elapsed)
    }

    /// `run` for a handler that answers at once; nil (nothing run) when it does not. Its run is
    /// counted with a duration of zero: it waited for nothing, and two clock reads would cost
    /// more than the run.
    private func runAtOnce(_ name: String, _ input: HandlerInput) -> HandlerOutcome? {
        let entry = resolved(name)
        guard entry.isConfigured, let outcome = entry.handler.outcomeAtOnce(input) else { return nil }
        return ran(entry, input, outcome, after: .zero)
    }

    /// A run's outcome carrying its context, with its span ended and its metrics counted.
    private func ran(
        _ entry: ResolvedHandler, _ input: HandlerInput, _ outcome: HandlerOutcome, after elapsed: Duration
    ) -> HandlerOutcome {
        let outcome = outcome.tracing(input.trace)
        input.tracing?.run.end(handler: entry.name, outcome)
        entry.metrics?.record(outcome, after: elapsed)
        return outcome
    }

    private nonisolated(nonsending) func runUncounted(_ entry: ResolvedHandler, _ input: HandlerInput) async -> HandlerOutcome {
        let handler = entry.handler
        guard entry.isConfigured else {
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

    /// Counts the run, and tells the circuit breaker of a success or a failure (a timeout is a
    /// failure); a verdict is the handler's decision about the message, not a sign of a broken
    /// downstream, and is not reported to it.
    private func report(_ outcome: HandlerOutcome, to gate: QueueGate) {
        // Without a breaker there is nothing to record (and no lock to take per message).
        let breaker = queue.circuitBreaker != nil
        switch outcome {
        case .success:
            gate.tally.processed(failed: false)
            if breaker { gate.record(.success, logger: logger) }
        case .failure:
            gate.tally.processed(failed: true)
            if breaker { gate.record(.failure, logger: logger) }
        case .verdict:
            gate.tally.processed(failed: false)
        }
    }

    /// Every settlement goes through here, so `warren_messages_total` counts each delivery once,
    /// by what warren decided (a settlement of a channel that died meanwhile still counts).
    private func settle(_ delivery: Delivery, _ disposition: Disposition, _ outcome: MessageOutcome) {
        metrics.count(outcome)
        guard isStream, let stream else {
            connection.settle(delivery.tag, disposition)
            return
        }
        // A stream refuses basic.nack and basic.reject by closing the connection: a delivery is
        // acked (credit) and either done with or read again by the next consumer.
        if disposition == .ack {
            connection.settle(delivery.tag, .ack)
            if let offset = StreamPosition.offset(of: delivery) { stream.position.processed(offset) }
        } else {
            putBack(delivery)
        }
    }

    /// Gives a delivery back: `basic.nack` with requeue on a queue, on a stream a read again
    /// from its offset by the next consumer (this one is ended). What the queue's workers do
    /// with deliveries they will not start (draining).
    func putBack(_ delivery: Delivery, endingConsumer: Bool = true) {
        guard isStream, let stream else {
            connection.settle(delivery.tag, .nack(requeue: true))
            return
        }
        connection.settle(delivery.tag, .ack)
        if let offset = StreamPosition.offset(of: delivery) { stream.position.abandoned(offset) }
        if endingConsumer { stream.endConsumer() }
    }


    /// The reply (to `reply_to`, with the request's correlation id) and the handler's publishes.
    private func outputs(of outcome: HandlerOutcome, _ delivery: Delivery) -> [OutgoingMessage] {
        let output: HandlerOutput
        switch outcome {
        case .success(let o), .verdict(.ack, _, let o, _): output = o
        default: return []
        }
        var messages = output.publishes
        if let reply = output.reply, let replyTo = delivery.properties.replyTo, !replyTo.isEmpty {
            messages.append(OutgoingMessage(
                exchange: "", routingKey: replyTo, mandatory: true,
                properties: output.replyProperties(correlationID: delivery.properties.correlationID), body: reply))
        }
        return messages
    }

}

/// A delivery's log context, kept as plain values: the metadata dictionary is built only when an
/// event is actually logged (swift-log evaluates metadata lazily), not for every message.
struct MessageLog {
    /// What every delivery of a consumer logs with.
    struct Base: Sendable {
        var logger: Logger
        var queue: String
        /// The logger's level, read once: reading it through the logger copies its handler
        /// (an existential) for every delivery, and a logger value's level never changes.
        var logLevel: Logger.Level

        init(logger: Logger, queue: String) {
            (self.logger, self.queue, logLevel) = (logger, queue, logger.logLevel)
        }
    }

    private let base: Shared<Base>
    var logger: Logger { base.value.logger }
    var queue: String { base.value.queue }
    /// What the metadata needs of the delivery, not a copy of all of it.
    let deliveryTag: UInt64
    let messageID: AMQPString?
    let attempt: Int
    /// The delivery's trace context, or its handler run's when only one runs (`trace_id`, `span_id`).
    var trace: MessageTrace
    var handler: String?
    var outcome: String?
    var duration: Duration?
    /// Where an unrouted message came from, for its log line (boxed: few messages are unrouted).
    var unrouted: Shared<(exchange: AMQPString, routingKey: AMQPString, type: AMQPString)>?

    init(logger: Logger, queue: String, delivery: Delivery, attempt: Int, trace: MessageTrace) {
        self.init(Shared(Base(logger: logger, queue: queue)), delivery: delivery, attempt: attempt, trace: trace)
    }

    init(_ base: Shared<Base>, delivery: Delivery, attempt: Int, trace: MessageTrace) {
        self.base = base
        self.deliveryTag = delivery.tag.value
        self.messageID = delivery.properties.messageID
        self.attempt = attempt
        self.trace = trace
    }

    func metadata(_ extra: Logger.Metadata) -> Logger.Metadata {
        var metadata: Logger.Metadata = [
            LogKeys.queue: "\(queue)", LogKeys.deliveryTag: "\(deliveryTag)", LogKeys.attempt: "\(attempt)",
            LogKeys.traceID: "\(trace.traceIDText)", LogKeys.spanID: "\(trace.spanIDText)",
        ]
        if let messageID { metadata[LogKeys.messageID] = "\(messageID)" }
        if let handler { metadata[LogKeys.handler] = "\(handler)" }
        if let outcome { metadata[LogKeys.outcome] = "\(outcome)" }
        if let duration { metadata[LogKeys.durationMS] = "\(duration.milliseconds)" }
        if let unrouted = unrouted?.value {
            metadata["exchange"] = "\(unrouted.exchange)"
            metadata["routing_key"] = "\(unrouted.routingKey)"
            metadata["type"] = "\(unrouted.type)"
        }
        return metadata.merging(extra) { _, new in new }
    }

    /// Logs what the delivery decision asked for.
    func event(_ event: DeliveryDecision.Event) {
        guard base.value.logLevel <= event.level else { return }
        var extra: Logger.Metadata = [:]
        if let error = event.error { extra[LogKeys.error] = "\(error)" }
        if let reason = event.reason { extra[LogKeys.reason] = "\(reason.rawValue)" }
        if let destination = event.destination { extra["destination"] = "\(destination)" }
        if let retryIn = event.retryIn { extra["retry_in"] = "\(retryIn.configText)" }
        logger.log(level: event.level, "\(event.message)", metadata: metadata(extra))
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
