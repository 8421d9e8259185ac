import AMQP
import Synchronization
import W3CTraceContext

/// Whether warren records spans (docs/tracing.md, "Exporting spans"), as the engine hands it to
/// every queue's `DeliveryProcessor`.
///
/// `off` is the seam that keeps a warren without `[tracing]` exactly as fast as propagation
/// alone: a delivery costs one switch on this enum. `on` holds the recorder; a delivery whose
/// trace is sampled then gets a `TracedDelivery` (its consumer span) and each handler run a
/// `RunSpan`, whose ids are the ones the handler receives and the log lines name. An unsampled
/// delivery gets no span at all: the sampler decides before anything is recorded.
public enum DeliveryTracing: Sendable {
    case off
    case on(SpanRecorder)

    /// The engine's tracing, for the processors its sessions build: a task-local that
    /// `Engine.run` sets for its whole task tree, so the sessions and queue runners in between
    /// need not carry it (they are read once per consumer, not per message).
    @TaskLocal static var engine: DeliveryTracing = .off

    /// The delivery's trace context (the producer's, when its `traceparent` is valid, else a new
    /// trace) and, when its trace is sampled and spans are recorded, its span; the context is
    /// then the span's.
    func start(queue: String, _ delivery: Delivery, attempt: Int) -> (trace: MessageTrace, traced: TracedDelivery?) {
        guard case .on(let recorder) = self else { return (MessageTrace.of(headers: delivery.properties.headers), nil) }
        var trace = MessageTrace.of(headers: delivery.properties.headers, sampler: recorder.sampler)
        guard recorder.sampler.samples(trace) else {
            // A sampler that does not follow parents may turn down a sampled one: what is
            // passed on says so.
            trace.flags.remove(.sampled)
            return (trace, nil)
        }
        let traced = TracedDelivery(recorder: recorder, queue: queue, delivery: delivery, attempt: attempt, remote: trace)
        return (traced.trace, traced)
    }
}

/// Where ended spans go (the export queue), and which traces get spans.
public struct SpanRecorder: Sendable {
    let sampler: TraceSampler
    let queue: SpanQueue

    func record(_ span: FinishedSpan) {
        queue.append(span)
    }

    /// A new span id under `parent`.
    static func child(of parent: MessageTrace) -> MessageTrace {
        var ids = TraceIDSource()
        var trace = parent.child(using: &ids)
        trace.flags = .sampled
        return trace
    }
}

/// One delivery's consumer span, `<queue> process`, with the OpenTelemetry messaging attributes.
/// Its context is the delivery's `MessageTrace` (what retry and dead-letter copies carry and
/// what the log lines of a fan-out name); it ends when warren has settled the delivery, with
/// the settlement (`warren.ack_decision`) the log line reports.
final class TracedDelivery: Sendable {
    let recorder: SpanRecorder
    /// The delivery span's own context: its parent, when the message had one, is the
    /// producer's span (`parentSpanID`).
    let trace: MessageTrace
    let queue: String
    let start: UInt64
    // What the span's attributes say of the delivery, kept as it arrived; the attribute list is
    // built once, when the span ends.
    let routingKey: String
    let messageID: String?
    let deliveryTag: Int
    let bodySize: Int
    let redelivered: Bool
    let attempt: Int

    init(recorder: SpanRecorder, queue: String, delivery: Delivery, attempt: Int, remote: MessageTrace) {
        self.recorder = recorder
        self.queue = queue
        start = SpanClock.now()
        // A trace started here already drew the delivery's span id; a remote one is the parent.
        trace = remote.isRemote ? SpanRecorder.child(of: remote) : remote
        routingKey = "\(delivery.routingKey)"
        messageID = delivery.properties.messageID.flatMap { $0.isEmpty ? nil : "\($0)" }
        deliveryTag = Int(truncatingIfNeeded: delivery.tag.value)
        bodySize = delivery.oversizedBody?.size ?? delivery.body.count
        redelivered = delivery.redelivered
        self.attempt = attempt
    }

    /// A handler run's span, `<handler> run`, a child of this one.
    func startRun(_ handler: String) -> RunTracing {
        RunTracing(delivery: self, run: RunSpan(recorder: recorder, parent: trace))
    }

    /// Records a publish's span, `publish <exchange>` of kind producer, a child of this one,
    /// with how the broker took it (`warren.publish.result`: confirmed, returned, nacked,
    /// timeout, failed; the values of `warren_publishes_total`'s `result`).
    func recordPublish(_ message: OutgoingMessage, started: UInt64, result: PublishResult?, problem: PublishProblem?) {
        let exchange = message.exchange.isEmpty ? "amq.default" : message.exchange
        let messageID = message.properties.messageID.flatMap { $0.isEmpty ? nil : "\($0)" }
        var attributes = Self.messaging(
            operation: ("send", "publish"), destination: exchange, routingKey: "\(message.routingKey)", messageID: messageID, capacity: 7)
        if let result { attributes.append(SpanAttribute("warren.publish.result", result.label)) }
        recorder.record(
            FinishedSpan(
                trace: SpanRecorder.child(of: trace), name: "publish \(exchange)", kind: .producer, start: started, end: SpanClock.now(),
                attributes: attributes, error: problem?.text))
    }

