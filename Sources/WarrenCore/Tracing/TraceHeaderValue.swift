import AMQP
import W3CTraceContext

/// The W3C Trace Context header grammar (Trace Context Level 1), read from and written to the
/// header bytes directly: no Foundation, no regular expression, no intermediate string.
///
/// Written here rather than taken from `W3CTraceContext.TraceContext(traceParentHeaderValue:)`
/// because that parser accepts only version 00 (W3C asks a receiver to read a higher version's
/// first four fields), takes a `String` where a header may be bytes, and its `tracestate`
/// parser (not public) rebuilds the list instead of passing it on as received and does not
/// enforce the 32-member limit. The ids it produces are that package's types.
enum TraceHeaderValue {
    /// `00-` + 32 + `-` + 16 + `-` + 2.
    static let traceparentLength = 55
    /// W3C: at most 32 list members in `tracestate`, and vendors need not pass on more than 512
    /// characters; warren drops a longer or larger one whole.
    static let tracestateMaxMembers = 32
    static let tracestateMaxLength = 512

    struct Parent: Sendable, Hashable {
        var traceID: TraceID
        var spanID: SpanID
        var flags: TraceFlags
    }

    // MARK: traceparent

    /// The ids and flags of a `traceparent` header value; nil when it is not valid. The value must
    /// be a string (or byte array) header.
    static func parseTraceparent(_ value: FieldValue) -> Parent? {
        switch value {
        case .string(let text):
            var text = text
            return text.withUTF8 { parseTraceparent($0) }
        case .bytes(let bytes), .nonUTF8String(let bytes):
            return bytes.withUnsafeBufferPointer { parseTraceparent($0) }
        default:
            return nil
        }
    }

    /// `version-traceid-parentid-flags`, lowercase hex. Version 00 is exactly 55 characters; a
    /// higher version (not `ff`) is read the same way and may carry more after a `-` at 55.
    /// All-zero trace or span ids are invalid.
    static func parseTraceparent(_ b: UnsafeBufferPointer<UInt8>) -> Parent? {
        guard b.count >= traceparentLength, let version = hexByte(b[0], b[1]), version != 0xFF else { return nil }
        if version == 0 {
            guard b.count == traceparentLength else { return nil }
        } else if b.count > traceparentLength {
            guard b[traceparentLength] == dash else { return nil }
        }
        guard b[2] == dash, b[35] == dash, b[52] == dash else { return nil }
        guard let high = hex64(b, from: 3), let low = hex64(b, from: 19), high != 0 || low != 0 else { return nil }
        guard let span = hex64(b, from: 36), span != 0 else { return nil }
        guard let flags = hexByte(b[53], b[54]) else { return nil }
        return Parent(traceID: traceID(high: high, low: low), spanID: spanID(span), flags: TraceFlags(rawValue: flags))
    }

    /// Writes `00-<trace id>-<span id>-<flags>` (55 bytes) at the start of `buffer`.
    static func render(_ traceID: TraceID, _ spanID: SpanID, _ flags: TraceFlags, into buffer: UnsafeMutableBufferPointer<UInt8>) {
        precondition(buffer.count >= traceparentLength, "traceparent buffer of \(buffer.count) bytes")
        buffer[0] = zero
        buffer[1] = zero
        buffer[2] = dash
        withUnsafeBytes(of: traceID.bytes) { raw in
            for index in 0..<16 { writeHex(raw[index], into: buffer, at: 3 + 2 * index) }
        }
        buffer[35] = dash
        withUnsafeBytes(of: spanID.bytes) { raw in
            for index in 0..<8 { writeHex(raw[index], into: buffer, at: 36 + 2 * index) }
        }
        buffer[52] = dash
        writeHex(flags.rawValue, into: buffer, at: 53)
    }

    static func hex(_ traceID: TraceID) -> String {
        String(unsafeUninitializedCapacity: 32, initializingUTF8With: { buffer in
            withUnsafeBytes(of: traceID.bytes) { raw in
                for index in 0..<16 { writeHex(raw[index], into: buffer, at: 2 * index) }
            }
            return 32
        })
    }

    static func hex(_ spanID: SpanID) -> String {
        String(unsafeUninitializedCapacity: 16, initializingUTF8With: { buffer in
            withUnsafeBytes(of: spanID.bytes) { raw in
                for index in 0..<8 { writeHex(raw[index], into: buffer, at: 2 * index) }
            }
            return 16
        })
    }

    static func traceID(high: UInt64, low: UInt64) -> TraceID {
        var bytes = TraceID.null.bytes
        withUnsafeMutableBytes(of: &bytes) { raw in
            raw.storeBytes(of: high.bigEndian, toByteOffset: 0, as: UInt64.self)
            raw.storeBytes(of: low.bigEndian, toByteOffset: 8, as: UInt64.self)
        }
        return TraceID(bytes: bytes)
    }

    static func spanID(_ value: UInt64) -> SpanID {
        var bytes = SpanID.null.bytes
        withUnsafeMutableBytes(of: &bytes) { raw in
            raw.storeBytes(of: value.bigEndian, toByteOffset: 0, as: UInt64.self)
        }
        return SpanID(bytes: bytes)
    }

    // MARK: tracestate

    /// The `tracestate` header value as received, when it is a valid, non-empty list of at most
    /// 32 members and 512 characters; nil otherwise (W3C: an invalid list is discarded whole).
    static func validTracestate(_ value: FieldValue) -> String? {
        switch value {
        case .string(let text):
            var text = text
            return text.withUTF8 { isValidTracestate($0) } ? text : nil
        case .bytes(let bytes):
            return bytes.withUnsafeBufferPointer { isValidTracestate($0) } ? String(decoding: bytes, as: UTF8.self) : nil
        default:
            // A long string that is not UTF-8 cannot be a list of printable ASCII.
            return nil
        }
    }

