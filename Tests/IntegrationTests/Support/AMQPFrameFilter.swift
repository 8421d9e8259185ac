/// Reassembles the broker-to-client byte stream into AMQP frames and, while asked to, drops
/// every `basic.deliver` with its content header and body frames: the broker believes it
/// delivered (the messages sit unacked on the channel) but the client never hears of them,
/// which is what a stalled consumer looks like from the outside.
struct AMQPFrameFilter {
    private var pending: [UInt8] = []
    /// Channels whose current content belongs to a dropped delivery.
    private var droppingContent: Set<UInt16> = []

    /// Channels whose current content follows a `basic.deliver` (not a `basic.return`).
    private var deliveringContent: Set<UInt16> = []

    /// `mutateDelivery` may rewrite the payload of a delivery's content header (class, weight,
    /// body size, flags, properties); the frame is re-sized around what it returns.
    mutating func filter(
        _ bytes: UnsafeRawBufferPointer, dropDeliveries: Bool, mutateDelivery: (@Sendable ([UInt8]) -> [UInt8]?)? = nil
    ) -> [UInt8] {
        pending.append(contentsOf: bytes)
        var out: [UInt8] = []
        var offset = 0
        while pending.count - offset >= 7 {
            let type = pending[offset]
            let channel = UInt16(pending[offset + 1]) << 8 | UInt16(pending[offset + 2])
            let size = pending[offset + 3..<offset + 7].reduce(0) { $0 << 8 | Int($1) }
            let total = 7 + size + 1
            guard pending.count - offset >= total else { break }
            var drop = false
            switch type {
            case 1 where size >= 4:
                let classID = UInt16(pending[offset + 7]) << 8 | UInt16(pending[offset + 8])
                let methodID = UInt16(pending[offset + 9]) << 8 | UInt16(pending[offset + 10])
                if classID == 60, methodID == 60 { deliveringContent.insert(channel) } else { deliveringContent.remove(channel) }
                if dropDeliveries, classID == 60, methodID == 60 {
                    drop = true
                    droppingContent.insert(channel)
                } else {
                    droppingContent.remove(channel)
                }
            case 2, 3:
                drop = droppingContent.contains(channel)
            default:
                break
            }
            if type == 2, !drop, deliveringContent.contains(channel), let mutateDelivery,
                let mutated = mutateDelivery(Array(pending[offset + 7..<offset + 7 + size]))
            {
                out.append(contentsOf: [2, UInt8(channel >> 8), UInt8(channel & 0xFF)])
                out.append(contentsOf: withUnsafeBytes(of: UInt32(mutated.count).bigEndian) { Array($0) })
                out.append(contentsOf: mutated)
                out.append(0xCE)
            } else if !drop {
                out.append(contentsOf: pending[offset..<offset + total])
            }
            offset += total
        }
        pending.removeFirst(offset)
        return out
    }
}
