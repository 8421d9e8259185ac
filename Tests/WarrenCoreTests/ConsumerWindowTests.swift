import Testing

@testable import WarrenCore

@Suite struct ConsumerWindowTests {
    @Test(arguments: [(1, 1), (2, 2), (32, 8), (5, 1)])
    func policiesThatAckAfterHandlingKeepPrefetchAndConcurrency(prefetch: Int, concurrency: Int) {
        let window = ConsumerWindow(prefetch: prefetch, concurrency: concurrency, acksBeforeHandling: false)
        #expect(window == ConsumerWindow(brokerPrefetch: prefetch, workers: concurrency))
    }

    @Test(arguments: [(2, 2, 1, 1), (4, 2, 2, 2), (3, 2, 1, 2), (32, 8, 24, 8), (3, 5, 1, 2), (9, 1, 8, 1)])
    func ackFirstSplitsPrefetchBetweenTheBrokerAndTheWorkers(prefetch: Int, concurrency: Int, broker: Int, workers: Int) {
        let window = ConsumerWindow(prefetch: prefetch, concurrency: concurrency, acksBeforeHandling: true)
        #expect(window == ConsumerWindow(brokerPrefetch: broker, workers: workers))
    }

    /// Running handlers plus a full broker window is the most ack_first can hold.
    @Test func ackFirstHoldsAtMostPrefetchForEveryCombination() {
        for prefetch in 2...40 {
            for concurrency in 1...prefetch {
                let window = ConsumerWindow(prefetch: prefetch, concurrency: concurrency, acksBeforeHandling: true)
                #expect(window.workers + window.brokerPrefetch == prefetch, "prefetch \(prefetch), concurrency \(concurrency)")
                #expect(window.workers >= 1 && window.workers <= concurrency)
                #expect(window.brokerPrefetch >= 1)
            }
        }
    }

    @Test func ackFirstWithPrefetchOneStillRunsOneWorker() {
        #expect(ConsumerWindow(prefetch: 1, concurrency: 1, acksBeforeHandling: true) == ConsumerWindow(brokerPrefetch: 1, workers: 1))
    }
}
