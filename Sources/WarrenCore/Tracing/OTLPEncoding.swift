import NIOCore
import W3CTraceContext

/// What every export request says about where the spans come from: OTLP's `Resource`
/// (`service.name`, the configured and `OTEL_RESOURCE_ATTRIBUTES` attributes, the SDK) and its
/// `InstrumentationScope` (warren and its version).
struct SpanResource: Sendable, Equatable {
    var attributes: [SpanAttribute]

    init(serviceName: String, attributes: [String: String]) {
        var list = [SpanAttribute("service.name", serviceName)]
        for key in attributes.keys.sorted() where key != "service.name" {
            list.append(SpanAttribute(key, attributes[key] ?? ""))
        }
        list.append(SpanAttribute("telemetry.sdk.name", "warren"))
        list.append(SpanAttribute("telemetry.sdk.language", "swift"))
        list.append(SpanAttribute("telemetry.sdk.version", WarrenVersion.current))
        self.attributes = list
    }

    static let scopeName = "warren"
}

/// OTLP's `ExportTraceServiceRequest` for a batch of spans, in the two OTLP/HTTP encodings:
/// binary protobuf (`application/x-protobuf`) and OTLP/JSON (`application/json`).
///
/// Written directly from `FinishedSpan` rather than through generated protobuf types: the
/// request has six message types, all of whose fields are scalars, strings or nested messages,
/// and writing them straight into the buffer that is sent avoids building a second object
/// graph, and a copy, for every span of a batch. The field numbers are those of opentelemetry-proto's `trace/v1`,
/// `common/v1`, `resource/v1` and `collector/trace/v1` (stable since OTLP 1.0).
enum OTLPEncoding {
    /// The binary request, sized exactly first and then written in place into the buffer the
    /// HTTP client sends (no length is patched afterwards, no byte copied twice). Nil if the
    /// sizes and the bytes ever disagreed (a bug, reported rather than sent).
    static func protobuf(_ spans: some Collection<FinishedSpan>, resource: SpanResource) -> ByteBuffer? {
        let resourceSize = resource.attributes.reduce(0) { $0 + ProtobufSize.field(ProtobufSize.keyValue($1)) }
        let scopeSize = ProtobufSize.field(SpanResource.scopeName.utf8.count) + ProtobufSize.field(WarrenVersion.current.utf8.count)
        // Each span's size, then each of its attributes' (written in that order below), so
        // nothing is sized twice.
        var sizes: [Int] = []
        sizes.reserveCapacity(spans.count * 16)
        var spansSize = 0
        for span in spans { spansSize += ProtobufSize.field(ProtobufSize.span(span, recording: &sizes)) }
        let scopeSpansSize = ProtobufSize.field(scopeSize) + spansSize
        let resourceSpansSize = ProtobufSize.field(resourceSize) + ProtobufSize.field(scopeSpansSize)
        let total = ProtobufSize.field(resourceSpansSize)

        var buffer = ByteBufferAllocator().buffer(capacity: total)
        var complete = false
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: total) { raw in
            var w = ProtobufWriter(raw)
            w.header(1, resourceSpansSize)  // ExportTraceServiceRequest.resource_spans
            w.header(1, resourceSize)  // ResourceSpans.resource
            for attribute in resource.attributes { w.keyValue(1, attribute) }  // Resource.attributes
            w.header(2, scopeSpansSize)  // ResourceSpans.scope_spans
            w.header(1, scopeSize)  // ScopeSpans.scope
            w.string(1, SpanResource.scopeName)
            w.string(2, WarrenVersion.current)
            var next = sizes.startIndex
            for span in spans { w.span(span, sizes: sizes, next: &next) }  // ScopeSpans.spans
            complete = !w.overflowed && w.offset == total
            return w.offset
        }
        return complete ? buffer : nil
    }

    /// The binary request as bytes (for tests and tools).
    static func protobufBytes(_ spans: some Collection<FinishedSpan>, resource: SpanResource) -> [UInt8] {
        protobuf(spans, resource: resource).map { Array($0.readableBytesView) } ?? []
    }

    static func json(_ spans: some Collection<FinishedSpan>, resource: SpanResource) -> [UInt8] {
        var w = JSONWriter()
        w.bytes.reserveCapacity(256 + spans.count * 1024)
        w.raw("{\"resourceSpans\":[{\"resource\":{\"attributes\":")
        w.attributes(resource.attributes)
        w.raw("},\"scopeSpans\":[{\"scope\":{\"name\":")
        w.string(SpanResource.scopeName)
        w.raw(",\"version\":")
        w.string(WarrenVersion.current)
        w.raw("},\"spans\":[")
        var first = true
        for span in spans {
            if !first { w.raw(",") }
            first = false
            w.span(span)
        }
        w.raw("]}]}]}")
        return w.bytes
    }
}

