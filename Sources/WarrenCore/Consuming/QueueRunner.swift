import AMQP

/// One queue's worker pool: pulls deliveries from its consumer and runs at most `concurrency`
/// of them at once. The consumer's prefetch bounds what waits in the stream, so the pool never
/// holds more than prefetch deliveries in flight. Once draining starts, deliveries not yet
/// started go back to the broker (nack with requeue) without running.
///
/// `warren_inflight_messages{queue}` counts the deliveries the pool has taken and not yet
/// settled (at most `concurrency`); the rest of the prefetch window waits in the consumer's
/// stream, where the broker counts it as unacked.
struct QueueRunner: Sendable {
    let consumer: Consumer
    let processor: DeliveryProcessor
    let concurrency: Int
    let draining: Latch
    let activity = QueueActivity()

    /// Returns when the consumer's stream ends and every started delivery is processed; the
    /// error is why the stream ended, if it did not end normally.
    ///
    /// The pool runs on the consumer connection's I/O thread (`IOLoopExecutor`): deliveries
    /// reach it, and its settlements reach the wire, without a thread hand-over. The processor
    /// moves whatever may block (handlers other than the built-in non-blocking ones, the dedup
    /// store) to the shared pool.
    func run() async -> (any Error)? {
        await withTaskExecutorPreference(consumer.connection.executor) { await runPool() }
    }

    private func runPool() async -> (any Error)? {
        let metrics = processor.metrics
        return await withTaskGroup(of: Void.self) { group in
            var running = 0
            var ended: (any Error)?
            do {
                for try await delivery in consumer.deliveries {
                    activity.receivedOne()
                    while running >= concurrency, await group.next() != nil {
                        running -= 1
                    }
                    if draining.isSet {
                        consumer.nack(delivery, requeue: true)
                        metrics.count(.requeued)
                        continue
                    }
                    activity.started()
                    metrics.inflight.increment()
                    group.addTask {
                        await processor.process(delivery)
                        metrics.inflight.decrement()
                        activity.finished()
                    }
                    running += 1
                }
            } catch {
                ended = error
            }
            await group.waitForAll()
            return ended
        }
    }
}