    /// The OpenTelemetry messaging attributes a consumer and a producer span share, in a list
    /// with room for `capacity`.
    private static func messaging(
        operation: (type: String, name: String), destination: String, routingKey: String, messageID: String?, capacity: Int
    ) -> [SpanAttribute] {
        var attributes: [SpanAttribute] = []
        attributes.reserveCapacity(capacity)
        attributes.append(SpanAttribute("messaging.system", "rabbitmq"))
        attributes.append(SpanAttribute("messaging.operation.type", operation.type))
        attributes.append(SpanAttribute("messaging.operation.name", operation.name))
        attributes.append(SpanAttribute("messaging.destination.name", destination))
        attributes.append(SpanAttribute("messaging.rabbitmq.destination.routing_key", routingKey))
        if let messageID { attributes.append(SpanAttribute("messaging.message.id", messageID)) }
        return attributes
    }

    /// Ends the span with how processing went: the handlers' result (`warren.outcome`, as the
    /// log's `outcome`) and what warren did with the delivery (`warren.ack_decision`).
    func end(outcome: String?, decision: String, error: String?) {
        var attributes = Self.messaging(
            operation: ("process", "process"), destination: queue, routingKey: routingKey, messageID: messageID, capacity: 12)
        attributes.append(SpanAttribute("messaging.rabbitmq.message.delivery_tag", deliveryTag))
        attributes.append(SpanAttribute("messaging.message.body.size", bodySize))
        attributes.append(SpanAttribute("warren.message.redelivered", redelivered))
        attributes.append(SpanAttribute("warren.attempt", attempt))
        if let outcome { attributes.append(SpanAttribute("warren.outcome", outcome)) }
        attributes.append(SpanAttribute("warren.ack_decision", decision))
        recorder.record(
            FinishedSpan(
                trace: trace, name: "\(queue) process", kind: .consumer, start: start, end: SpanClock.now(), attributes: attributes,
                error: error))
    }

    /// Ends the span as the delivery's log line ends it: its outcome, the settlement, the error.
    func end(_ log: MessageLog, _ decision: MessageOutcome, _ event: DeliveryDecision.Event) {
        end(outcome: log.outcome, decision: decision.label, error: event.error)
    }
}

/// What a handler run carries of the tracing: its delivery's span (for a fan-out's next run)
/// and its own.
struct RunTracing: Sendable {
    let delivery: TracedDelivery
    let run: RunSpan
}

/// One handler run's span. Its context is the run's `MessageTrace`: the `traceparent` the
/// handler receives (TRACEPARENT, the pipe request, the HTTP header, the plugin field).
final class RunSpan: Sendable {
    let recorder: SpanRecorder
    let trace: MessageTrace
    let start: UInt64
    /// A span ends once: the run ends it, and a delivery whose first handler was skipped
    /// (dedup) ends the one started for it.
    private let ended = Atomic<Bool>(false)

    init(recorder: SpanRecorder, parent: MessageTrace) {
        self.recorder = recorder
        trace = SpanRecorder.child(of: parent)
        start = SpanClock.now()
    }

    /// Ends the span with the run's result; a failure (or a verdict with an error) is recorded
    /// with warren's failure text, as the log line says it.
    func end(handler: String, _ outcome: HandlerOutcome) {
        guard !ended.exchange(true, ordering: .relaxed) else { return }
        let error = DeliveryDecision.errorText(outcome)
        var exception: String?
        if case .failure = outcome { exception = error }
        recorder.record(
            FinishedSpan(
                trace: trace, name: "\(handler) run", kind: .internal, start: start, end: SpanClock.now(),
                attributes: [SpanAttribute("warren.handler", handler), SpanAttribute("warren.handler.result", outcome.resultName)],
                error: error, exception: exception))
    }

    /// Ends a span whose handler did not run (the dedup store said it already succeeded).
    func endSkipped(handler: String) {
        guard !ended.exchange(true, ordering: .relaxed) else { return }
        recorder.record(
            FinishedSpan(
                trace: trace, name: "\(handler) run", kind: .internal, start: start, end: SpanClock.now(),
                attributes: [SpanAttribute("warren.handler", handler), SpanAttribute("warren.handler.result", "skipped")]))
    }
}
