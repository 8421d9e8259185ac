import AMQP
import Testing

@testable import WarrenCore

/// The rule behind `/healthz` and systemd's watchdog, event by event, with no connection.
@Suite("Liveness")
struct LivenessTests {
    static let second: UInt64 = 1_000_000_000
    static let now: UInt64 = 100_000 * second

    static func loop(
        heartbeat: Int = 10, turnedAgo: Double = 0.5, heardAgo: Double = 1, inCallFor: Double? = nil, callTimeout: Duration = .seconds(30)
    ) -> IOLoopProgress.Reading {
        func ago(_ seconds: Double) -> UInt64 { now - UInt64(seconds * Double(second)) }
        return IOLoopProgress.Reading(
            name: "warren consumer", heartbeat: heartbeat, callTimeout: callTimeout, lastTurn: ago(turnedAgo), lastHeard: ago(heardAgo),
            inCallSince: inCallFor.map(ago))
    }

    @Test func noConnectionAtAllIsAliveBecauseAnOutageIsNotAReasonToRestart() {
        #expect(Liveness.evaluate([], now: Self.now) == .alive)
    }

    @Test func anIdleLoopThatTurnsAndHearsHeartbeatsIsAlive() {
        #expect(Liveness.evaluate([Self.loop(), Self.loop(turnedAgo: 0.9, heardAgo: 5)], now: Self.now) == .alive)
    }

    @Test func aLoopThatHasNotTurnedForMoreThanFiveSecondsIsStalled() {
        let verdict = Liveness.evaluate([Self.loop(), Self.loop(turnedAgo: 6, heardAgo: 2)], now: Self.now)
        guard case .stalled(let reason) = verdict else {
            Issue.record("expected stalled, got \(verdict)")
            return
        }
        #expect(reason.contains("has not turned"))
        #expect(reason.contains("warren consumer"))
    }

    @Test func aLoopInsideAnRPCIsGivenTheRPCTimeoutBeforeItCountsAsWedged() {
        #expect(Liveness.evaluate([Self.loop(turnedAgo: 20, heardAgo: 3, inCallFor: 20)], now: Self.now) == .alive)
        #expect(!Liveness.evaluate([Self.loop(turnedAgo: 36, heardAgo: 3, inCallFor: 36)], now: Self.now).isAlive)
    }

    @Test func aConnectionSilentForMoreThanOneAndAHalfHeartbeatsIsBlackHoled() {
        // Heartbeat 4 s: the broker speaks every 2 s at the latest; the limit is 4 × 1.5 + 1 = 7 s.
        #expect(Liveness.evaluate([Self.loop(heartbeat: 4, heardAgo: 6.5)], now: Self.now) == .alive)
        let verdict = Liveness.evaluate([Self.loop(heartbeat: 4, heardAgo: 7.5)], now: Self.now)
        guard case .stalled(let reason) = verdict else {
            Issue.record("expected stalled, got \(verdict)")
            return
        }
        #expect(reason.contains("heard nothing from the broker"))
    }

    @Test func withoutHeartbeatsSilenceIsNotJudged() {
        #expect(Liveness.evaluate([Self.loop(heartbeat: 0, heardAgo: 3600)], now: Self.now) == .alive)
    }

    @Test func readingsFromTheFutureDoNotUnderflow() {
        let future = IOLoopProgress.Reading(
            name: "x", heartbeat: 1, callTimeout: .seconds(1), lastTurn: Self.now + Self.second, lastHeard: Self.now + Self.second)
        #expect(Liveness.evaluate([future], now: Self.now) == .alive)
    }
}
