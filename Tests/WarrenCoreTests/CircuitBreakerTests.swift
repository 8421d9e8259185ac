import Testing
@testable import WarrenCore

@Suite struct CircuitBreakerTests {
    static func breaker(ratio: Double = 0.5, minRuns: Int = 4, window: Duration = .seconds(30), openFor: Duration = .seconds(10)) -> CircuitBreaker {
        var policy = CircuitBreakerPolicy()
        policy.failureRatio = ratio
        policy.minRuns = minRuns
        policy.window = window
        policy.openFor = openFor
        return CircuitBreaker(policy)
    }

    @Test func opensOnceMinRunsAreSeenAndTheFailureShareReachesTheRatio() {
        var breaker = Self.breaker()
        let t0 = ContinuousClock.now
        #expect(breaker.record(.failure, at: t0) == .none, "below min_runs")
        #expect(breaker.record(.failure, at: t0) == .none)
        #expect(breaker.record(.success, at: t0) == .none)
        #expect(breaker.record(.failure, at: t0) == .open(probeAt: t0 + .seconds(10), ratio: 0.75, runs: 4))
        #expect(breaker.isOpen)
    }

    @Test func successesKeepItClosedAndOldRunsLeaveTheWindow() {
        var breaker = Self.breaker(minRuns: 4, window: .seconds(30))
        let t0 = ContinuousClock.now
        for _ in 0..<3 { #expect(breaker.record(.failure, at: t0) == .none) }
        // 40 s later those three failures are out of the window: one failure in one run.
        #expect(breaker.record(.success, at: t0 + .seconds(40)) == .none)
        #expect(breaker.record(.failure, at: t0 + .seconds(40)) == .none)
        #expect(breaker.record(.success, at: t0 + .seconds(40)) == .none)
        #expect(breaker.record(.success, at: t0 + .seconds(40)) == .none, "1 failure in 4 runs is below 0.5")
        #expect(!breaker.isOpen)
    }

    @Test func aSuccessfulProbeClosesAndAFailedOneDoublesTheOpenTimeUpToTenTimes() {
        var breaker = Self.breaker(minRuns: 1, openFor: .seconds(10))
        let t0 = ContinuousClock.now
        guard case .open = breaker.record(.failure, at: t0) else {
            Issue.record("expected open")
            return
        }
        var now = t0
        var expected: [Duration] = []
        for _ in 0..<6 {
            breaker.probe()
            #expect(breaker.isProbing)
            now = now + .seconds(1)
            guard case .open(let probeAt, _, _) = breaker.record(.failure, at: now) else {
                Issue.record("a failed probe opens it again")
                return
            }
            expected.append(probeAt - now)
        }
        #expect(expected == [.seconds(20), .seconds(40), .seconds(80), .seconds(100), .seconds(100), .seconds(100)])
        breaker.probe()
        #expect(breaker.record(.success, at: now) == .close)
        #expect(breaker.state == .closed)
    }

    @Test func runsEndingWhileOpenAreNotCounted() {
        var breaker = Self.breaker(minRuns: 2)
        let t0 = ContinuousClock.now
        _ = breaker.record(.failure, at: t0)
        _ = breaker.record(.failure, at: t0)
        #expect(breaker.isOpen)
        #expect(breaker.record(.success, at: t0) == .none)
        #expect(breaker.isOpen, "a late success of a run started before it opened does not close it")
    }

    @Test func aLongRunOfSuccessesKeepsMemoryToAboutOneWindow() {
        var breaker = Self.breaker(minRuns: 10, window: .milliseconds(10))
        var now = ContinuousClock.now
        for _ in 0..<100_000 {
            now = now + .microseconds(100)
            #expect(breaker.record(.success, at: now) == .none)
        }
    }
}