/// The encoded sizes of OTLP's messages. Every field number warren writes is below 16, so each
/// tag is one byte.
enum ProtobufSize {
    static func varint(_ value: UInt64) -> Int {
        max(1, (64 - value.leadingZeroBitCount + 6) / 7)
    }

    /// A length-delimited field whose content is `length` bytes: tag, length, content.
    static func field(_ length: Int) -> Int {
        1 + varint(UInt64(length)) + length
    }

    static func keyValue(_ attribute: SpanAttribute) -> Int {
        let value: Int
        switch attribute.value {
        case .string(let text): value = field(text.utf8.count)
        case .bool: value = 2
        case .int(let number): value = 1 + varint(UInt64(bitPattern: number))
        }
        return field(attribute.key.utf8.count) + field(value)
    }

    static let exceptionType = SpanAttribute("exception.type", "HandlerFailure")

    static func event(_ exception: String) -> Int {
        9 + field(9) + field(keyValue(exceptionType)) + field(keyValue(SpanAttribute("exception.message", exception)))
    }

    static func status(_ error: String) -> Int {
        field(error.utf8.count) + 2
    }

    /// A span's size; appends it, then each attribute's, to `sizes`.
    static func span(_ span: FinishedSpan, recording sizes: inout [Int]) -> Int {
        let at = sizes.endIndex
        sizes.append(0)
        var size = field(16) + field(8)
        if let state = span.trace.state { size += field(state.utf8.count) }
        if span.trace.parentSpanID != nil { size += field(8) }
        size += field(span.name.utf8.count) + 2 + 9 + 9
        for attribute in span.attributes {
            let attributeSize = keyValue(attribute)
            sizes.append(attributeSize)
            size += field(attributeSize)
        }
        if let exception = span.exception { size += field(event(exception)) }
        if let error = span.error { size += field(status(error)) }
        sizes[at] = size
        return size
    }
}

/// Protobuf's wire format written into a buffer sized by `ProtobufSize`: a write past its end
/// is not made and marks the request as broken.
struct ProtobufWriter {
    private let base: UnsafeMutableRawBufferPointer
    private(set) var offset = 0
    private(set) var overflowed = false

    init(_ base: UnsafeMutableRawBufferPointer) {
        self.base = base
    }

    mutating func byte(_ value: UInt8) {
        guard offset < base.count else {
            overflowed = true
            return
        }
        base[offset] = value
        offset += 1
    }

    mutating func raw(_ bytes: UnsafeRawBufferPointer) {
        guard base.count - offset >= bytes.count else {
            overflowed = true
            return
        }
        if let source = bytes.baseAddress, let target = base.baseAddress {
            (target + offset).copyMemory(from: source, byteCount: bytes.count)
        }
        offset += bytes.count
    }

    mutating func varint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            byte(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        byte(UInt8(value))
    }

    mutating func tag(_ field: UInt8, _ wireType: UInt8) {
        byte(field << 3 | wireType)
    }

    /// The tag and length of a length-delimited field; its content follows.
    mutating func header(_ field: UInt8, _ length: Int) {
        tag(field, 2)
        varint(UInt64(length))
    }

    mutating func bytes(_ field: UInt8, _ content: UnsafeRawBufferPointer) {
        header(field, content.count)
        raw(content)
    }

    mutating func string(_ field: UInt8, _ text: String) {
        var text = text
        text.withUTF8 { bytes(field, UnsafeRawBufferPointer($0)) }
    }

    mutating func fixed64(_ field: UInt8, _ value: UInt64) {
        tag(field, 1)
        withUnsafeBytes(of: value.littleEndian) { raw($0) }
    }

    /// `KeyValue { key = 1; AnyValue value = 2 }`, `AnyValue { string_value = 1; bool_value = 2;
    /// int_value = 3 }` (a oneof: a value is written even when it is zero or false).
    mutating func keyValue(_ field: UInt8, _ attribute: SpanAttribute, size: Int? = nil) {
        header(field, size ?? ProtobufSize.keyValue(attribute))
        string(1, attribute.key)
        switch attribute.value {
        case .string(let text):
            header(2, ProtobufSize.field(text.utf8.count))
            string(1, text)
        case .bool(let flag):
            header(2, 2)
            tag(2, 0)
            byte(flag ? 1 : 0)
        case .int(let number):
            let value = UInt64(bitPattern: number)
            header(2, 1 + ProtobufSize.varint(value))
            tag(3, 0)
            varint(value)
        }
    }

