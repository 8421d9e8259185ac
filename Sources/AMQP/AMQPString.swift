import Foundation

/// An AMQP short string: up to 255 octets that the protocol does not promise are UTF-8.
///
/// Content properties (`message_id`, `correlation_id`, `reply_to`, `type`, ...), field-table keys,
/// exchange names and routing keys all arrive as short strings. A producer may put any bytes in
/// them, and every copy warren makes (retry, dead-letter, reply) must carry them unchanged: a
/// lossy `String(decoding:)` turned a `message_id` of 100 bytes 0xFF into 300 bytes of U+FFFD,
/// which no longer fit in a short string, so the dead-letter copy was refused and the message
/// came back forever.
///
/// Valid UTF-8 (nearly every message) is held as a `String`, so decoding one costs what a
/// `String` costs (nothing extra for up to 15 bytes, which Swift keeps inline); other bytes are
/// held as they are. The two forms never hold the same bytes, and equality and hashing compare
/// bytes, not Unicode canonical equivalence: two ids that differ in their bytes are different.
public struct AMQPString: Sendable, Hashable, ExpressibleByStringInterpolation, CustomStringConvertible {
    private enum Storage: Sendable {
        /// Always the form of valid UTF-8.
        case text(String)
        /// Only bytes that are not valid UTF-8.
        case bytes([UInt8])
    }

    private let storage: Storage

    public init(_ text: String) {
        storage = .text(text)
    }

    public init(stringLiteral value: String) {
        storage = .text(value)
    }

    public init(stringInterpolation: DefaultStringInterpolation) {
        storage = .text(String(stringInterpolation: stringInterpolation))
    }

    /// The exact bytes; kept as text when they are valid UTF-8.
    public init(bytes: some Collection<UInt8>) {
        switch bytes.withContiguousStorageIfAvailable({ Self.text(ifValid: $0) }) {
        case .some(.some(let text)): storage = .text(text)
        case .some(.none): storage = .bytes(Array(bytes))
        case .none: self = AMQPString(bytes: Array(bytes))
        }
    }

    /// The bytes as a `String` when they are valid UTF-8, else nil.
    ///
    /// Not `String(validating:as:)`: it took 80–120 ns for an 8–35-byte string, three to four
    /// times `String(decoding:as:)` (`swiftc -O -wmo`, on the 2-core build machine). Here ASCII
    /// (nearly every routing key, id and header name) is recognised eight bytes at a time and
    /// decoded as it is, at about the cost of `String(decoding:as:)` alone; anything else is
    /// decoded (which repairs invalid sequences) and kept only if the repair changed nothing.
    static func text(ifValid bytes: UnsafeBufferPointer<UInt8>) -> String? {
        let text = String(decoding: bytes, as: UTF8.self)
        if isASCII(bytes) { return text }
        return text.utf8.elementsEqual(bytes) ? text : nil
    }

    private static func isASCII(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let base = bytes.baseAddress else { return true }
        let raw = UnsafeRawPointer(base)
        let count = bytes.count
        var index = 0
        while index &+ 8 <= count {
            if raw.loadUnaligned(fromByteOffset: index, as: UInt64.self) & 0x8080_8080_8080_8080 != 0 { return false }
            index &+= 8
        }
        while index < count {
            if base[index] >= 0x80 { return false }
            index &+= 1
        }
        return true
    }

    /// The string, or nil when its bytes are not valid UTF-8.
    public var text: String? {
        if case .text(let text) = storage { return text }
        return nil
    }

    /// The exact bytes.
    public var bytes: [UInt8] {
        switch storage {
        case .text(let text): Array(text.utf8)
        case .bytes(let bytes): bytes
        }
    }

    /// Length in bytes, which is what the 255 limit of a short string counts.
    public var count: Int {
        switch storage {
        case .text(let text): text.utf8.count
        case .bytes(let bytes): bytes.count
        }
    }

    public var isEmpty: Bool { count == 0 }

    /// The string with every byte sequence that is not UTF-8 replaced by U+FFFD: for matching
    /// against configured text (routing-key patterns), never for a copy.
    public var lossyText: String {
        switch storage {
        case .text(let text): text
        case .bytes(let bytes): String(decoding: bytes, as: UTF8.self)
        }
    }

    /// The bytes in base64 (RFC 4648, with padding).
    public var base64: String {
        Data(bytes).base64EncodedString()
    }

    /// Calls `body` with the bytes, without a copy when the storage allows.
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        switch storage {
        case .text(let text):
            if let result = try text.utf8.withContiguousStorageIfAvailable({ try body(UnsafeRawBufferPointer($0)) }) {
                return result
            }
            return try Array(text.utf8).withUnsafeBytes(body)
        case .bytes(let bytes):
            return try bytes.withUnsafeBytes(body)
        }
    }

    /// For logs: valid UTF-8 as it is, except that control characters and every byte that is
    /// not UTF-8 are written `\xNN`, so a line stays one line of valid UTF-8 whatever a
    /// producer sent.
    public var description: String {
        if case .text(let text) = storage, !text.utf8.contains(where: Self.isControl) { return text }
        let bytes = self.bytes
        var out = ""
        out.reserveCapacity(bytes.count + 8)
        var parser = Unicode.UTF8.ForwardParser()
        var iterator = bytes.makeIterator()
        var position = 0
        while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid(let encoded):
                let scalar = Unicode.UTF8.decode(encoded)
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    out += Self.escaped(UInt8(truncatingIfNeeded: scalar.value))
                } else {
                    out.unicodeScalars.append(scalar)
                }
                position &+= encoded.count
            case .error(let length):
                for byte in bytes[position..<min(position &+ length, bytes.count)] { out += Self.escaped(byte) }
                position &+= length
            case .emptyInput:
                return out
            }
        }
    }

    private static func isControl(_ byte: UInt8) -> Bool { byte < 0x20 || byte == 0x7F }

    private static let hexDigits = Array("0123456789ABCDEF".utf8)

    private static func escaped(_ byte: UInt8) -> String {
        String(decoding: [UInt8(ascii: "\\"), UInt8(ascii: "x"), hexDigits[Int(byte >> 4)], hexDigits[Int(byte & 0x0F)]], as: UTF8.self)
    }

    public static func == (lhs: AMQPString, rhs: AMQPString) -> Bool {
        switch (lhs.storage, rhs.storage) {
        case (.text(let a), .text(let b)): sameBytes(a, b)
        case (.bytes(let a), .bytes(let b)): a == b
        default: false
        }
    }

    /// True when `self` holds exactly the UTF-8 bytes of `text`.
    public func hasBytes(of text: String) -> Bool {
        if case .text(let own) = storage { return Self.sameBytes(own, text) }
        return false
    }

    /// Byte equality: `String ==` would also equate canonically equivalent, different bytes.
    private static func sameBytes(_ a: String, _ b: String) -> Bool {
        let (x, y) = (a.utf8, b.utf8)
        guard x.count == y.count else { return false }
        return x.elementsEqual(y)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(count)
        withBytes { hasher.combine(bytes: $0) }
    }
}
