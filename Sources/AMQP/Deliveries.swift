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