    /// `Span`: trace_id 1, span_id 2, trace_state 3, parent_span_id 4, name 5, kind 6,
    /// start 7, end 8, attributes 9, events 11, status 15 (`Status { message = 2; code = 3 }`).
    /// The span as `ScopeSpans.spans` (field 2), its size and its attributes' taken from
    /// `sizes` at `next`.
    mutating func span(_ span: FinishedSpan, sizes: [Int], next: inout Int) {
        guard next < sizes.endIndex else {
            overflowed = true
            return
        }
        header(2, sizes[next])
        next += 1
        withUnsafeBytes(of: span.trace.traceID.bytes) { bytes(1, $0) }
        withUnsafeBytes(of: span.trace.spanID.bytes) { bytes(2, $0) }
        if let state = span.trace.state { string(3, state) }
        if let parent = span.trace.parentSpanID { withUnsafeBytes(of: parent.bytes) { bytes(4, $0) } }
        string(5, span.name)
        tag(6, 0)
        varint(UInt64(span.kind.rawValue))
        fixed64(7, span.start)
        fixed64(8, span.end)
        for attribute in span.attributes {
            guard next < sizes.endIndex else {
                overflowed = true
                return
            }
            keyValue(9, attribute, size: sizes[next])
            next += 1
        }
        if let exception = span.exception {
            header(11, ProtobufSize.event(exception))  // Event { time_unix_nano = 1; name = 2; attributes = 3 }
            fixed64(1, span.end)
            string(2, "exception")
            keyValue(3, ProtobufSize.exceptionType)
            keyValue(3, SpanAttribute("exception.message", exception))
        }
        if let error = span.error {
            header(15, ProtobufSize.status(error))
            string(2, error)
            tag(3, 0)
            byte(2)  // STATUS_CODE_ERROR
        }
    }
}

/// OTLP/JSON: protobuf's JSON mapping with OTLP's exceptions (ids in lowercase hex, enums as
/// numbers); 64-bit integers are strings, as the mapping says.
struct JSONWriter {
    var bytes: [UInt8] = []

    mutating func raw(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    mutating func digits(_ value: some BinaryInteger) {
        var text = String(value)
        text.withUTF8 { bytes.append(contentsOf: $0) }
    }

    /// A JSON string: `"` and `\` escaped, control characters as `\u00XX`, the rest as UTF-8.
    mutating func string(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(byte)
            case 0..<0x20:
                raw("\\u00")
                bytes.append(Self.hexDigit(byte >> 4))
                bytes.append(Self.hexDigit(byte & 0xF))
            default:
                bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10
    }

    mutating func attributes(_ list: [SpanAttribute]) {
        raw("[")
        for (index, attribute) in list.enumerated() {
            if index > 0 { raw(",") }
            raw("{\"key\":")
            string(attribute.key)
            switch attribute.value {
            case .string(let text):
                raw(",\"value\":{\"stringValue\":")
                string(text)
            case .bool(let flag):
                raw(",\"value\":{\"boolValue\":")
                if flag { raw("true") } else { raw("false") }
            case .int(let number):
                raw(",\"value\":{\"intValue\":\"")
                digits(number)
                raw("\"")
            }
            raw("}}")
        }
        raw("]")
    }

    mutating func span(_ span: FinishedSpan) {
        raw("{\"traceId\":")
        string(TraceHeaderValue.hex(span.trace.traceID))
        raw(",\"spanId\":")
        string(TraceHeaderValue.hex(span.trace.spanID))
        if let state = span.trace.state {
            raw(",\"traceState\":")
            string(state)
        }
        if let parent = span.trace.parentSpanID {
            raw(",\"parentSpanId\":")
            string(TraceHeaderValue.hex(parent))
        }
        raw(",\"name\":")
        string(span.name)
        raw(",\"kind\":")
        digits(span.kind.rawValue)
        raw(",\"startTimeUnixNano\":\"")
        digits(span.start)
        raw("\",\"endTimeUnixNano\":\"")
        digits(span.end)
        raw("\",\"attributes\":")
        attributes(span.attributes)
        if let exception = span.exception {
            raw(",\"events\":[{\"timeUnixNano\":\"")
            digits(span.end)
            raw("\",\"name\":\"exception\",\"attributes\":")
            attributes([SpanAttribute("exception.type", "HandlerFailure"), SpanAttribute("exception.message", exception)])
            raw("}]")
        }
        if let error = span.error {
            raw(",\"status\":{\"code\":2,\"message\":")
            string(error)
            raw("}")
        }
        raw("}")
    }
}
