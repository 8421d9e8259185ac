import AMQP
import W3CTraceContext

/// The W3C trace context (`traceparent` / `tracestate`) of a delivery or of one handler run
/// (docs/tracing.md).
///
/// A delivery whose headers carry a valid `traceparent` continues that trace; any other starts
/// a new one here. Each handler run then works in a child of the delivery's context: the same
/// trace, a span id of its own, the parent's sampled flag, the `tracestate` passed through as
/// received. What warren publishes carries one of the two forward: a handler's outputs and reply
/// the run's, the copies of the input itself (retry, dead-letter, `republish`) the delivery's.
///
/// The ids are the `W3CTraceContext` types. A span is recorded from a value of this type
/// (`parentSpanID` is its parent, `isRemote` says whether the span id came from the message)
/// without converting anything.
public struct MessageTrace: Sendable, Hashable {
    public var traceID: TraceID
    public var spanID: SpanID
    /// The span this one continues: for a handler run, the delivery's span; nil for the
    /// delivery's own context (its parent, if any, is the producer's, and `spanID` is that span).
    public var parentSpanID: SpanID?
    public var flags: TraceFlags
    /// The `tracestate` exactly as received, when it is valid and not empty; nil otherwise.
    public var state: String?
    /// True when `spanID` came from the message's `traceparent` (the producer's span).
    public var isRemote: Bool

    public init(traceID: TraceID, spanID: SpanID, parentSpanID: SpanID? = nil, flags: TraceFlags, state: String? = nil, isRemote: Bool = false) {
        self.traceID = traceID
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.flags = flags
        self.state = state
        self.isRemote = isRemote
    }

    public static let traceparentHeader = "traceparent"
    public static let tracestateHeader = "tracestate"

    /// The context a delivery is processed in: the one its headers carry, else a new trace.
    /// Invalid header values are ignored (W3C: a receiver that cannot parse `traceparent`
    /// restarts the trace and does not read `tracestate`), never an error.
    public static func of(headers: FieldTable?, sampler: TraceSampler = .init()) -> MessageTrace {
        var ids = TraceIDSource()
        return of(headers: headers, sampler: sampler, using: &ids)
    }

    public static func of(headers: FieldTable?, sampler: TraceSampler = .init(), using generator: inout some RandomNumberGenerator) -> MessageTrace {
        guard let headers, let parent = headers[traceparentHeader].flatMap(TraceHeaderValue.parseTraceparent) else {
            return started(sampler: sampler, using: &generator)
        }
        let state = headers[tracestateHeader].flatMap(TraceHeaderValue.validTracestate)
        return MessageTrace(traceID: parent.traceID, spanID: parent.spanID, flags: parent.flags, state: state, isRemote: true)
    }

    /// A new trace: random trace and span ids, the sampled flag as the sampler decides.
    public static func started(sampler: TraceSampler = .init()) -> MessageTrace {
        var ids = TraceIDSource()
        return started(sampler: sampler, using: &ids)
    }

    public static func started(sampler: TraceSampler = .init(), using generator: inout some RandomNumberGenerator) -> MessageTrace {
        let traceID = TraceIDSource.traceID(using: &generator)
        return MessageTrace(
            traceID: traceID, spanID: TraceIDSource.spanID(using: &generator), flags: sampler.samples(newTrace: traceID) ? .sampled : [])
    }

    /// The context of one handler run under this one: same trace, a new span id, this span as
    /// its parent, the sampled flag (the other flag bits are unused in version 00, and W3C says
    /// to send them as zero), `tracestate` unchanged.
    public func child() -> MessageTrace {
        var ids = TraceIDSource()
        return child(using: &ids)
    }

    public func child(using generator: inout some RandomNumberGenerator) -> MessageTrace {
        MessageTrace(
            traceID: traceID, spanID: TraceIDSource.spanID(using: &generator), parentSpanID: spanID, flags: flags.intersection(.sampled),
            state: state, isRemote: false)
    }

    /// `00-<trace id>-<span id>-<flags>`, in lowercase hex: the version this warren speaks,
    /// whatever version it received.
    public var traceparent: String {
        String(unsafeUninitializedCapacity: TraceHeaderValue.traceparentLength, initializingUTF8With: { buffer in
            TraceHeaderValue.render(traceID, spanID, flags, into: buffer)
            return TraceHeaderValue.traceparentLength
        })
    }

    /// The trace id in 32 lowercase hex digits (the log's `trace_id`).
    public var traceIDText: String { TraceHeaderValue.hex(traceID) }

    /// The span id in 16 lowercase hex digits (the log's `span_id`).
    public var spanIDText: String { TraceHeaderValue.hex(spanID) }

    /// The same context as the package's `TraceContext` (without `tracestate`, which it keeps
    /// parsed into members: `state` is kept as received instead, so it is passed on unchanged).
    public var w3cContext: TraceContext {
        TraceContext(traceID: traceID, spanID: spanID, flags: flags, state: TraceState())
    }
}
