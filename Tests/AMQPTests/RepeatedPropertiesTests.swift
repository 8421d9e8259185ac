internal import CRabbitMQ
import Testing

@testable import AMQP

/// `RepeatedProperties` gives back the last decoded properties while a header repeats their
/// encoded bytes, and decodes anything else. The decoded struct handed in alongside stands for
/// what the library decoded from those bytes; a test hands in one that differs from the bytes'
/// to tell a reuse from a decoding.
@Suite("repeated content-header properties")
struct RepeatedPropertiesTests {
    private func read(_ cache: inout RepeatedProperties, raw: [UInt8], deliveryMode: UInt8) -> BasicProperties {
        var decoded = amqp_basic_properties_t()
        decoded._flags = amqp_flags_t(AMQP_BASIC_DELIVERY_MODE_FLAG)
        decoded.delivery_mode = deliveryMode
        var bytes = raw
        return withUnsafeMutablePointer(to: &decoded) { pointer in
            bytes.withUnsafeMutableBytes { buffer in
                cache.properties(
                    decoded: UnsafeMutableRawPointer(pointer), raw: amqp_bytes_t(len: buffer.count, bytes: buffer.count == 0 ? nil : buffer.baseAddress))
            }
        }
    }

    @Test func theSameEncodedBytesGiveTheSamePropertiesAndOtherBytesAreDecoded() {
        var cache = RepeatedProperties()
        #expect(read(&cache, raw: [0x10, 0x00, 0x02], deliveryMode: 2).deliveryMode == 2)
        #expect(read(&cache, raw: [0x10, 0x00, 0x02], deliveryMode: 1).deliveryMode == 2, "same bytes: reused, not decoded")
        #expect(read(&cache, raw: [0x10, 0x00, 0x01], deliveryMode: 1).deliveryMode == 1, "same length, other bytes")
        #expect(read(&cache, raw: [0x10, 0x00], deliveryMode: 3).deliveryMode == 3, "a prefix is a change")
    }

    /// A frame the library queued during an RPC comes with no encoded bytes (they were
    /// overwritten): it is decoded, and what was kept is dropped.
    @Test func withoutEncodedBytesThePropertiesAreDecodedAndNothingIsKept() {
        var cache = RepeatedProperties()
        #expect(read(&cache, raw: [0x10, 0x00, 0x02], deliveryMode: 2).deliveryMode == 2)
        #expect(read(&cache, raw: [], deliveryMode: 1).deliveryMode == 1)
        #expect(read(&cache, raw: [0x10, 0x00, 0x02], deliveryMode: 1).deliveryMode == 1, "the earlier properties were not kept")
    }

    @Test func headersOverTheCacheableSizeAreDecodedEveryTime() {
        var cache = RepeatedProperties()
        let large = [UInt8](repeating: 0x41, count: RepeatedProperties.cacheable + 1)
        #expect(read(&cache, raw: large, deliveryMode: 2).deliveryMode == 2)
        #expect(read(&cache, raw: large, deliveryMode: 1).deliveryMode == 1)
        let largest = [UInt8](repeating: 0x41, count: RepeatedProperties.cacheable)
        #expect(read(&cache, raw: largest, deliveryMode: 2).deliveryMode == 2)
        #expect(read(&cache, raw: largest, deliveryMode: 1).deliveryMode == 2, "at the size, kept")
    }
}
