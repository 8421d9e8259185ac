import Glibc
import W3CTraceContext

/// One ended span as warren records it and the exporter encodes it (OTLP's `Span`): plain
/// values, built once when the span ends, so recording is an append to the export queue.
struct FinishedSpan: Sendable {
    /// OTLP's `SpanKind` numbers.
    enum Kind: UInt8, Sendable {
        case `internal` = 1
        case producer = 4
        case consumer = 5
    }

    /// The span's own context: `trace.spanID` is this span, `trace.parentSpanID` its parent,
    /// `trace.state` the `tracestate` it carries.
    var trace: MessageTrace
    var name: String
    var kind: Kind
    /// Nanoseconds since the Unix epoch.
    var start: UInt64
    var end: UInt64
    var attributes: [SpanAttribute]
    /// The error text of a span whose status is ERROR (nil: status unset).
    var error: String?
    /// A handler failure is also recorded as an `exception` event with this message.
    var exception: String?
}

/// One attribute: OpenTelemetry's string, integer and boolean values are all warren sets.
struct SpanAttribute: Sendable, Equatable {
    enum Value: Sendable, Equatable {
        case string(String)
        case int(Int64)
        case bool(Bool)
    }

    var key: String
    var value: Value

    init(_ key: String, _ value: String) { (self.key, self.value) = (key, .string(value)) }
    init(_ key: String, _ value: Int) { (self.key, self.value) = (key, .int(Int64(value))) }
    init(_ key: String, _ value: Bool) { (self.key, self.value) = (key, .bool(value)) }
}

/// The wall clock in nanoseconds since the Unix epoch, as spans are timed (a span's start and
/// end come from the same clock; an NTP step between them shows in its duration, as in every
/// OpenTelemetry SDK).
enum SpanClock {
    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return UInt64(clamping: time.tv_sec) &* 1_000_000_000 &+ UInt64(clamping: time.tv_nsec)
    }
}
