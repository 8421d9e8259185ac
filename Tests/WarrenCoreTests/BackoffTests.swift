import TestSupport
import Testing

@testable import WarrenCore

@Suite("Backoff")
struct BackoffTests {
    @Test func delaysStayWithinAGrowingCeilingCappedAtTheMaximum() {
        var backoff = Backoff(initial: .milliseconds(500), maximum: .seconds(30))
        var generator = SplitMix64(seed: 7)
        let ceilings: [Duration] = [.milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(16), .seconds(30), .seconds(30)]
        for ceiling in ceilings {
            let delay = backoff.next(using: &generator)
            #expect(delay >= .milliseconds(500) && delay <= ceiling, "\(delay) outside [500ms, \(ceiling)]")
        }
        backoff.reset()
        #expect(backoff.next(using: &generator) == .milliseconds(500))
    }

    @Test func jitterSpreadsTheDelays() {
        var generator = SplitMix64(seed: 11)
        let delays = (0..<20).map { _ -> Duration in
            var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(10))
            for _ in 0..<5 { _ = backoff.next(using: &generator) }
            return backoff.next(using: &generator)
        }
        #expect(Set(delays).count > 10, "twenty daemons restarting together do not all wait the same time")
    }
}
