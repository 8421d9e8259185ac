/// A consumer's deliveries, one at a time. The I/O thread hands them over in batches, one per
/// turn of its loop (everything that arrived in one read), so a busy consumer costs the reading
/// task one wake-up per batch rather than one per message; iterating the batch costs nothing.
public struct Deliveries: AsyncSequence, Sendable {
    public typealias Element = Delivery

    /// The same deliveries as they arrive, one batch per turn of the I/O loop.
    public let batches: AsyncThrowingStream<[Delivery], any Error>

    public struct AsyncIterator: AsyncIteratorProtocol {
        var batches: AsyncThrowingStream<[Delivery], any Error>.AsyncIterator
        var current: [Delivery] = []
        var index = 0

        /// Ends normally after `cancel()` or `close()`, with an error when the broker or the
        /// connection ended the consumer.
        public mutating func next() async throws -> Delivery? {
            while index == current.count {
                guard let batch = try await batches.next() else { return nil }
                current = batch
                index = 0
            }
            defer { index += 1 }
            return current[index]
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(batches: batches.makeAsyncIterator())
    }
}

/// Where a consumer's deliveries go when it is started with `AMQPConnection.consume(_:into:)`:
/// called on the connection's I/O thread, with each turn's deliveries as one batch, so a reader
/// gets them without a stream or a task in between. It must not block. It may settle
/// deliveries from within `receive` (`AMQPConnection.settle`): on the I/O thread a settlement
/// is recorded at once, and goes out in the same turn.
public protocol DeliverySink: AnyObject, Sendable {
    /// A turn's deliveries, handed over (a sink may move them out rather than copy each).
    /// Returns those it refused, all of them when nobody takes deliveries any more: the loop
    /// gives them back to the broker (`basic.nack` with requeue) at once.
    func receive(_ batch: consuming [Delivery]) -> [Delivery]
    /// No more deliveries: nil after `cancel()` or `close()`, else why the subscription ended
    /// (the broker cancelled it or closed its channel, or the connection died).
    func finish(_ error: AMQPError?)
}

/// The sink behind `Consumer.deliveries`: each batch into the stream.
final class StreamSink: DeliverySink {
    let continuation: AsyncThrowingStream<[Delivery], any Error>.Continuation

    init(_ continuation: AsyncThrowingStream<[Delivery], any Error>.Continuation) {
        self.continuation = continuation
    }

    func receive(_ batch: consuming [Delivery]) -> [Delivery] {
        let batch = batch
        if case .terminated = continuation.yield(batch) { return batch }
        return []
    }

    func finish(_ error: AMQPError?) {
        if let error { continuation.finish(throwing: error) } else { continuation.finish() }
    }
}
