internal import CRabbitMQ
import Testing

@testable import AMQP

/// `RepeatedString` gives back the string of the bytes it is shown, decoding only on a change.
@Suite("repeated wire strings")
struct RepeatedStringTests {
    private func read(_ cache: inout RepeatedString, _ text: String) -> AMQPString {
        read(&cache, Array(text.utf8))
    }

    private func read(_ cache: inout RepeatedString, _ raw: [UInt8]) -> AMQPString {
        var bytes = raw
        return bytes.withUnsafeMutableBytes { buffer in
            cache.string(amqp_bytes_t(len: buffer.count, bytes: buffer.count == 0 ? nil : buffer.baseAddress))
        }
    }

    @Test func everyReadReturnsTheStringOfItsOwnBytes() {
        var cache = RepeatedString()
        #expect(read(&cache, "") == "")
        #expect(read(&cache, "orders.created") == "orders.created")
        #expect(read(&cache, "orders.created") == "orders.created")
        #expect(read(&cache, "orders.create") == "orders.create", "a prefix is a change")
        #expect(read(&cache, "orders.update") == "orders.update", "same length, other bytes")
        #expect(read(&cache, "") == "")
        #expect(read(&cache, "héllo wörld, a key longer than fifteen bytes") == "héllo wörld, a key longer than fifteen bytes")
    }

    @Test func bytesThatAreNotUTF8ComeBackExactlyAndAreNotConfusedWithTheirLossyText() {
        var cache = RepeatedString()
        let first = read(&cache, [0x6B, 0xFF])
        #expect(first.bytes == [0x6B, 0xFF])
        #expect(first.text == nil)
        #expect(read(&cache, [0x6B, 0xFE]).bytes == [0x6B, 0xFE], "same length, other bytes")
        #expect(read(&cache, Array("k\u{FFFD}".utf8)) == "k\u{FFFD}")
    }
}
