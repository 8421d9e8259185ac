import AMQP
import Synchronization
import Tracing
import W3CTraceContext

/// Whether warren exports spans (docs/tracing.md, "Exporting spans"), as the engine hands it to
/// every queue's `DeliveryProcessor`.
///
/// `off` is the seam that keeps a warren without `[tracing]` exactly as fast as phase 1's
/// propagation alone: a delivery costs one switch on this enum, no tracer call and no
/// `ServiceContext`. `on` holds the tracer swift-otel built; each delivery then gets a
/// `TracedDelivery` (its consumer span) and each handler run a `RunSpan`, whose ids are the ones
/// the handler receives and the log lines name.
public enum DeliveryTracing: Sendable {
    case off
    case on(SpanSource)

    /// The engine's tracing, for the processors its sessions build: a task-local that
    /// `Engine.run` sets for its whole task tree, so the sessions and queue runners in between
    /// need not carry it (they are read once per consumer, not per message).
    @TaskLocal static var engine: DeliveryTracing = .off

    /// The span of a delivery, or nil when tracing is off. `trace` is phase 1's context of the
    /// delivery (the producer's, when its `traceparent` is valid): its span becomes the parent.
    func startDelivery(queue: String, _ delivery: Delivery, attempt: Int, trace: MessageTrace) -> TracedDelivery? {
        guard case .on(let source) = self else { return nil }
        return TracedDelivery(source: source, queue: queue, delivery: delivery, attempt: attempt, remote: trace)
    }
}

/// The tracer spans are made with, and how their ids are read back: swift-otel's span context
/// type is not public, so a span's ids are read by injecting its context with the W3C
/// propagator into a dictionary and parsing the `traceparent` written there.
public struct SpanSource: Sendable {
    let tracer: any Tracer

    public init(tracer: any Tracer) {
        self.tracer = tracer
    }

    func start(_ name: String, parent: ServiceContext, kind: SpanKind) -> any Span {
        tracer.startSpan(name, context: parent, ofKind: kind)
    }

    /// The ids of a span's context; nil when the tracer gave it none (a constant "always off"
    /// sampler hands out one shared span without ids).
    func ids(of context: ServiceContext) -> TraceHeaderValue.Parent? {
        var carrier: [String: String] = [:]
        tracer.inject(context, into: &carrier, using: DictionaryInjector())
        guard var traceparent = carrier[MessageTrace.traceparentHeader] else { return nil }
        return traceparent.withUTF8 { TraceHeaderValue.parseTraceparent($0) }
    }

    /// A span's context as a `MessageTrace` under `parent` (nil: a root), or `fallback` when
    /// the tracer gave the span no ids.
    func trace(of span: any Span, parentSpanID: SpanID?, state: String?, fallback: @autoclosure () -> MessageTrace) -> MessageTrace {
        guard let ids = ids(of: span.context) else { return fallback() }
        return MessageTrace(traceID: ids.traceID, spanID: ids.spanID, parentSpanID: parentSpanID, flags: ids.flags, state: state)
    }

    /// The context of a remote parent (the producer's span), extracted the way the propagator
    /// reads it from a carrier. The `traceparent` given is phase 1's rendering of a value it
    /// already validated, so the propagator never sees (nor logs) an invalid one; `tracestate`
    /// is kept by `MessageTrace` as received and not handed to the propagator.
    func remoteContext(_ trace: MessageTrace) -> ServiceContext {
        var context = ServiceContext.topLevel
        tracer.extract([MessageTrace.traceparentHeader: trace.traceparent], into: &context, using: DictionaryExtractor())
        return context
    }
}

struct DictionaryInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) {
        carrier[key] = value
    }
}

struct DictionaryExtractor: Extractor {
    func extract(key: String, from carrier: [String: String]) -> String? {
        carrier[key]
    }
}

/// One delivery's consumer span, `<queue> process`, with the OpenTelemetry messaging attributes.
/// Its context is the delivery's `MessageTrace` (what retry and dead-letter copies carry and
/// what the log lines of a fan-out name); it ends when warren has settled the delivery, with
/// the settlement (`warren.ack_decision`) the log line reports.
final class TracedDelivery: Sendable {
    let source: SpanSource
    let span: any Span
    /// The delivery span's own context (its parent, when the message had one, is the
    /// producer's span: `parentSpanID`).
    let trace: MessageTrace

