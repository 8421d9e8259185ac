import AMQP

/// One queue's worker pool: `concurrency` workers take deliveries from the consumer and process
/// them, so at most `concurrency` run at once. The consumer's prefetch bounds what waits for a
/// worker. Once draining starts, deliveries not yet started go back to the broker (nack with
/// requeue) without running.
///
/// When nothing the queue does may block a thread (`DeliveryProcessor.neverBlocks`: only the
/// built-in non-blocking handlers, no dedup), the pool runs on the consumer connection's I/O
/// thread (`IOLoopExecutor`): deliveries reach it, and its settlements reach the wire, without a
/// thread hand-over, and a worker goes through a whole batch without suspending. Any other
/// queue's pool runs on the shared pool, so a slow or stuck handler can never hold up reading,
/// heartbeats or the other queues of the connection.
///
/// `warren_inflight_messages{queue}` counts the deliveries the workers have taken and not yet
/// settled (at most `concurrency`); the rest of the prefetch window waits in the feed, where
/// the broker counts it as unacked.
struct QueueRunner: Sendable {
    let consumer: Consumer
    let processor: DeliveryProcessor
    let concurrency: Int
    let draining: Latch
    let activity = QueueActivity()

    /// Returns when the consumer's stream ends and every started delivery is processed; the
    /// error is why the stream ended, if it did not end normally.
    func run() async -> (any Error)? {
        guard processor.neverBlocks else { return await runPool() }
        return await withTaskExecutorPreference(consumer.connection.executor) { await runPool() }
    }

    private func runPool() async -> (any Error)? {
        let feed = DeliveryFeed()
        return await withTaskGroup(of: Void.self) { group in
            for _ in 0..<max(1, concurrency) {
                group.addTask { await work(feed) }
            }
            var ended: (any Error)?
            do {
                for try await batch in consumer.deliveries.batches {
                    activity.received(batch.count)
                    feed.push(batch)
                }
            } catch {
                ended = error
            }
            feed.end()
            await group.waitForAll()
            return ended
        }
    }

    private nonisolated(nonsending) func work(_ feed: DeliveryFeed) async {
        let metrics = processor.metrics
        while let delivery = await feed.next() {
            if draining.isSet {
                consumer.nack(delivery, requeue: true)
                metrics.count(.requeued)
                continue
            }
            activity.started()
            metrics.inflight.increment()
            await processor.process(delivery)
            metrics.inflight.decrement()
            activity.finished()
        }
    }
}
