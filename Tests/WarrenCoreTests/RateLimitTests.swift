import Testing
@testable import WarrenCore

@Suite struct RateLimitTests {
    @Test(arguments: [("50/s", 50.0), ("600/m", 10.0), ("36/h", 0.01), ("0.5/s", 0.5), (" 2 / s ", 2.0)])
    func parsesRunsPerUnitOfTime(_ text: String, _ perSecond: Double) throws {
        let limit = try #require(RateLimit.parse(text))
        #expect(abs(limit.perSecond - perSecond) < 1e-9)
    }

    @Test(arguments: ["50", "50/d", "0/s", "-1/s", "x/s", "50/s/s", "nan/s", "inf/s", "1/", "/s", "0.01/h"])
    func refusesAnythingElse(_ text: String) {
        #expect(RateLimit.parse(text) == nil, "\(text)")
    }

    @Test func aBurstOfConcurrencyRunsStartsAtOnceThenOneRunPerInterval() throws {
        var schedule = RateSchedule(try #require(RateLimit.parse("10/s")), burst: 3)
        let t0 = ContinuousClock.now
        let starts = (0..<6).map { _ in schedule.reserve(at: t0) - t0 }
        #expect(starts == [.zero, .zero, .zero, .milliseconds(100), .milliseconds(200), .milliseconds(300)])
    }

    @Test func anIdleSpellRefillsTheBurstButNoMore() throws {
        var schedule = RateSchedule(try #require(RateLimit.parse("10/s")), burst: 2)
        let t0 = ContinuousClock.now
        _ = (0..<4).map { _ in schedule.reserve(at: t0) }  // slots at 0, 0, 100 ms, 200 ms
        // Ten seconds later the bucket is full again: two at once, then the rate.
        let later = t0 + .seconds(10)
        let starts = (0..<4).map { _ in schedule.reserve(at: later) - later }
        #expect(starts == [.zero, .zero, .milliseconds(100), .milliseconds(200)])
    }

    @Test func overAnyWindowTheRunsStartedStayWithinTheRatePlusTheBurst() throws {
        var schedule = RateSchedule(try #require(RateLimit.parse("25/s")), burst: 4)
        let t0 = ContinuousClock.now
        // Workers asking as fast as they can, at random moments.
        var now = t0
        var starts: [ContinuousClock.Instant] = []
        for step in 0..<500 {
            now = now + .milliseconds(step % 7)
            starts.append(schedule.reserve(at: now))
        }
        starts.sort()
        for (index, start) in starts.enumerated() {
            let window = starts[index...].prefix { $0 < start + .seconds(1) }.count
            #expect(window <= 25 + 4, "\(window) runs started within one second")
        }
    }
}