    init(source: SpanSource, queue: String, delivery: Delivery, attempt: Int, remote: MessageTrace) {
        self.source = source
        let parent = remote.isRemote ? source.remoteContext(remote) : .topLevel
        let span = source.start("\(queue) process", parent: parent, kind: .consumer)
        self.span = span
        trace = source.trace(of: span, parentSpanID: remote.isRemote ? remote.spanID : nil, state: remote.state, fallback: remote)
        guard span.isRecording else { return }
        Self.messaging(
            span, operation: ("process", "process"), destination: queue, routingKey: delivery.routingKey,
            messageID: delivery.properties.messageID)
        span.attributes["messaging.rabbitmq.message.delivery_tag"] = Int(truncatingIfNeeded: delivery.tag.value)
        span.attributes["messaging.message.body.size"] = delivery.oversizedBody?.size ?? delivery.body.count
        span.attributes["warren.message.redelivered"] = delivery.redelivered
        span.attributes["warren.attempt"] = attempt
    }

    /// A handler run's span, `<handler> run`, a child of this one.
    func startRun(_ handler: String) -> RunTracing {
        RunTracing(delivery: self, run: RunSpan(source: source, handler: handler, parent: span.context, delivery: trace))
    }

    /// A publish's span, `publish <exchange>` of kind producer, a child of this one.
    func startPublish(_ message: OutgoingMessage) -> any Span {
        let exchange = message.exchange.isEmpty ? "amq.default" : message.exchange
        let span = source.start("publish \(exchange)", parent: self.span.context, kind: .producer)
        if span.isRecording {
            Self.messaging(
                span, operation: ("send", "publish"), destination: exchange, routingKey: message.routingKey,
                messageID: message.properties.messageID)
        }
        return span
    }

    /// The OpenTelemetry messaging attributes a consumer and a producer span share.
    private static func messaging(
        _ span: any Span, operation: (type: String, name: String), destination: String, routingKey: AMQPString, messageID: AMQPString?
    ) {
        span.attributes["messaging.system"] = "rabbitmq"
        span.attributes["messaging.operation.type"] = operation.type
        span.attributes["messaging.operation.name"] = operation.name
        span.attributes["messaging.destination.name"] = destination
        span.attributes["messaging.rabbitmq.destination.routing_key"] = "\(routingKey)"
        if let id = messageID, !id.isEmpty { span.attributes["messaging.message.id"] = "\(id)" }
    }

    /// Ends the span with how processing went: the handlers' result (`warren.outcome`, as the
    /// log's `outcome`) and what warren did with the delivery (`warren.ack_decision`).
    func end(outcome: String?, decision: String, error: String?) {
        if span.isRecording {
            if let outcome { span.attributes["warren.outcome"] = outcome }
            span.attributes["warren.ack_decision"] = decision
            if let error { span.setStatus(SpanStatus(code: .error, message: error)) }
        }
        span.end()
    }
}

extension TracedDelivery {
    /// How the broker took a publish (`warren.publish.result`: confirmed, returned, nacked,
    /// timeout, failed; the values of `warren_publishes_total`'s `result`).
    static func published(_ span: any Span, _ result: PublishResult) {
        if span.isRecording { span.attributes["warren.publish.result"] = result.label }
    }

    static func ended(_ span: any Span, _ problem: PublishProblem?) {
        if let problem, span.isRecording { span.setStatus(SpanStatus(code: .error, message: problem.text)) }
        span.end()
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
    let span: any Span
    let trace: MessageTrace
    /// A span ends once: the run ends it, and a delivery whose first handler was skipped
    /// (dedup) ends the one started for it.
    private let ended = Atomic<Bool>(false)

    init(source: SpanSource, handler: String, parent: ServiceContext, delivery: MessageTrace) {
        let span = source.start("\(handler) run", parent: parent, kind: .internal)
        self.span = span
        trace = source.trace(of: span, parentSpanID: delivery.spanID, state: delivery.state, fallback: delivery.child())
        if span.isRecording { span.attributes["warren.handler"] = handler }
    }

    /// Ends the span with the run's result; a failure (or a verdict with an error) is recorded
    /// with warren's failure text, as the log line says it.
    func end(handler: String, _ outcome: HandlerOutcome) {
        guard !ended.exchange(true, ordering: .relaxed) else { return }
        if span.isRecording {
            span.operationName = "\(handler) run"
            span.attributes["warren.handler"] = handler
            span.attributes["warren.handler.result"] = outcome.resultName
            if let error = DeliveryDecision.errorText(outcome) {
                if case .failure = outcome { span.recordError(HandlerRunError(text: error)) }
                span.setStatus(SpanStatus(code: .error, message: error))
            }
        }
        span.end()
    }

    /// Ends a span whose handler did not run (the dedup store said it already succeeded).
    func endSkipped() {
        guard !ended.exchange(true, ordering: .relaxed) else { return }
        if span.isRecording { span.attributes["warren.handler.result"] = "skipped" }
        span.end()
    }
}

/// A handler failure as an `Error` for the span's exception event: its message is warren's
/// failure text.
struct HandlerRunError: Error, CustomStringConvertible {
    var text: String
    var description: String { text }
}
