import AMQP
import Synchronization
import Testing

@testable import WarrenCore

/// A worker whose continuation the feed dropped would wait forever: the time limit turns that
/// into a failure.
@Suite(.timeLimit(.minutes(1))) struct DeliveryFeedTests {
    static func deliveries(_ tags: ClosedRange<UInt64>) -> [Delivery] {
        tags.map {
            Delivery(
                tag: DeliveryTag(channel: 1, epoch: 1, value: $0), consumerTag: "c", redelivered: false, exchange: "", routingKey: "q",
                properties: BasicProperties(), body: [])
        }
    }

    /// Takes from `feed` until it ends; returns the tags in the order taken.
    static func drain(_ feed: DeliveryFeed) async -> [UInt64] {
        var tags: [UInt64] = []
        while let delivery = await feed.next() { tags.append(delivery.tag.value) }
        return tags
    }

    static func untilIdle(_ feed: DeliveryFeed, _ workers: Int) async {
        while feed.idleWorkers < workers { await Task.yield() }
    }

    final class Taken: Sendable {
        private let tags = Mutex<[UInt64]>([])
        func append(_ tag: UInt64) { tags.withLock { $0.append(tag) } }
        var all: Set<UInt64> { tags.withLock { Set($0) } }
    }

    /// `count` workers, each waiting on the empty feed for one delivery; what they took.
    static func idleWorkers(_ count: Int, on feed: DeliveryFeed) async -> ([Task<Void, Never>], Taken) {
        let taken = Taken()
        let workers = (0..<count).map { _ in
            Task {
                if let delivery = await feed.next() { taken.append(delivery.tag.value) }
            }
        }
        await untilIdle(feed, count)
        return (workers, taken)
    }

    @Test func oneWorkerTakesEveryDeliveryInOrderThenNilOnceEnded() async {
        let feed = DeliveryFeed()
        feed.push(Self.deliveries(1...3))
        feed.push(Self.deliveries(4...5))
        feed.end()
        #expect(await Self.drain(feed) == [1, 2, 3, 4, 5])
        #expect(await feed.next() == nil, "an ended feed stays ended")
    }

    @Test func anEndedFeedGivesTheWholeBatchBackInOrder() {
        let feed = DeliveryFeed()
        feed.end()
        #expect(feed.receive(Self.deliveries(1...4)).map(\.tag.value) == [1, 2, 3, 4])
        #expect(feed.push(Self.deliveries(5...6)).map(\.tag.value) == [5, 6])
    }

    @Test func aTakenBatchIsNotGivenBack() async {
        let feed = DeliveryFeed()
        #expect(feed.receive(Self.deliveries(1...3)).isEmpty)
        feed.end()
        #expect(await Self.drain(feed) == [1, 2, 3])
    }

    @Test func deliveriesWaitingWhenTheFeedEndsAreStillHandedOut() async {
        let feed = DeliveryFeed()
        feed.push(Self.deliveries(1...2))
        feed.end()
        #expect(await feed.next()?.tag.value == 1)
        #expect(await feed.next()?.tag.value == 2)
        #expect(await feed.next() == nil)
    }

    /// A batch wakes one of the workers suspended on an empty feed, the rest wait for whoever
    /// asks next; together they see every delivery exactly once, and all of them end (none is
    /// left suspended) when the feed ends.
    @Test func idleWorkersShareABatchAndAllEndWhenTheFeedEnds() async {
        let feed = DeliveryFeed()
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
        let feed = DeliveryFeed()
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
        let feed = DeliveryFeed()
        let (workers, got) = await Self.idleWorkers(3, on: feed)
        feed.push(Self.deliveries(1...2))
        #expect(feed.idleWorkers == 1, "two woken, one for each delivery")
        feed.end()
        for worker in workers { await worker.value }
        #expect(got.all == [1, 2])
    }

    @Test func aWorkerWaitingOnAnEmptyFeedGetsNilWhenItEnds() async {
        let feed = DeliveryFeed()
        let waiting = Task { await feed.next() }
        await Self.untilIdle(feed, 1)
        feed.end()
        #expect(await waiting.value == nil)
    }
}
