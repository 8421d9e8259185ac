/// The low watermark of one stream queue's consumer: the last offset such that every offset
/// delivered up to it has been processed. Warren stores it and, after a restart, resubscribes at
/// `watermark + 1`, so nothing is skipped and at most the unstored window is processed again.
///
/// Deliveries are processed concurrently and complete out of order, so the watermark is the
/// offset delivered just before the oldest delivery that is not processed yet. Offsets delivered
/// to one consumer increase but may have gaps (retention removed the segment, or the consumer
/// started mid-stream); a gap never blocks the watermark, only a delivered-but-unprocessed
/// offset does.
///
/// Pure value type: no I/O, no clock. Memory is bounded by the deliveries that are neither
/// processed nor dropped (the in-flight window, plus abandoned ones until `resubscribed()`):
/// each of them remembers the offset delivered before it, so processed entries are removed at
/// once instead of waiting behind a slow one.
///
/// Offsets come from message headers (`x-stream-offset`) and are treated as untrusted: a
/// negative offset, or one that is not above every offset seen in this consumer generation
/// (a duplicate after a resubscribe, or a broker or header out of order), is ignored. No input
/// traps or moves the watermark backwards.
struct StreamOffsetTracker: Sendable {
    /// A delivery not processed yet.
    private struct Entry: Sendable {
        let offset: Int64
        /// The offset delivered just before this one in this generation (or the watermark when
        /// the generation started): once every entry before this one is processed, the
        /// watermark may move up to it.
        let previous: Int64?
        /// Abandoned: it will not be processed in this consumer, it blocks the watermark until
        /// `resubscribed()`.
        var abandoned = false
    }

    /// Last offset with everything delivered up to it processed; nil if none.
    private(set) var watermark: Int64?
    /// Unprocessed deliveries in increasing offset order, from `head` on (the slots before
    /// `head` are removed entries, compacted away in batches).
    private var entries: [Entry] = []
    private var head = 0
    /// The highest offset delivered in this consumer generation; nil right after a (re)subscribe.
    private var lastDelivered: Int64?

    /// - Parameter resumeAfter: the stored watermark (nil: nothing processed yet).
    init(resumeAfter: Int64?) {
        // A stored value is trusted no more than a header: a negative one means nothing.
        watermark = resumeAfter.flatMap { $0 >= 0 ? $0 : nil }
    }

    /// The offset to resubscribe at: `watermark + 1`, saturating at `Int64.max`.
    var resumeOffset: Int64? {
        watermark.map { $0 == .max ? .max : $0 + 1 }
    }

    /// Deliveries neither processed nor dropped by `resubscribed()` (in flight, or abandoned).
    var pendingCount: Int { entries.count - head }

    /// Records a delivery, in arrival order. Ignored when negative, at or below the watermark,
    /// or not above the last delivered offset (already pending, or out of order).
    mutating func delivered(_ offset: Int64) {
        guard offset >= 0 else { return }
        let floor = max(watermark ?? -1, lastDelivered ?? -1)
        guard offset > floor else { return }
        entries.append(Entry(offset: offset, previous: lastDelivered ?? watermark))
        lastDelivered = offset
    }

    /// Marks a delivery processed and advances the watermark as far as every earlier delivery
    /// allows. Unknown, already processed or abandoned offsets are ignored.
    mutating func processed(_ offset: Int64) {
        guard let index = index(of: offset), !entries[index].abandoned else { return }
        remove(at: index)
        advance()
    }

    /// The delivery will not be processed in this consumer (it is read again after a
    /// resubscribe): it blocks the watermark for the rest of this generation.
    mutating func abandoned(_ offset: Int64) {
        guard let index = index(of: offset) else { return }
        entries[index].abandoned = true
    }

    /// The consumer ended and a new one starts at `resumeOffset`: every unprocessed delivery
    /// comes again, so none is kept, and offsets above the watermark are accepted again.
    mutating func resubscribed() {
        entries.removeAll(keepingCapacity: true)
        head = 0
        lastDelivered = nil
    }

    /// With no unprocessed delivery, everything delivered is processed; otherwise everything
    /// before the oldest unprocessed one is.
    private mutating func advance() {
        let candidate = head < entries.count ? entries[head].previous : lastDelivered
        if let candidate, candidate > (watermark ?? -1) {
            watermark = candidate
        }
    }

    /// Binary search over the live entries (their offsets increase).
    private func index(of offset: Int64) -> Int? {
        var low = head
        var high = entries.count
        while low < high {
            let middle = low + (high - low) / 2
            let found = entries[middle].offset
            if found == offset { return middle }
            if found < offset { low = middle + 1 } else { high = middle }
        }
        return nil
    }

    /// The oldest entry goes by moving `head` (in-order completion costs O(1)); others are
    /// removed in place (at most the in-flight window moves).
    private mutating func remove(at index: Int) {
        if index == head {
            head += 1
            if head == entries.count {
                entries.removeAll(keepingCapacity: true)
                head = 0
            } else if head >= 64, head * 2 >= entries.count {
                entries.removeFirst(head)
                head = 0
            }
        } else {
            entries.remove(at: index)
        }
    }
}
