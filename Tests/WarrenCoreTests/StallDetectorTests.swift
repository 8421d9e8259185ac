import Testing

@testable import WarrenCore

@Suite struct StallDetectorTests {
    /// Feeds (received, in flight, ready) samples; returns the verdict after each.
    static func verdicts(_ samples: [(Int, Int, UInt32)], _ detector: inout StallDetector) -> [Bool] {
        samples.map { detector.observe(received: $0.0, inFlight: $0.1, ready: $0.2) }
    }

    /// The first sample is the baseline: idle means nothing received since the previous one.
    @Test func anIdleConsumerWithReadyMessagesForTwoIntervalsInARowIsStalled() {
        var detector = StallDetector()
        #expect(Self.verdicts([(0, 0, 5), (0, 0, 5), (0, 0, 5)], &detector) == [false, false, true])
    }

    @Test func anIdleConsumerOfAnEmptyQueueIsNotStalled() {
        var detector = StallDetector()
        #expect(Self.verdicts([(0, 0, 0), (0, 0, 0), (0, 0, 0)], &detector) == [false, false, false])
    }

    @Test func aConsumerThatReceivesOrWorksIsNotStalled() {
        var detector = StallDetector()
        #expect(Self.verdicts([(1, 0, 5), (2, 0, 5), (3, 0, 5)], &detector) == [false, false, false], "receiving")
        #expect(Self.verdicts([(3, 2, 5), (3, 2, 5)], &detector) == [false, false], "handlers still running")
    }

    @Test func activityBetweenIdleChecksStartsTheCountAgain() {
        var detector = StallDetector()
        #expect(Self.verdicts([(0, 0, 5), (0, 0, 5), (1, 0, 5), (1, 0, 5), (1, 0, 5)], &detector) == [false, false, false, false, true])
    }
}
