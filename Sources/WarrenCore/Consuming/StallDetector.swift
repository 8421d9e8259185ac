import Synchronization

/// Spots a consumer that looks registered but receives nothing while its queue has messages
/// ready: a broker-side glitch, a lost `basic.deliver`, a channel the broker forgot.
/// Nothing else in AMQP reports that state, and warren would otherwise sit connected but not
/// consuming forever. Fed one sample per check interval; a consumer that was idle (nothing
/// received, nothing in flight) with ready messages waiting at two checks in a row is stalled.
/// Queues with `single_active_consumer` are never checked: an inactive consumer there is idle by design.
struct StallDetector: Sendable {
    /// Consecutive idle-with-ready-messages samples that make a stall.
    static let strikes = 2

    private var lastReceived: Int?
    private var idleWithBacklog = 0

    /// Whether the consumer did nothing since the previous sample: only then is the queue's
    /// ready count worth asking the broker for.
    func isIdle(received: Int, inFlight: Int) -> Bool {
        inFlight == 0 && received == lastReceived
    }

    /// Records a sample; true when the consumer is stalled.
    mutating func observe(received: Int, inFlight: Int, ready: UInt32) -> Bool {
        defer { lastReceived = received }
        guard isIdle(received: received, inFlight: inFlight), ready > 0 else {
            idleWithBacklog = 0
            return false
        }
        idleWithBacklog += 1
        return idleWithBacklog >= Self.strikes
    }
}

/// What a queue's worker pool is doing, read by the stall check without touching the pool.
final class QueueActivity: Sendable {
    private let receivedCount = Atomic<Int>(0)
    private let inFlightCount = Atomic<Int>(0)

    var received: Int { receivedCount.load(ordering: .relaxed) }
    var inFlight: Int { inFlightCount.load(ordering: .relaxed) }

    func received(_ count: Int) { receivedCount.wrappingAdd(count, ordering: .relaxed) }
    func started() { inFlightCount.wrappingAdd(1, ordering: .relaxed) }
    func finished() { inFlightCount.wrappingSubtract(1, ordering: .relaxed) }
}
