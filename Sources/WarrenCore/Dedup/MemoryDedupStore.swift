import AMQP
import DequeModule
import Synchronization

/// The `memory` dedup store: lost on restart, bounded in size. Entries expire in insertion order
/// (the TTL is the same for all), so expiry walks a queue from its front instead of scanning.
public final class MemoryDedupStore: DedupStore {
    struct Key: Hashable {
        var queue: String
        var handler: String
        /// Compared byte for byte (`AMQPString`).
        var messageID: AMQPString
    }

    private struct State {
        var expiries: [Key: Int64] = [:]
        /// Insertion order with each entry's expiry; may hold keys re-recorded later (their
        /// dictionary expiry is then newer and wins).
        var order: Deque<(key: Key, expires: Int64)> = []
    }

    /// Past this many entries the oldest are forgotten: memory stays bounded under any rate,
    /// at the price of a handler possibly running again for a very old message.
    public let capacity: Int
    private let ttlMilliseconds: Int64
    private let clock: DedupClock
    private let state = Mutex(State())

    public init(ttl: Duration, capacity: Int = 1_000_000, clock: @escaping DedupClock = DedupStores.systemClock) {
        self.ttlMilliseconds = ttl.milliseconds
        self.capacity = max(1, capacity)
        self.clock = clock
    }

    public func completed(queue: String, messageID: AMQPString, handlers: [String]) async throws -> Set<String> {
        let now = clock()
        return state.withLock { state in
            Set(handlers.filter { handler in
                guard let expires = state.expiries[Key(queue: queue, handler: handler, messageID: messageID)] else { return false }
                return expires > now
            })
        }
    }

    public func record(queue: String, messageID: AMQPString, handlers: [String]) async throws {
        let now = clock()
        let expires = now + ttlMilliseconds
        state.withLock { state in
            for handler in handlers {
                let key = Key(queue: queue, handler: handler, messageID: messageID)
                state.expiries[key] = expires
                state.order.append((key, expires))
            }
            Self.evict(&state, now: now, capacity: capacity)
        }
    }

    /// Entries stored, for tests.
    var count: Int { state.withLock { $0.expiries.count } }

    private static func evict(_ state: inout State, now: Int64, capacity: Int) {
        while let first = state.order.first, first.expires <= now || state.expiries.count > capacity {
            state.order.removeFirst()
            // Only the newest record of a key removes it.
            if state.expiries[first.key] == first.expires { state.expiries[first.key] = nil }
        }
        // A key recorded many times leaves stale queue entries behind; keep the queue from
        // growing past twice the live entries.
        if state.order.count > 2 * max(state.expiries.count, capacity / 2) {
            state.order = Deque(state.order.filter { state.expiries[$0.key] == $0.expires })
        }
    }

    public func close() async {}
}
