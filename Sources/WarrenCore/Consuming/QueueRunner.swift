import AMQP

/// One queue's worker pool: `concurrency` workers take deliveries from the consumer and process
/// them, so at most `concurrency` run at once. The consumer's prefetch bounds what waits for a
/// worker; `ConsumerWindow` chooses both so that what the pool holds (waiting plus running)
/// stays within the queue's `prefetch`, also with `ack_first`. Once draining starts, deliveries not yet started go back to the broker (nack with
/// requeue) without running.
///
/// The consumer's I/O loop pushes its batches into the pool's `DeliveryFeed` itself (the feed
/// is the consumer's sink): no stream or reading task stands between them. Where the workers
/// run follows `DeliveryProcessor.threading`:
/// - when nothing the queue does may block a thread (only the built-in non-blocking handlers,
///   no dedup), on the I/O thread too: deliveries reach the workers, and their settlements
///   reach the wire, without a thread hand-over, and a worker goes through a whole batch
///   without suspending. A batch that finds a worker idle runs on the spot as it arrives
///   (`startOnTheSpot`, `DeliveryFeed`), that worker standing by for a delivery that waits;
/// - when every handler runs a child process (`exec`), each worker on a thread of its own
///   (one of the queue's `BlockingThreads`), which waits for the process itself: no hand-over
///   per message while deliveries wait in the feed;
/// - otherwise on the shared pool, and a handler that waits with a thread held hands the wait
///   to one of the queue's `BlockingThreads`.
/// The queue has `BlockingThreads` when any of its handlers waits with a thread held: one per
/// worker and such handler, as many as can wait at once.
/// So a slow or stuck handler can never hold up reading, heartbeats or the other queues of the
/// connection.
///
/// `warren_inflight_messages{queue}` counts the deliveries the workers have taken and not yet
/// settled (at most `concurrency`, the pool's worker count); the rest of the prefetch window waits in the feed, where
/// the broker counts it as unacked.
struct QueueRunner: Sendable {
    typealias Feed = DeliveryFeed<DeliveryProcessor.Unfinished>

    let consumer: Consumer
    /// The consumer's sink: what the I/O loop received and no worker took yet.
    let feed: Feed
    let processor: DeliveryProcessor
    let concurrency: Int
    /// How the queue's gate admitted it (a probe runs one delivery at a time).
    let admission: QueueGate.Admission
    /// Set to stop taking deliveries (the slot drains, or the gate's admission changed): those
    /// not yet started go back to the broker unrun.
    let draining: Latch
    let activity: QueueActivity

    /// Returns when the consumer's subscription ends and every started delivery is processed;
    /// the error is why the subscription ended, if it did not end normally.
    func run() async -> (any Error)? {
        let workers = max(1, concurrency)
        let threading = processor.threading
        let blocking = processor.blockingHandlers
        let threads = blocking > 0 ? BlockingThreads(name: "warren-worker", count: workers * blocking) : nil
        let limiter = processor.queue.rateLimit.map { RateLimiter($0, burst: workers) }
        defer { threads?.stop() }
        // A cancelled runner stops as an ended subscription does: workers finish what waits.
        await withTaskCancellationHandler {
            await runWorkers(workers, threading: threading, threads: threads, limiter: limiter)
        } onCancel: {
            feed.finish(nil)
        }
        return feed.endError
    }

    private func runWorkers(_ workers: Int, threading: HandlerThreading, threads: BlockingThreads?, limiter: RateLimiter?) async {
        // Named in every case: a nil preference does not inherit the I/O thread.
        let preference: any TaskExecutor = switch threading {
        case .neverBlocks: consumer.connection.executor
        case .ownThread: threads ?? globalConcurrentExecutor
        case .sharedPool: globalConcurrentExecutor
        }
        let place = DeliveryProcessor.WorkerPlace(threads: threads, onOwnThread: threading == .ownThread && threads != nil)
        // On the I/O thread, a delivery that finds a worker idle runs as it arrives; not with
        // a rate limit, whose wait is a worker's.
        let runner = self
        let spotRunner: Feed.SpotRunner? = limiter == nil ? { @Sendable delivery in runner.startOnTheSpot(delivery, at: place) } : nil
        feed.workersShareOneThread(threading == .neverBlocks, runOnTheSpot: spotRunner)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<workers {
                group.addTask(executorPreference: preference) { await work(feed, limiter: limiter, at: place) }
            }
            await group.waitForAll()
        }
    }

    /// What a worker does with a delivery before its first wait, done on the I/O thread as the
    /// delivery arrives (`DeliveryFeed.runOnTheSpot`).
    private func startOnTheSpot(_ delivery: Delivery, at place: DeliveryProcessor.WorkerPlace) -> Feed.Spot {
        if gaveBack(delivery) { return .done }
        // A back-off is a wait: the worker takes the delivery as it is.
        if processor.backOff.isActive { return .notStarted(delivery) }
        guard let rest = processor.processAtOnce(delivery, at: place) else { return .done }
        return .started(rest)
    }

    /// Gives the delivery back to the broker unrun when the queue drains or its gate does not
    /// admit it now; whether it did.
    private func gaveBack(_ delivery: Delivery) -> Bool {
        guard draining.isSet || processor.gate?.admits(admission) == false else { return false }
        putBackUnrun(delivery)
        return true
    }

    /// Gives back a delivery the queue will not start.
    private func putBackUnrun(_ delivery: Delivery) {
        processor.putBack(delivery, endingConsumer: false)
        processor.metrics.count(.requeued)
    }

    private nonisolated(nonsending) func work(_ feed: Feed, limiter: RateLimiter?, at place: DeliveryProcessor.WorkerPlace) async {
        let metrics = processor.metrics
        while true {
            // Taken without an async call while deliveries wait: a worker goes through a batch
            // of deliveries whose handlers answer at once without Swift concurrency.
            var next = feed.takeNow().map { Feed.Item.delivery($0) }
            if next == nil { next = await feed.next() }
            let rest: DeliveryProcessor.Unfinished
            switch next {
            case nil:
                return
            case .started(let started):
                // Run on the spot up to a wait: this worker carries it on.
                rest = started
            case .delivery(let delivery):
                if gaveBack(delivery) { continue }
                if processor.backOff.isActive {
                    // A copy could not be published for a reason that may pass: wait before
                    // taking the next delivery, so a broker problem never becomes a hot loop.
                    await processor.backOff.wait(unless: draining, healthy: processor.publisher.isHealthy)
                    if draining.isSet {
                        putBackUnrun(delivery)
                        continue
                    }
                }
                if let limiter {
                    // Counted as started while it waits for a rate-limit slot: a queue that waits
                    // for its rate is busy, not stalled.
                    activity.started()
                    // `rate_limit`: the delivery waits for its slot here, within the prefetch window.
                    await limiter.acquire(unless: draining)
                    activity.finished()
                    if draining.isSet {
                        putBackUnrun(delivery)
                        continue
                    }
                }
                // A delivery settled without suspending is in flight for one function call, which
                // a reading would only catch by chance: it is counted in flight (the gauge, the
                // status's count, the stall check's) only when it waits for something. Those
                // counts are only read for display and for the stall check, which also sees every
                // delivery received.
                guard let started = processor.processAtOnce(delivery, at: place) else { continue }
                rest = started
            }
            activity.started()
            metrics.inflight.increment()
            processor.gate?.tally.started()
            // This worker suspends: what waits goes to another.
            feed.wakeAnother()
            await processor.finish(rest)
            processor.gate?.tally.ended()
            metrics.inflight.decrement()
            activity.finished()
        }
    }
}
