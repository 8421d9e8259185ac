import AMQP
import Foundation

/// Remembers which handlers already succeeded for a message, so that a redelivered message (a
/// retry copy, a requeue, a redelivery after a lost ack) skips them (`dedup = true`).
/// The key is `(queue, handler, message_id)`, the message id compared byte for byte (it may
/// hold any bytes, and two different ids must never share a record); entries expire after the
/// configured TTL.
///
/// Dedup narrows at-least-once towards exactly-once per handler; it never widens loss: a store
/// that cannot be read or written only means handlers may run again.
public protocol DedupStore: Sendable {
    /// Those of `handlers` that succeeded for this message within the TTL.
    func completed(queue: String, messageID: AMQPString, handlers: [String]) async throws -> Set<String>
    /// Records that `handlers` succeeded for this message.
    func record(queue: String, messageID: AMQPString, handlers: [String]) async throws
    /// Flushes and releases the store. Called once, at shutdown.
    func close() async
}

/// Wall-clock milliseconds: entries of the SQLite store outlive the process, so the TTL is
/// measured against the calendar, not a monotonic clock.
public typealias DedupClock = @Sendable () -> Int64

public enum DedupStores {
    public static let systemClock: DedupClock = { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }

    /// The store `[dedup]` configures, or nil when no queue has `dedup = true`.
    public static func open(_ configuration: Configuration) async throws -> (any DedupStore)? {
        guard configuration.queues.contains(where: \.dedup) else { return nil }
        switch configuration.dedup.store {
        case .memory:
            return MemoryDedupStore(ttl: configuration.dedup.ttl)
        case .sqlite:
            return try await SQLiteDedupStore.open(path: configuration.dedup.path, ttl: configuration.dedup.ttl)
        }
    }
}
