/// Percent-encoding of any bytes into names that are safe in a URL path segment and as a file
/// name: every byte outside `[A-Za-z0-9._-]` is `%XX` (upper-case hex), so no "/" survives and
/// decoding is plain percent-decoding.
enum PercentEncoding {
    static func isPlain(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
            true
        default:
            false
        }
    }

    /// The byte as it is, or `%XX`.
    static func token(_ byte: UInt8) -> String {
        isPlain(byte) ? String(UnicodeScalar(byte)) : "%" + hex(byte)
    }

    /// Two upper-case hex digits.
    static func hex(_ byte: UInt8) -> String {
        let digits = Array("0123456789ABCDEF".utf8)
        return String(decoding: [digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]], as: UTF8.self)
    }

    static func encode(_ text: String) -> String {
        text.utf8.map(token).joined()
    }
}
