import AMQP
import Synchronization
import Testing

@testable import WarrenCore

/// A worker whose continuation the feed dropped would wait forever: the time limit turns that
/// into a failure.
@Suite(.timeLimit(.minutes(1))) struct DeliveryFeedTests {
    /// What is left of a delivery run on the spot is its tag, here.
    typealias Feed = DeliveryFeed<UInt64>

    static func deliveries(_ tags: ClosedRange<UInt64>) -> [Delivery] {
        tags.map {
            Delivery(
                tag: DeliveryTag(channel: 1, epoch: 1, value: $0), consumerTag: "c", redelivered: false, exchange: "", routingKey: "q",
                properties: BasicProperties(), body: [])
        }
    }

    /// Takes from `feed` until it ends; returns the tags in the order taken.
    static func drain(_ feed: Feed) async -> [UInt64] {
        var tags: [UInt64] = []
        while let delivery = await feed.next()?.delivery { tags.append(delivery.tag.value) }
        return tags
    }

    static func untilIdle(_ feed: Feed, _ workers: Int) async {
        while feed.idleWorkers < workers { await Task.yield() }
    }

    final class Taken: Sendable {
        private let tags = Mutex<[UInt64]>([])
        func append(_ tag: UInt64) { tags.withLock { $0.append(tag) } }
        var all: Set<UInt64> { tags.withLock { Set($0) } }
    }

    /// `count` workers, each waiting on the empty feed for one delivery; what they took.
    static func idleWorkers(_ count: Int, on feed: Feed) async -> ([Task<Void, Never>], Taken) {
        let taken = Taken()
        let workers = (0..<count).map { _ in
            Task {
                if let delivery = await feed.next()?.delivery { taken.append(delivery.tag.value) }
            }
        }
        await untilIdle(feed, count)
        return (workers, taken)
    }

    @Test func oneWorkerTakesEveryDeliveryInOrderThenNilOnceEnded() async {
        let feed = Feed()
        feed.push(Self.deliveries(1...3))
        feed.push(Self.deliveries(4...5))
        feed.end()
        #expect(await Self.drain(feed) == [1, 2, 3, 4, 5])
        #expect(await feed.next() == nil, "an ended feed stays ended")
    }

    @Test func anEndedFeedGivesTheWholeBatchBackInOrder() {
        let feed = Feed()
        feed.end()
        #expect(feed.receive(Self.deliveries(1...4)).map(\.tag.value) == [1, 2, 3, 4])
        #expect(feed.push(Self.deliveries(5...6)).map(\.tag.value) == [5, 6])
    }

    @Test func aTakenBatchIsNotGivenBack() async {
        let feed = Feed()
        #expect(feed.receive(Self.deliveries(1...3)).isEmpty)
        feed.end()
        #expect(await Self.drain(feed) == [1, 2, 3])
    }

    @Test func deliveriesWaitingWhenTheFeedEndsAreStillHandedOut() async {
        let feed = Feed()
        feed.push(Self.deliveries(1...2))
        feed.end()
        #expect(await feed.next()?.delivery?.tag.value == 1)
        #expect(await feed.next()?.delivery?.tag.value == 2)
        #expect(await feed.next() == nil)
    }

    /// A batch wakes one of the workers suspended on an empty feed, the rest wait for whoever
    /// asks next; together they see every delivery exactly once, and all of them end (none is
    /// left suspended) when the feed ends.
    @Test func idleWorkersShareABatchAndAllEndWhenTheFeedEnds() async {
        let feed = Feed()
        let workers = 4
        let taken = await withTaskGroup(of: [UInt64].self) { group in
            for _ in 0..<workers {
                group.addTask { await Self.drain(feed) }
            }
            // Batches smaller and larger than the number of workers waiting for them.
            await Self.untilIdle(feed, workers)
            feed.push(Self.deliveries(1...2))
            feed.push(Self.deliveries(3...9))
            await Self.untilIdle(feed, workers)
            feed.push(Self.deliveries(10...10))
            feed.end()
            var all: [UInt64] = []
            for await tags in group { all += tags }
            return all
        }
        #expect(taken.sorted() == Array(1...10))
    }

    /// Where the workers share one thread, one idle worker is woken per batch; a worker about
    /// to suspend wakes the next idle one for what waits, and nothing when nothing waits.
    @Test func onOneThreadABatchWakesOneIdleWorkerAndASuspendingWorkerWakesAnother() async {
        let feed = Feed()
        feed.workersShareOneThread(true)
        let (workers, got) = await Self.idleWorkers(2, on: feed)
        feed.push(Self.deliveries(1...3))
        #expect(feed.idleWorkers == 1, "one worker woken for the batch")
        feed.wakeAnother()
        #expect(feed.idleWorkers == 0, "the other woken for what waits")
        for worker in workers { await worker.value }
        #expect(got.all == [1, 2])
        feed.wakeAnother()
        #expect(feed.takeNow()?.tag.value == 3, "with no worker idle, the rest still waits")
        feed.end()
    }

    /// Elsewhere each delivery of a batch wakes an idle worker, so they run in parallel.
    @Test func elsewhereEachDeliveryOfABatchWakesAnIdleWorker() async {
        let feed = Feed()
        let (workers, got) = await Self.idleWorkers(3, on: feed)
        feed.push(Self.deliveries(1...2))
        #expect(feed.idleWorkers == 1, "two woken, one for each delivery")
        feed.end()
        for worker in workers { await worker.value }
        #expect(got.all == [1, 2])
    }

    @Test func aWorkerWaitingOnAnEmptyFeedGetsNilWhenItEnds() async {
        let feed = Feed()
        let waiting = Task { await feed.next() }
        await Self.untilIdle(feed, 1)
        feed.end()
        #expect(await waiting.value == nil)
    }
    // MARK: run on the spot

    /// Records what a spot runner was given, and answers for each tag as told.
    final class SpotRunner: Sendable {
        private let seen = Mutex<[UInt64]>([])
        private let answer: @Sendable (Delivery) -> Feed.Spot

        init(_ answer: @escaping @Sendable (Delivery) -> Feed.Spot = { _ in .done }) {
            self.answer = answer
        }

        var tags: [UInt64] { seen.withLock { $0 } }

        func run(_ delivery: Delivery) -> Feed.Spot {
            seen.withLock { $0.append(delivery.tag.value) }
            return answer(delivery)
        }
    }

    final class Got: Sendable {
        private let items = Mutex<[String]>([])
        func append(_ item: String) { items.withLock { $0.append(item) } }
        var all: [String] { items.withLock { $0 } }
    }

    /// `count` workers, each waiting on the empty feed for one item; what each got, as
    /// "d<tag>" for a delivery, "s<tag>" for one started on the spot, "nil" for the end.
    static func idleWorkersRecordingItems(_ count: Int, on feed: Feed) async -> ([Task<Void, Never>], Got) {
        let got = Got()
        let workers = (0..<count).map { _ in
            Task {
                let item = await feed.next()
                let text = switch item {
                case .delivery(let delivery): "d\(delivery.tag.value)"
                case .started(let tag): "s\(tag)"
                case nil: "nil"
                }
                got.append(text)
            }
        }
        await untilIdle(feed, count)
        return (workers, got)
    }

    @Test func aBatchThatFindsAWorkerIdleRunsOnTheSpotInOrderAndNeedsNoWorker() async {
        let feed = Feed()
        let runner = SpotRunner()
        feed.workersShareOneThread(true, runOnTheSpot: { runner.run($0) })
        let (workers, got) = await Self.idleWorkersRecordingItems(2, on: feed)
        #expect(feed.push(Self.deliveries(1...3)).isEmpty)
        #expect(runner.tags == [1, 2, 3])
        #expect(feed.idleWorkers == 2, "the worker standing by went back to idle")
        #expect(feed.takeNow() == nil, "nothing left waiting")
        feed.end()
        for worker in workers { await worker.value }
        #expect(got.all == ["nil", "nil"])
    }

    @Test func aDeliveryThatWaitsGoesToTheWorkerStandingByAndTheNextIdleOneStandsInForTheRest() async {
        let feed = Feed()
        let runner = SpotRunner { [2, 4].contains($0.tag.value) ? .started($0.tag.value) : .done }
        feed.workersShareOneThread(true, runOnTheSpot: { runner.run($0) })
        let (workers, got) = await Self.idleWorkersRecordingItems(2, on: feed)
        feed.push(Self.deliveries(1...6))
        #expect(runner.tags == [1, 2, 3, 4], "with no worker left to stand by, the rest is not run")
        for worker in workers { await worker.value }
        #expect(Set(got.all) == ["s2", "s4"])
        #expect(feed.takeNow()?.tag.value == 5, "the rest waits, in order")
        #expect(feed.takeNow()?.tag.value == 6)
        feed.end()
    }

    @Test func aDeliveryNotStartedGoesToTheWorkerAsItIsAndTheRestWaits() async {
        let feed = Feed()
        let runner = SpotRunner { $0.tag.value == 2 ? .notStarted($0) : .done }
        feed.workersShareOneThread(true, runOnTheSpot: { runner.run($0) })
        let (workers, got) = await Self.idleWorkersRecordingItems(2, on: feed)
        feed.push(Self.deliveries(1...3))
        #expect(runner.tags == [1, 2])
        #expect(feed.idleWorkers == 1, "only the worker standing by was taken")
        #expect(feed.takeNow()?.tag.value == 3)
        feed.end()
        for worker in workers { await worker.value }
        #expect(Set(got.all) == ["d2", "nil"])
    }

    @Test func withNoWorkerIdleABatchWaitsAndIsNotRunOnTheSpot() {
        let feed = Feed()
        let runner = SpotRunner()
        feed.workersShareOneThread(true, runOnTheSpot: { runner.run($0) })
        feed.push(Self.deliveries(1...2))
        #expect(runner.tags.isEmpty)
        #expect(feed.takeNow()?.tag.value == 1)
        #expect(feed.takeNow()?.tag.value == 2)
        feed.end()
    }

    /// Elsewhere (the workers on several threads) nothing runs on the spot.
    @Test func workersOnSeveralThreadsNeverRunOnTheSpot() async {
        let feed = Feed()
        let runner = SpotRunner()
        feed.workersShareOneThread(false, runOnTheSpot: { runner.run($0) })
        let (workers, got) = await Self.idleWorkersRecordingItems(1, on: feed)
        feed.push(Self.deliveries(1...1))
        for worker in workers { await worker.value }
        #expect(runner.tags.isEmpty)
        #expect(got.all == ["d1"])
        feed.end()
    }

    /// The worker standing by is not on the idle list when the feed ends, so `end` cannot tell
    /// it: the batch's end does.
    @Test func aFeedEndedDuringARunOnTheSpotStillEndsTheWorkerStandingBy() async {
        let feed = Feed()
        let runner = SpotRunner { delivery in
            if delivery.tag.value == 1 { feed.end() }
            return .done
        }
        feed.workersShareOneThread(true, runOnTheSpot: { runner.run($0) })
        let (workers, got) = await Self.idleWorkersRecordingItems(1, on: feed)
        feed.push(Self.deliveries(1...2))
        for worker in workers { await worker.value }
        #expect(got.all == ["nil"])
        #expect(runner.tags == [1, 2], "what it held when the feed ended is still run")
    }
}

extension DeliveryFeed.Item {
    /// The delivery, when the worker got one as it arrived.
    var delivery: Delivery? {
        guard case .delivery(let delivery) = self else { return nil }
        return delivery
    }
}
