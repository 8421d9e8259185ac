/// Reassembles the broker-to-client byte stream into AMQP frames and, while asked to, drops
/// every `basic.deliver` with its content header and body frames: the broker believes it
/// delivered (the messages sit unacked on the channel) but the client never hears of them,
/// which is what a stalled consumer looks like from the outside.
struct AMQPFrameFilter {
    private var pending: [UInt8] = []
    /// Channels whose current content belongs to a dropped delivery.
    private var droppingContent: Set<UInt16> = []

    mutating func filter(_ bytes: UnsafeRawBufferPointer, dropDeliveries: Bool) -> [UInt8] {
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
            if !drop { out.append(contentsOf: pending[offset..<offset + total]) }
            offset += total
        }
        pending.removeFirst(offset)
        return out
    }
}
