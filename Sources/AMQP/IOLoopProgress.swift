import Synchronization

/// How one connection's I/O thread is doing, readable from any thread without touching the
/// loop: when it last turned, when the broker was last heard from, and since when it has been
/// inside a blocking library call (an RPC such as `queue.declare`).
///
/// A health check (systemd's watchdog, `/healthz`) compares these with the clock to tell a
/// wedged loop or a silent (black-holed) connection from one that is merely idle: an idle loop
/// still turns at least once a second, and an idle broker still sends heartbeats every half
/// heartbeat interval. The loop writes with relaxed atomic stores, once per turn: nothing on
/// the message path waits for a reader.
///
/// Live loops are listed in a process-wide registry (`IOLoopProgress.live`): the connections
/// belong to the engine's sessions, which come and go on their own, while the health check must
/// see every I/O thread of the process, whoever owns it.
public final class IOLoopProgress: Sendable {
    /// One loop's state at one instant. Times are `IOLoopProgress.now()` nanoseconds.
    public struct Reading: Sendable, Hashable {
        /// The connection name (as shown in the management UI).
        public var name: String
        /// The negotiated heartbeat in seconds; 0 = off.
        public var heartbeat: Int
        /// How long a blocking library call may take before librabbitmq gives up on it.
        public var callTimeout: Duration
        public var lastTurn: UInt64
        public var lastHeard: UInt64
        /// When the loop entered the blocking call it is in now; nil when it is not in one.
        public var inCallSince: UInt64?

        public init(name: String, heartbeat: Int, callTimeout: Duration, lastTurn: UInt64, lastHeard: UInt64, inCallSince: UInt64? = nil) {
            self.name = name
            self.heartbeat = heartbeat
            self.callTimeout = callTimeout
            self.lastTurn = lastTurn
            self.lastHeard = lastHeard
            self.inCallSince = inCallSince
        }
    }

    public let name: String
    public let heartbeat: Int
    public let callTimeout: Duration
    private let lastTurn: Atomic<UInt64>
    private let lastHeard: Atomic<UInt64>
    /// 0 = not in a blocking call.
    private let inCallSince = Atomic<UInt64>(0)

    init(name: String, heartbeat: Int, callTimeout: Duration) {
        let now = monotonicNanoseconds()
        self.name = name
        self.heartbeat = heartbeat
        self.callTimeout = callTimeout
        self.lastTurn = Atomic(now)
        self.lastHeard = Atomic(now)
    }

    /// The clock of every reading: monotonic nanoseconds.
    public static func now() -> UInt64 { monotonicNanoseconds() }

    public var reading: Reading {
        let since = inCallSince.load(ordering: .relaxed)
        return Reading(
            name: name, heartbeat: heartbeat, callTimeout: callTimeout, lastTurn: lastTurn.load(ordering: .relaxed),
            lastHeard: lastHeard.load(ordering: .relaxed), inCallSince: since == 0 ? nil : since)
    }

    // MARK: written by the I/O thread

    func turned(at now: UInt64) { lastTurn.store(now, ordering: .relaxed) }

    /// Bytes came from the broker (frames, heartbeats, or an RPC's reply).
    func heard(at now: UInt64) { lastHeard.store(now, ordering: .relaxed) }

    func enteringCall(at now: UInt64) { inCallSince.store(max(now, 1), ordering: .relaxed) }

    func leftCall() { inCallSince.store(0, ordering: .relaxed) }

    // MARK: the live loops of the process

    private static let registry = Mutex<[ObjectIdentifier: IOLoopProgress]>([:])

    /// Every I/O loop of the process that is running now.
    public static var live: [Reading] {
        registry.withLock { Array($0.values) }.map(\.reading)
    }

    func register() { Self.registry.withLock { $0[ObjectIdentifier(self)] = self } }

    func unregister() { _ = Self.registry.withLock { $0.removeValue(forKey: ObjectIdentifier(self)) } }
}
