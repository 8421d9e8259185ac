import AMQP
import Foundation
import Logging
import Synchronization

/// Where warren reads a stream queue (docs/streams.md): the offsets its consumer delivered and
/// processed (`StreamOffsetTracker`), and the last processed one on disk (`StreamOffsetStore`),
/// so that a new consumer (after a reconnect, a replay, a restart) starts right after it.
///
/// A stream cannot take a message back: `basic.nack` and `basic.reject` close the connection.
/// So every delivery is acked (an ack is credit for the next one), and what would be put back
/// on another queue is *abandoned* instead: the watermark stops before it, and the consumer is
/// closed so that the next one reads the stream again from there.
final class StreamPosition: Sendable {
    let queue: String
    private let tracker: Mutex<Reading>
    private let store: StreamOffsetStore
    private let start: StreamOffset
    private let logger: Logger
    /// Whether the last write failed, so a failing disk is logged once per failure streak.
    private let writeFailing = Atomic<Bool>(false)

    init(queue: QueueConfiguration, state: StateConfiguration, vhost: String, logger: Logger) {
        self.queue = queue.name
        self.start = queue.streamOffset
        self.logger = logger
        store = StreamOffsetStore(
            directory: state.directory, queue: queue.name, vhost: vhost, flushEvery: state.offsetFlushEvery,
            flushInterval: state.offsetFlushInterval)
        var stored: Int64?
        do {
            stored = try store.load()
        } catch {
            logger.error("stream offset unreadable; starting from the configured offset", metadata: [
                LogKeys.queue: "\(queue.name)", LogKeys.error: "\(error)",
            ])
        }
        tracker = Mutex(Reading(tracker: StreamOffsetTracker(resumeAfter: stored)))
    }

    private struct Reading {
        var tracker: StreamOffsetTracker
        /// The first offset delivered while nothing is processed yet: where a new consumer
        /// starts when the first one ends before it processed anything (rather than the
        /// configured `offset`, which for "next" or "last" would skip what was delivered).
        var floor: Int64?

        var resumeOffset: Int64? { tracker.resumeOffset ?? floor }
    }

    /// The offset a delivery carries (the broker's `x-stream-offset` header); nil when absent
    /// or not an integer (not from a stream).
    static func offset(of delivery: Delivery) -> Int64? {
        delivery.properties.headers?["x-stream-offset"]?.integerValue
    }

    /// The `x-stream-offset` argument of a new consumer: right after the last processed offset,
    /// or, when none was ever processed, the configured `offset`. Forgets what the previous
    /// consumer delivered and did not process: the new one delivers it again.
    func consumeArgument(now: Date = Date()) -> FieldValue {
        let resume = tracker.withLock { reading in
            reading.tracker.resubscribed()
            return reading.resumeOffset
        }
        if let resume { return .int64(resume) }
        switch start {
        case .first: return "first"
        case .last: return "last"
        case .next: return "next"
        case .offset(let offset): return .int64(offset)
        case .timestamp(let date): return .timestamp(UInt64(max(0, date.timeIntervalSince1970.rounded(.down))))
        case .ago(let span):
            let seconds = Double(span.components.seconds) + Double(span.components.attoseconds) / 1e18
            return .timestamp(UInt64(max(0, (now.timeIntervalSince1970 - seconds).rounded(.down))))
        }
    }

    func delivered(_ offset: Int64) {
        tracker.withLock { reading in
            reading.tracker.delivered(offset)
            if reading.tracker.watermark == nil, reading.floor == nil, offset >= 0 { reading.floor = offset }
        }
    }

    /// The delivery is done with (acked, dead-lettered, or retried as a copy).
    func processed(_ offset: Int64) {
        let watermark = tracker.withLock { reading in
            reading.tracker.processed(offset)
            return reading.tracker.watermark
        }
        write { try self.store.record(watermark) }
    }

    /// The delivery is left for the next consumer to read again.
    func abandoned(_ offset: Int64) {
        tracker.withLock { $0.tracker.abandoned(offset) }
    }

    /// Writes the watermark now (a consumer ended, warren stops).
    func flush() {
        let watermark = tracker.withLock { $0.tracker.watermark }
        write { try self.store.flush(watermark) }
    }

    private func write(_ operation: () throws -> Void) {
        do {
            try operation()
            if writeFailing.exchange(false, ordering: .relaxed) {
                logger.info("stream offset written again", metadata: [LogKeys.queue: "\(queue)"])
            }
        } catch {
            // A restart then replays more than the flush window; nothing is skipped.
            if !writeFailing.exchange(true, ordering: .relaxed) {
                logger.error("stream offset not written; a restart would read again from the last offset written", metadata: [
                    LogKeys.queue: "\(queue)", LogKeys.error: "\(error)",
                ])
            }
        }
    }
}

/// What a stream queue's delivery processing needs beyond a queue's: the position, and the
/// consumer to end when a delivery must be read again.
struct StreamReading: Sendable {
    let position: StreamPosition
    let consumer: Consumer

    /// Closes the consumer's channel: its deliveries stream ends, the deliveries in flight
    /// finish (their acks go nowhere), and the session subscribes again, with back-off, from
    /// the position.
    func endConsumer() {
        let consumer = consumer
        Task { try? await consumer.close() }
    }
}
