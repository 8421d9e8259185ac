import AMQP

/// Whether warren is making progress: the one rule behind `/healthz` and systemd's `WATCHDOG=1`.
///
/// The watchdog is fed only while every I/O loop and the engine are making progress, and while
/// consumers are alive: a broker outage is not a reason to stop it, a wedged loop is. The rule
/// is, for every connection whose I/O loop is running:
///
/// 1. the loop turned within `turnLimit` (an idle loop turns every second), or it is inside a
///    blocking library call (an RPC) that has not yet outlived its own timeout plus `turnLimit`;
/// 2. with heartbeats on, the broker was heard from within 1.5 heartbeat intervals plus
///    `silenceSlack`. The broker sends a heartbeat after half an interval of silence, so a
///    connection silent for longer is black-holed: librabbitmq would only declare it dead at
///    two intervals, and until then its consumers look registered but receive nothing.
///
/// A connection that is down is not checked at all: while warren reconnects there is no loop
/// for it, and the watchdog goes on (a restart would not bring the broker back). So a
/// black-holed connection stops the watchdog from about 1.5 heartbeats until the heartbeat
/// timeout kills it and reconnecting starts. The engine's own part, "the engine is making
/// progress", is covered by who asks: the watchdog task runs on the cooperative pool and reads
/// the engine's status each time, so a starved pool or a wedged status lock stops it too.
public enum Liveness {
    public enum Verdict: Sendable, Equatable {
        case alive
        /// Why not, in words, naming the connection.
        case stalled(String)

        public var isAlive: Bool { self == .alive }
    }

    /// How long an I/O loop may go without a turn outside a library call.
    public static let turnLimit: Duration = .seconds(5)
    /// Added to 1.5 heartbeat intervals before a silent connection counts as black-holed.
    public static let silenceSlack: Duration = .seconds(1)

    /// The verdict for the process's live I/O loops now.
    public static func current() -> Verdict {
        evaluate(IOLoopProgress.live, now: IOLoopProgress.now())
    }

    /// The verdict for `loops` at `now` (same clock as the readings). Pure, for tests.
    public static func evaluate(_ loops: [IOLoopProgress.Reading], now: UInt64) -> Verdict {
        for loop in loops.sorted(by: { $0.name < $1.name }) {
            if let since = loop.inCallSince {
                let limit = loop.callTimeout + turnLimit
                if elapsed(since, now) > limit {
                    return .stalled("the I/O loop of \"\(loop.name)\" is stuck in a library call for over \(limit.configText)")
                }
            } else if elapsed(loop.lastTurn, now) > turnLimit {
                return .stalled("the I/O loop of \"\(loop.name)\" has not turned for over \(turnLimit.configText)")
            }
            if loop.heartbeat > 0 {
                let limit = Duration.milliseconds(loop.heartbeat * 1500) + silenceSlack
                if elapsed(loop.lastHeard, now) > limit {
                    return .stalled("connection \"\(loop.name)\" has heard nothing from the broker for over \(limit.configText)")
                }
            }
        }
        return .alive
    }

    private static func elapsed(_ since: UInt64, _ now: UInt64) -> Duration {
        now > since ? .nanoseconds(Int64(clamping: now - since)) : .zero
    }
}
