import AMQP
import Synchronization
import Testing

@testable import WarrenCore

@Suite struct DeliveryFeedTests {
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

    @Test func oneWorkerTakesEveryDeliveryInOrderThenNilOnceEnded() async {
        let feed = DeliveryFeed()
        feed.push(Self.deliveries(1...3))
        feed.push(Self.deliveries(4...5))
        feed.end()
        #expect(await Self.drain(feed) == [1, 2, 3, 4, 5])
        #expect(await feed.next() == nil, "an ended feed stays ended")
    }

    @Test func deliveriesWaitingWhenTheFeedEndsAreStillHandedOut() async {
        let feed = DeliveryFeed()
        feed.push(Self.deliveries(1...2))
        feed.end()
        #expect(await feed.next()?.tag.value == 1)
        #expect(await feed.next()?.tag.value == 2)
        #expect(await feed.next() == nil)
    }

    /// Workers suspended on an empty feed each get one delivery of a later batch, the rest wait
    /// for whoever asks next; together they see every delivery exactly once, and all of them end
    /// (none is left suspended) when the feed ends.
    @Test func idleWorkersShareABatchAndAllEndWhenTheFeedEnds() async {
        let feed = DeliveryFeed()
        let workers = 4
        let taken = await withTaskGroup(of: [UInt64].self) { group in
            for _ in 0..<workers {
                group.addTask { await Self.drain(feed) }
            }
            // Smaller and larger than the number of workers, some pushed before any worker waits.
            feed.push(Self.deliveries(1...2))
            await Task.yield()
            feed.push(Self.deliveries(3...9))
            await Task.yield()
            feed.push(Self.deliveries(10...10))
            feed.end()
            var all: [UInt64] = []
            for await tags in group { all += tags }
            return all
        }
        #expect(taken.sorted() == Array(1...10))
    }

    @Test func aWorkerWaitingOnAnEmptyFeedGetsNilWhenItEnds() async {
        let feed = DeliveryFeed()
        let waiting = Task { await feed.next() }
        await Task.yield()
        feed.end()
        #expect(await waiting.value == nil)
    }
}
