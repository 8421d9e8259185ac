import Testing

@testable import AMQP

@Suite("ConfirmTracker")
struct ConfirmTrackerTests {
    typealias Tracker = ConfirmTracker<String, Int>

    private func sendAll(_ tracker: inout Tracker) -> [UInt64] {
        var sequences: [UInt64] = []
        while let next = tracker.nextToSend() {
            sequences.append(tracker.nextSequence)
            tracker.sent(next.ticket)
        }
        return sequences
    }

    private func outcomes(_ resolutions: [Tracker.Resolution]) -> [Int: PublishOutcome] {
        var result: [Int: PublishOutcome] = [:]
        for r in resolutions {
            if case .success(let outcome) = r.result { result[r.waiter] = outcome }
        }
        return result
    }

    @Test func aMultipleAckConfirmsEveryPublishUpToItsTag() {
        var t = Tracker(maxInFlight: 10)
        for i in 1...5 { t.enqueue("m\(i)", waiter: i, messageID: "id\(i)", deadline: 100) }
        #expect(sendAll(&t) == [1, 2, 3, 4, 5])
        var resolved: [Tracker.Resolution] = []
        t.confirm(tag: 3, multiple: true, positive: true, into: &resolved)
        #expect(outcomes(resolved) == [1: .confirmed, 2: .confirmed, 3: .confirmed])
        resolved.removeAll()
        t.confirm(tag: 5, multiple: false, positive: true, into: &resolved)
        #expect(outcomes(resolved) == [5: .confirmed])
        #expect(t.inFlightCount == 1)
    }

    @Test func aNackResolvesAsNacked() {
        var t = Tracker(maxInFlight: 10)
        t.enqueue("a", waiter: 1, messageID: nil, deadline: 100)
        t.enqueue("b", waiter: 2, messageID: nil, deadline: 100)
        _ = sendAll(&t)
        var resolved: [Tracker.Resolution] = []
        t.confirm(tag: 2, multiple: true, positive: false, into: &resolved)
        #expect(outcomes(resolved) == [1: .nacked, 2: .nacked])
    }

    @Test func aReturnBeforeTheAckMakesTheOutcomeReturned() {
        var t = Tracker(maxInFlight: 10)
        t.enqueue("a", waiter: 1, messageID: "same", deadline: 100)
        t.enqueue("b", waiter: 2, messageID: "other", deadline: 100)
        t.enqueue("c", waiter: 3, messageID: "same", deadline: 100)
        _ = sendAll(&t)
        // Returns come in publish order: the first "same" is publish 1.
        let matched = t.returned(messageID: "same", replyCode: 312, replyText: "NO_ROUTE")
        #expect(matched)
        var resolved: [Tracker.Resolution] = []
        t.confirm(tag: 3, multiple: true, positive: true, into: &resolved)
        #expect(outcomes(resolved) == [1: .returned(replyCode: 312, replyText: "NO_ROUTE"), 2: .confirmed, 3: .confirmed])
    }

    @Test func aReturnForAnUnknownMessageIDMatchesNothing() {
        var t = Tracker(maxInFlight: 10)
        t.enqueue("a", waiter: 1, messageID: "x", deadline: 100)
        _ = sendAll(&t)
        let unknown = t.returned(messageID: "y", replyCode: 312, replyText: "NO_ROUTE")
        let missing = t.returned(messageID: nil, replyCode: 312, replyText: "NO_ROUTE")
        #expect(!unknown)
        #expect(!missing)
    }

    @Test func thePublishWindowBoundsUnconfirmedPublishes() {
        var t = Tracker(maxInFlight: 2)
        for i in 1...5 { t.enqueue("m\(i)", waiter: i, messageID: nil, deadline: 100) }
        #expect(sendAll(&t) == [1, 2])
        #expect(t.unsentCount == 3)
        var resolved: [Tracker.Resolution] = []
        t.confirm(tag: 1, multiple: false, positive: true, into: &resolved)
        #expect(sendAll(&t) == [3])
    }

    @Test func publishesPastTheirDeadlineTimeOutWhetherSentOrNot() {
        var t = Tracker(maxInFlight: 1)
        t.enqueue("sent", waiter: 1, messageID: nil, deadline: 100)
        t.enqueue("waiting", waiter: 2, messageID: nil, deadline: 150)
        t.enqueue("later", waiter: 3, messageID: nil, deadline: 500)
        _ = sendAll(&t)
        #expect(t.nextDeadline == 100)
        var resolved: [Tracker.Resolution] = []
        t.expire(now: 99, into: &resolved)
        #expect(resolved.isEmpty)
        t.expire(now: 150, into: &resolved)
        #expect(outcomes(resolved) == [1: .timedOut, 2: .timedOut])
        #expect(t.nextDeadline == 500)
        // A confirm arriving after the timeout is ignored.
        resolved.removeAll()
        t.confirm(tag: 1, multiple: false, positive: true, into: &resolved)
        #expect(resolved.isEmpty)
        // The window freed by the timed-out publish lets the next one go.
        #expect(sendAll(&t) == [2])
    }

    @Test func aShorterDeadlineQueuedBehindALongerOneStillExpiresFirst() {
        var t = Tracker(maxInFlight: 10)
        t.enqueue("long", waiter: 1, messageID: nil, deadline: 1_000)
        t.enqueue("short", waiter: 2, messageID: nil, deadline: 10)
        #expect(t.nextDeadline == 10)
        var resolved: [Tracker.Resolution] = []
        t.expire(now: 10, into: &resolved)
        #expect(outcomes(resolved) == [2: .timedOut])
    }

    @Test func losingTheChannelFailsInFlightPublishesAndRestartsSequenceNumbers() {
        var t = Tracker(maxInFlight: 2)
        for i in 1...3 { t.enqueue("m\(i)", waiter: i, messageID: "id\(i)", deadline: 100) }
        _ = sendAll(&t)
        var resolved: [Tracker.Resolution] = []
        t.channelLost(AMQPError(.channelClosed, "gone", replyCode: 404), into: &resolved)
        #expect(resolved.map(\.waiter).sorted() == [1, 2])
        #expect(resolved.allSatisfy { if case .failure(let e) = $0.result { e.replyCode == 404 } else { false } })
        #expect(t.unsentCount == 1)
        #expect(sendAll(&t) == [1], "the unsent publish goes out as sequence 1 of the new channel")
        resolved.removeAll()
        t.confirm(tag: 1, multiple: false, positive: true, into: &resolved)
        #expect(outcomes(resolved) == [3: .confirmed])
    }

    @Test func failAllResolvesEverything() {
        var t = Tracker(maxInFlight: 1)
        t.enqueue("a", waiter: 1, messageID: nil, deadline: 100)
        t.enqueue("b", waiter: 2, messageID: nil, deadline: 100)
        _ = sendAll(&t)
        var resolved: [Tracker.Resolution] = []
        t.failAll(AMQPError(.connectionLost, "gone"), into: &resolved)
        #expect(resolved.map(\.waiter).sorted() == [1, 2])
        #expect(t.isEmpty)
        #expect(t.nextDeadline == nil)
    }
}
