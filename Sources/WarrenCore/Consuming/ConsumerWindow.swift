/// How a queue's `prefetch` is shared between the broker's window (`basic.qos`) and the
/// handlers running at once, so that the deliveries warren holds (received and not yet
/// finished) never exceed `prefetch`.
///
/// With every policy but `ack_first`, a delivery stays unacked until its processing finishes,
/// so the broker's own count is the bound: the window is `prefetch`, and `concurrency` workers.
///
/// `ack_first` acks a delivery when its handler starts. The broker then counts it as done and
/// refills its window at once, so the deliveries held are the running ones plus a full broker
/// window. Nothing on the client side can stop that refill (RabbitMQ does not honour a
/// client's `channel.flow`), so the split is static: at most `workers` run at once and the
/// broker's window is what is left, `workers + brokerPrefetch == prefetch`. Since the broker
/// window is at least 1 (`basic.qos` 0 means unlimited), at most `prefetch - 1` handlers run at
/// once with `ack_first`: `prefetch = concurrency + 1` uses every worker. The one exception is
/// `prefetch = 1`: one worker and a broker window of 1, so up to 2 deliveries are held.
struct ConsumerWindow: Sendable, Equatable {
    /// The `prefetch_count` asked of the broker.
    var brokerPrefetch: Int
    /// How many workers the queue's pool runs: the most handler runs at once.
    var workers: Int

    init(brokerPrefetch: Int, workers: Int) {
        self.brokerPrefetch = brokerPrefetch
        self.workers = workers
    }

    init(prefetch: Int, concurrency: Int, acksBeforeHandling: Bool) {
        let prefetch = max(1, prefetch)
        let concurrency = max(1, concurrency)
        guard acksBeforeHandling else {
            self.init(brokerPrefetch: prefetch, workers: concurrency)
            return
        }
        guard prefetch > 1 else {
            self.init(brokerPrefetch: 1, workers: 1)
            return
        }
        let workers = min(concurrency, prefetch - 1)
        self.init(brokerPrefetch: prefetch - workers, workers: workers)
    }

    init(_ queue: QueueConfiguration) {
        self.init(prefetch: queue.prefetch, concurrency: queue.concurrency, acksBeforeHandling: queue.ackPolicy.acksBeforeHandling)
    }
}