    /// `list = list-member 0*31( OWS "," OWS list-member )`, where a member is `key "=" value`
    /// or empty (only spaces and tabs), keys are unique, and at least one member is not empty.
    static func isValidTracestate(_ b: UnsafeBufferPointer<UInt8>) -> Bool {
        guard !b.isEmpty, b.count <= tracestateMaxLength else { return false }
        // At most 32 keys: their ranges, to find a repeated one.
        var keys: [Range<Int>] = []
        var start = 0
        while start <= b.count {
            var end = start
            while end < b.count && b[end] != comma { end += 1 }
            var first = start
            var last = end
            while first < last && isOWS(b[first]) { first += 1 }
            while last > first && isOWS(b[last - 1]) { last -= 1 }
            if first < last {
                guard keys.count < tracestateMaxMembers, let key = member(b, first..<last) else { return false }
                for other in keys where equal(b, other, key) { return false }
                if keys.isEmpty { keys.reserveCapacity(4) }
                keys.append(key)
            }
            start = end + 1
        }
        return !keys.isEmpty
    }

    /// The key's range when `key=value` in `range` (no surrounding blanks) is a valid member.
    private static func member(_ b: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Range<Int>? {
        var equals = range.lowerBound
        while equals < range.upperBound && b[equals] != UInt8(ascii: "=") { equals += 1 }
        guard equals < range.upperBound else { return nil }
        let key = range.lowerBound..<equals
        guard isValidKey(b, key), isValidValue(b, (equals + 1)..<range.upperBound) else { return nil }
        return key
    }

    /// `simple-key = lcalpha 0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/")`, or
    /// `tenant-id "@" system-id` with `tenant-id = (lcalpha / DIGIT) 0*240(...)` and
    /// `system-id = lcalpha 0*13(...)`.
    private static func isValidKey(_ b: UnsafeBufferPointer<UInt8>, _ key: Range<Int>) -> Bool {
        var at: Int?
        for index in key where b[index] == UInt8(ascii: "@") {
            guard at == nil else { return false }
            at = index
        }
        guard let at else {
            return isKeyPart(b, key, maxCount: 256, firstMayBeDigit: false)
        }
        return isKeyPart(b, key.lowerBound..<at, maxCount: 241, firstMayBeDigit: true)
            && isKeyPart(b, (at + 1)..<key.upperBound, maxCount: 14, firstMayBeDigit: false)
    }

    private static func isKeyPart(_ b: UnsafeBufferPointer<UInt8>, _ part: Range<Int>, maxCount: Int, firstMayBeDigit: Bool) -> Bool {
        guard !part.isEmpty, part.count <= maxCount else { return false }
        let first = b[part.lowerBound]
        guard isLowerAlpha(first) || (firstMayBeDigit && isDigit(first)) else { return false }
        for index in part.dropFirst() {
            let c = b[index]
            guard isLowerAlpha(c) || isDigit(c) || c == UInt8(ascii: "_") || c == UInt8(ascii: "-") || c == UInt8(ascii: "*")
                || c == UInt8(ascii: "/")
            else { return false }
        }
        return true
    }

    /// `value = 0*255(chr) nblk-chr`: printable ASCII but `,` and `=`, ending with a non-blank
    /// (the caller has cut the trailing blanks, which are the list's optional whitespace).
    private static func isValidValue(_ b: UnsafeBufferPointer<UInt8>, _ value: Range<Int>) -> Bool {
        guard !value.isEmpty, value.count <= 256 else { return false }
        for index in value {
            let c = b[index]
            guard c >= 0x20 && c <= 0x7E && c != comma && c != UInt8(ascii: "=") else { return false }
        }
        return true
    }

    private static func equal(_ b: UnsafeBufferPointer<UInt8>, _ x: Range<Int>, _ y: Range<Int>) -> Bool {
        guard x.count == y.count else { return false }
        for offset in 0..<x.count where b[x.lowerBound + offset] != b[y.lowerBound + offset] { return false }
        return true
    }

    // MARK: characters

    private static let dash = UInt8(ascii: "-")
    private static let comma = UInt8(ascii: ",")
    private static let zero = UInt8(ascii: "0")

    private static func isOWS(_ c: UInt8) -> Bool { c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") }
    private static func isLowerAlpha(_ c: UInt8) -> Bool { c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z") }
    private static func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }

    /// A lowercase hex digit's value; nil for anything else (uppercase is invalid in W3C ids).
    private static func nibble(_ c: UInt8) -> UInt8? {
        if isDigit(c) { return c &- UInt8(ascii: "0") }
        if c >= UInt8(ascii: "a") && c <= UInt8(ascii: "f") { return c &- UInt8(ascii: "a") &+ 10 }
        return nil
    }

    private static func hexByte(_ high: UInt8, _ low: UInt8) -> UInt8? {
        guard let h = nibble(high), let l = nibble(low) else { return nil }
        return h << 4 | l
    }

    /// 16 hex digits from `start` (the caller has checked the length).
    private static func hex64(_ b: UnsafeBufferPointer<UInt8>, from start: Int) -> UInt64? {
        var value: UInt64 = 0
        for index in start..<(start + 16) {
            guard let digit = nibble(b[index]) else { return nil }
            value = value << 4 | UInt64(digit)
        }
        return value
    }

    private static func writeHex(_ byte: UInt8, into buffer: UnsafeMutableBufferPointer<UInt8>, at index: Int) {
        buffer[index] = hexDigit(byte >> 4)
        buffer[index + 1] = hexDigit(byte & 0x0F)
    }

    private static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") &+ value : UInt8(ascii: "a") &+ (value &- 10)
    }
}
