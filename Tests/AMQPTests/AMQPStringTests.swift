import Testing

@testable import AMQP

/// `AMQPString` keeps a short string's exact bytes, compares them byte for byte and logs them
/// on one line of valid UTF-8.
@Suite("AMQP short strings")
struct AMQPStringTests {
    @Test func validUTF8IsTextAndKeepsItsBytes() {
        let value = AMQPString(bytes: Array("héllo".utf8))
        #expect(value.text == "héllo")
        #expect(value.bytes == Array("héllo".utf8))
        #expect(value.count == 6)
        #expect(value == "héllo")
        #expect(value.description == "héllo")
    }

    @Test func bytesThatAreNotUTF8AreKeptExactly() {
        let raw = [UInt8](repeating: 0xFF, count: 100)
        let value = AMQPString(bytes: raw)
        #expect(value.text == nil)
        #expect(value.bytes == raw)
        #expect(value.count == 100, "a lossy decoding would make this 300")
        #expect(value.lossyText == String(repeating: "\u{FFFD}", count: 100))
        #expect(value.base64 == "/////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////w==")
    }

    @Test func validationCatchesARepairThatKeepsTheLength() {
        // A truncated 4-byte sequence (3 bytes) repairs to one U+FFFD (3 bytes): same length.
        let truncated: [UInt8] = [0xF0, 0x9F, 0x98]
        #expect(AMQPString(bytes: truncated).text == nil)
        #expect(AMQPString(bytes: truncated).bytes == truncated)
        #expect(AMQPString(bytes: Array("\u{FFFD}".utf8)).text == "\u{FFFD}", "a real U+FFFD is valid")
        // A high byte after the first eight-byte word, and in the tail.
        #expect(AMQPString(bytes: Array("abcdefgh".utf8) + [0xFF] + Array("ij".utf8)).text == nil)
        #expect(AMQPString(bytes: Array("abcdefghijklmnop".utf8) + [0x80]).text == nil)
        #expect(AMQPString(bytes: Array("abcdefghijklmnopq".utf8)).text == "abcdefghijklmnopq")
        #expect(AMQPString(bytes: Array("0123456789abcdefé".utf8)).text == "0123456789abcdefé")
        #expect(AMQPString(bytes: [0xED, 0xA0, 0x80]).text == nil, "an encoded surrogate is not UTF-8")
        #expect(AMQPString(bytes: [0xC0, 0x80]).text == nil, "an overlong NUL is not UTF-8")
        #expect(AMQPString(bytes: [UInt8]()).text == "")
    }

    @Test func equalityAndHashingCompareBytesNotUnicodeEquivalence() {
        let composed = AMQPString("\u{E9}")
        let decomposed = AMQPString("e\u{301}")
        #expect("\u{E9}" == "e\u{301}", "Swift strings are equal by canonical equivalence")
        #expect(composed != decomposed, "but these are different bytes")
        #expect(Set([composed, decomposed]).count == 2)
        #expect(AMQPString(bytes: [0xFF]) != AMQPString(bytes: [0xFE]))
        #expect(AMQPString(bytes: [0xFF]) != AMQPString("\u{FFFD}"), "a byte is not its replacement character")
        #expect(AMQPString(bytes: [0x61, 0xFF]) == AMQPString(bytes: [0x61, 0xFF]))
        #expect(Set([AMQPString(bytes: [0x61, 0xFF]), AMQPString(bytes: [0x61, 0xFF])]).count == 1)
        #expect(AMQPString(bytes: Array("abc".utf8)) == AMQPString("abc"), "one form per byte sequence")
    }

    @Test func hasBytesOfMatchesOnlyTheExactUTF8() {
        #expect(AMQPString("x-kind").hasBytes(of: "x-kind"))
        #expect(!AMQPString("e\u{301}").hasBytes(of: "\u{E9}"))
        #expect(!AMQPString(bytes: [0xFF]).hasBytes(of: "\u{FFFD}"))
    }

    @Test func descriptionEscapesControlsAndInvalidBytesOnOneLine() {
        #expect(AMQPString(bytes: [0x61, 0xFF, 0x62]).description == #"a\xFFb"#)
        #expect(AMQPString("line\nbreak\u{0}").description == #"line\x0Abreak\x00"#)
        #expect(AMQPString(bytes: [0xE2, 0x82]).description == #"\xE2\x82"#, "a truncated sequence, byte by byte")
        #expect(AMQPString(bytes: [0xC3, 0xA9, 0xC0, 0x7F]).description == #"é\xC0\x7F"#)
        #expect(AMQPString("tab\there").description == #"tab\x09here"#)
        #expect(AMQPString(bytes: [0x80] + Array("é".utf8)).description == #"\x80é"#)
    }

    @Test func withBytesSeesTheExactBytesOfBothForms() {
        #expect(AMQPString("a long key, more than fifteen bytes").withBytes { Array($0) } == Array("a long key, more than fifteen bytes".utf8))
        #expect(AMQPString(bytes: [0x00, 0xFF]).withBytes { Array($0) } == [0x00, 0xFF])
        #expect(AMQPString("").withBytes { $0.count } == 0)
        #expect(AMQPString("").isEmpty)
    }
}
