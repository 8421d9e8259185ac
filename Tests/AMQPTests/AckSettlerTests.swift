import TestSupport
import Testing

@testable import AMQP

@Suite("AckSettler")
struct AckSettlerTests {
    private func settler(_ delivered: UInt64, mode: AckSettler.Mode = .coalesced(holdBackNanoseconds: 1_000)) -> AckSettler {
        var settler = AckSettler(mode: mode)
        for tag in 1...delivered { settler.delivered(tag) }
        return settler
    }

    private func flush(_ settler: inout AckSettler, now: UInt64 = 0) -> [AckSettler.Action] {
        var actions: [AckSettler.Action] = []
        settler.flush(now: now, into: &actions)
        return actions
    }

    @Test func coalescesAContiguousRunOfAcksIntoOneMultipleAck() {
        var s = settler(5)
        for tag: UInt64 in 1...5 { #expect(s.record(tag, .ack, now: 0) == .accepted) }
        #expect(flush(&s) == [.ack(tag: 5, multiple: true)])
        #expect(s.unsettledCount == 0)
    }

    @Test func sendsASingleTagWithoutMultiple() {
        var s = settler(1)
        _ = s.record(1, .ack, now: 0)
        #expect(flush(&s) == [.ack(tag: 1, multiple: false)])
    }

    @Test func splitsRunsWhereTheDispositionChanges() {
        var s = settler(6)
        _ = s.record(1, .ack, now: 0)
        _ = s.record(2, .ack, now: 0)
        _ = s.record(3, .nack(requeue: true), now: 0)
        _ = s.record(4, .reject(requeue: true), now: 0)
        _ = s.record(5, .nack(requeue: false), now: 0)
        _ = s.record(6, .reject(requeue: false), now: 0)
        #expect(flush(&s) == [
            .ack(tag: 2, multiple: true),
            .nack(tag: 4, multiple: true, requeue: true),
            .nack(tag: 6, multiple: true, requeue: false),
        ])
    }

    @Test func keepsARejectSingleWhenItStandsAlone() {
        var s = settler(2)
        _ = s.record(1, .ack, now: 0)
        _ = s.record(2, .reject(requeue: false), now: 0)
        #expect(flush(&s) == [.ack(tag: 1, multiple: false), .reject(tag: 2, requeue: false)])
    }

    @Test func holdsCompletionsAboveAGapUntilTheGapCloses() {
        var s = settler(4)
        _ = s.record(2, .ack, now: 0)
        _ = s.record(3, .ack, now: 0)
        #expect(flush(&s, now: 10).isEmpty, "tag 1 is still running; 2 and 3 have not waited out the hold-back")
        _ = s.record(1, .ack, now: 20)
        #expect(flush(&s, now: 20) == [.ack(tag: 3, multiple: true)])
        #expect(s.floor == 4)
    }

    @Test func settlesCompletionsAboveAGapIndividuallyAfterTheHoldBack() {
        var s = settler(4)
        _ = s.record(2, .ack, now: 0)
        _ = s.record(4, .nack(requeue: true), now: 0)
        #expect(s.nextDeadline() == 1_000)
        #expect(flush(&s, now: 1_000) == [.ack(tag: 2, multiple: false), .nack(tag: 4, multiple: false, requeue: true)])
        #expect(s.unsettledCount == 2)
        // The gap closes; the multiple ack's top tag (3) is unsettled, and it covers the already
        // settled 2, which the broker accepts.
        _ = s.record(1, .ack, now: 2_000)
        _ = s.record(3, .ack, now: 2_000)
        #expect(flush(&s, now: 2_000) == [.ack(tag: 3, multiple: true)])
        #expect(s.unsettledCount == 0)
        #expect(s.floor == 5)
    }

    @Test func neverUsesAnAlreadySettledTagAsTheTopOfAMultipleFrame() {
        var s = settler(3)
        _ = s.record(3, .ack, now: 0)
        #expect(flush(&s, now: 5_000) == [.ack(tag: 3, multiple: false)])
        _ = s.record(1, .ack, now: 5_000)
        _ = s.record(2, .ack, now: 5_000)
        #expect(flush(&s, now: 5_000) == [.ack(tag: 2, multiple: true)])
        #expect(s.floor == 4)
    }

    @Test func refusesToSettleATagTwice() {
        var s = settler(3)
        #expect(s.record(2, .ack, now: 0) == .accepted)
        #expect(s.record(2, .ack, now: 0) == .alreadySettled, "recorded, not yet sent")
        _ = s.record(1, .ack, now: 0)
        _ = flush(&s)
        #expect(s.record(1, .nack(requeue: true), now: 0) == .alreadySettled, "below the floor")
        _ = s.record(3, .ack, now: 0)
        _ = flush(&s)
        #expect(s.record(3, .ack, now: 0) == .alreadySettled)
    }

    @Test func refusesTagsThatWereNeverDelivered() {
        var s = settler(2)
        #expect(s.record(0, .ack, now: 0) == .unknownTag)
        #expect(s.record(3, .ack, now: 0) == .unknownTag)
    }

    @Test func immediateModeSendsOneFramePerSettlementInTagOrder() {
        var s = settler(4, mode: .immediate)
        _ = s.record(2, .ack, now: 0)
        _ = s.record(1, .ack, now: 0)
        _ = s.record(4, .ack, now: 0)
        #expect(flush(&s) == [.ack(tag: 1, multiple: false), .ack(tag: 2, multiple: false), .ack(tag: 4, multiple: false)])
        _ = s.record(3, .ack, now: 0)
        #expect(flush(&s) == [.ack(tag: 3, multiple: false)])
        #expect(s.unsettledCount == 0)
    }

    // MARK: a contiguous run while the broker may still send

    private let windowed = AckSettler.Mode.coalesced(holdBackNanoseconds: 1_000, window: 10)

    @Test func aShortContiguousRunWaitsWhileTheWindowHasRoomThenGoesOutAfterTheHoldBack() {
        var s = settler(4, mode: windowed)
        for tag: UInt64 in 1...3 { _ = s.record(tag, .ack, now: 100) }
        #expect(flush(&s, now: 500).isEmpty, "3 finished of a window of 10, 4 unsettled: the broker can still send 6")
        #expect(s.nextDeadline() == 1_100)
        #expect(flush(&s, now: 1_100) == [.ack(tag: 3, multiple: true)])
        #expect(s.unsettledCount == 1)
    }

    @Test func aRunOfHalfTheWindowGoesOutAtOnce() {
        var s = settler(6, mode: windowed)
        for tag: UInt64 in 1...4 { _ = s.record(tag, .ack, now: 0) }
        #expect(flush(&s, now: 1).isEmpty)
        _ = s.record(5, .ack, now: 1)
        #expect(flush(&s, now: 2) == [.ack(tag: 5, multiple: true)])
    }

    @Test func aFullWindowSendsWhatIsFinishedAtOnce() {
        // Ten unsettled of ten: the broker sends nothing more until something is settled, so
        // holding the run would leave workers idle.
        var s = settler(10, mode: windowed)
        _ = s.record(1, .ack, now: 0)
        #expect(flush(&s, now: 1) == [.ack(tag: 1, multiple: false)])
    }

    @Test func theDeliveryThatMakesHalfTheWindowFromTheFloorIsNamedOncePerFloor() {
        var s = AckSettler(mode: windowed)
        var named: [UInt64] = []
        for tag: UInt64 in 1...9 {
            s.delivered(tag)
            if s.completesHalfWindow(at: tag) { named.append(tag) }
        }
        #expect(named == [5], "tags 1-5 are half a window of 10; a floor that does not move names no other")
        for tag: UInt64 in 1...5 { _ = s.record(tag, .ack, now: 0) }
        #expect(flush(&s, now: 1) == [.ack(tag: 5, multiple: true)])
        s.delivered(10)
        #expect(s.completesHalfWindow(at: 10), "the floor is 6 now: tags 6-10 are the next half")
        #expect(!AckSettler(mode: .immediate).completesHalfWindow(at: 1))
        #expect(!AckSettler(mode: .coalesced(holdBackNanoseconds: 1_000, window: 1)).completesHalfWindow(at: 1))
    }

    @Test func aDeliveryAboveAGapThatWaitedOutTheHoldBackReleasesTheHeldRunToo() {
        var s = settler(5, mode: windowed)
        _ = s.record(3, .ack, now: 0)
        _ = s.record(1, .ack, now: 600)
        #expect(flush(&s, now: 700).isEmpty)
        #expect(flush(&s, now: 1_000) == [.ack(tag: 1, multiple: false), .ack(tag: 3, multiple: false)])
        #expect(s.unsettledCount == 3)
    }

    @Test func withoutAWindowOrWithAWindowOfOneNothingContiguousWaits() {
        for mode in [AckSettler.Mode.coalesced(holdBackNanoseconds: 1_000), .coalesced(holdBackNanoseconds: 1_000, window: 1)] {
            var s = settler(3, mode: mode)
            _ = s.record(1, .ack, now: 0)
            #expect(flush(&s, now: 1) == [.ack(tag: 1, multiple: false)], "\(mode)")
        }
    }

    @Test func aConsumerOpenedHoldingRunsHasItsPrefetchAsTheWindowAndOneThatDoesNotHoldsNothing() {
        var holding = AckSettler(.coalesced(holdBack: .microseconds(1)), prefetch: 10)
        var notHolding = AckSettler(.coalesced(holdBack: .microseconds(1), holdingRuns: false), prefetch: 10)
        for tag: UInt64 in 1...4 {
            holding.delivered(tag)
            notHolding.delivered(tag)
        }
        _ = holding.record(1, .ack, now: 0)
        _ = notHolding.record(1, .ack, now: 0)
        #expect(flush(&holding, now: 1).isEmpty, "one finished of a window of 10 waits")
        #expect(flush(&notHolding, now: 1) == [.ack(tag: 1, multiple: false)])
        #expect(AckSettler(.immediate, prefetch: 10).mode == .immediate)
    }

    @Test func closingSendsAHeldRun() {
        var s = settler(4, mode: windowed)
        _ = s.record(1, .nack(requeue: true), now: 0)
        _ = s.record(2, .nack(requeue: true), now: 0)
        #expect(flush(&s, now: .max) == [.nack(tag: 2, multiple: true, requeue: true)])
    }

    @Test func outOfOrderCompletionOfAThousandDeliveriesSettlesEachExactlyOnce() {
        var generator = SplitMix64(seed: 42)
        var s = settler(1_000, mode: .coalesced(holdBackNanoseconds: 50))
        var order = Array(UInt64(1)...1_000)
        order.shuffle(using: &generator)
        var settledBy: [UInt64: Int] = [:]
        var now: UInt64 = 0
        var frames = 0
        for (index, tag) in order.enumerated() {
            _ = s.record(tag, .ack, now: now)
            now += 7
            if index % 10 == 0 {
                var previousFloor = s.floor
                for action in flush(&s, now: now) {
                    frames += 1
                    guard case .ack(let top, let multiple) = action else {
                        Issue.record("unexpected \(action)")
                        continue
                    }
                    let range = multiple ? Array(previousFloor...top) : [top]
                    for t in range where settledBy[t] == nil { settledBy[t] = 1 }
                    if multiple { #expect(settledBy[top] == 1) }
                    previousFloor = max(previousFloor, multiple ? top + 1 : previousFloor)
                }
            }
        }
        for action in flush(&s, now: now + 1_000) {
            frames += 1
            if case .ack(let top, _) = action { settledBy[top] = 1 }
        }
        #expect(s.unsettledCount == 0)
        #expect(s.floor == 1_001)
        #expect(frames < 1_000, "coalescing should need fewer frames than deliveries, needed \(frames)")
    }
}

/// A small deterministic generator so shuffles are reproducible.

