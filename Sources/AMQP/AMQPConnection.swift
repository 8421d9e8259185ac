import Foundation
import Logging
import Synchronization

/// One AMQP connection, driven by a dedicated I/O thread that alone touches librabbitmq.
///
/// Every method may be called from any thread or task. RPC-style methods (declare, consume,
/// close) suspend until the I/O thread has run them; `settle` only queues the settlement and
/// returns. When the connection dies, every pending call fails with the `AMQPError` that killed
/// it, consumer streams end with it, and `events` reports `.closed(error)` and finishes. A dead
/// connection is not revived: the caller connects again (epochs keep old deliveries from ever
/// being settled on a new connection).
public final class AMQPConnection: Sendable {
    let commands: CommandQueue
    /// What the broker and the network do to this connection, in order. Bounded: if nobody reads
    /// it, the oldest events are dropped.
    public let events: AsyncStream<ConnectionEvent>
    public let negotiated: NegotiatedParameters
    /// The I/O thread's progress (last turn, last bytes from the broker), for health checks.
    public let progress: IOLoopProgress
    /// Runs tasks on the I/O thread (`IOLoopExecutor`): for consumers whose work is short.
    public let executor: IOLoopExecutor

    private init(
        commands: CommandQueue, executor: IOLoopExecutor, events: AsyncStream<ConnectionEvent>, negotiated: NegotiatedParameters,
        progress: IOLoopProgress
    ) {
        self.commands = commands
        self.executor = executor
        self.events = events
        self.negotiated = negotiated
        self.progress = progress
    }

    /// Connects to the first endpoint of `configuration` that accepts the login, on a new I/O
    /// thread (named `warren-io` in `top -H` and `ps -L`).
    public static func connect(_ configuration: ConnectionConfiguration, logger: Logger) async throws(AMQPError) -> AMQPConnection {
        let commands = try CommandQueue()
        let executor = IOLoopExecutor(queue: commands)
        let (events, eventsContinuation) = AsyncStream.makeStream(of: ConnectionEvent.self, bufferingPolicy: .bufferingNewest(1024))
        let result: Result<(NegotiatedParameters, IOLoopProgress), AMQPError> = await withCheckedContinuation { continuation in
            let thread = Thread {
                nameCurrentThread("warren-io")
                let loop: IOLoop
                do throws(AMQPError) {
                    loop = try IOLoop.connect(configuration, queue: commands, events: eventsContinuation, logger: logger)
                } catch {
                    _ = commands.close(error)
                    eventsContinuation.finish()
                    continuation.resume(returning: .failure(error))
                    return
                }
                continuation.resume(returning: .success((loop.negotiated, loop.progress)))
                loop.run(executor: executor)
            }
            thread.start()
        }
        let (negotiated, progress) = try result.get()
        logger.debug("connected", metadata: [
            "endpoint": "\(negotiated.endpoint)", "heartbeat": "\(negotiated.heartbeat)", "frame_max": "\(negotiated.frameMax)",
        ])
        return AMQPConnection(commands: commands, executor: executor, events: events, negotiated: negotiated, progress: progress)
    }

    /// False once the connection has died or been closed.
    public var isOpen: Bool { commands.closedError == nil }

    /// Runs `body` on the I/O thread and returns its result.
    func perform<T: Sendable>(_ body: @escaping @Sendable (IOLoop) throws(AMQPError) -> T) async throws(AMQPError) -> T {
        let result: Result<T, AMQPError> = await withCheckedContinuation { continuation in
            let refused = commands.submit(.perform { loop in
                switch loop {
                case .success(let loop):
                    do throws(AMQPError) {
                        continuation.resume(returning: .success(try body(loop)))
                    } catch {
                        continuation.resume(returning: .failure(error))
                    }
                case .failure(let error):
                    continuation.resume(returning: .failure(error))
                }
            })
            if let refused { continuation.resume(returning: .failure(refused)) }
        }
        return try result.get()
    }

    public func declareExchange(_ declaration: ExchangeDeclaration) async throws(AMQPError) {
        try await perform { loop throws(AMQPError) in try loop.declareExchange(declaration) }
    }

    public func deleteExchange(_ name: String, ifUnused: Bool = false) async throws(AMQPError) {
        try await perform { loop throws(AMQPError) in try loop.deleteExchange(name, ifUnused: ifUnused) }
    }

    @discardableResult
    public func declareQueue(_ declaration: QueueDeclaration) async throws(AMQPError) -> QueueDeclareResult {
        try await perform { loop throws(AMQPError) in try loop.declareQueue(declaration) }
    }

    public func bindQueue(_ queue: String, exchange: String, routingKey: String, arguments: FieldTable = [:]) async throws(AMQPError) {
        try await perform { loop throws(AMQPError) in
            try loop.bindQueue(queue, exchange: exchange, routingKey: routingKey, arguments: arguments, unbind: false)
        }
    }

    public func unbindQueue(_ queue: String, exchange: String, routingKey: String, arguments: FieldTable = [:]) async throws(AMQPError) {
        try await perform { loop throws(AMQPError) in
            try loop.bindQueue(queue, exchange: exchange, routingKey: routingKey, arguments: arguments, unbind: true)
        }
    }

    public func bindExchange(destination: String, source: String, routingKey: String, arguments: FieldTable = [:]) async throws(AMQPError) {
        try await perform { loop throws(AMQPError) in
            try loop.bindExchange(destination: destination, source: source, routingKey: routingKey, arguments: arguments)
        }
    }

    /// Returns the number of messages deleted with the queue.
    @discardableResult
    public func deleteQueue(_ name: String, ifUnused: Bool = false, ifEmpty: Bool = false) async throws(AMQPError) -> UInt32 {
        try await perform { loop throws(AMQPError) in try loop.deleteQueue(name, ifUnused: ifUnused, ifEmpty: ifEmpty) }
    }

    /// Returns the number of messages purged.
    @discardableResult
    public func purgeQueue(_ name: String) async throws(AMQPError) -> UInt32 {
        try await perform { loop throws(AMQPError) in try loop.purgeQueue(name) }
    }

    /// Starts a consumer on a channel of its own. Its deliveries arrive on `Consumer.deliveries`,
    /// at most `prefetch` unsettled at a time (so the stream's buffer is bounded by prefetch).
    public func consume(_ options: ConsumeOptions) async throws(AMQPError) -> Consumer {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: [Delivery].self, throwing: (any Error).self)
        do {
            return try await consume(options, sink: StreamSink(continuation), deliveries: Deliveries(batches: stream))
        } catch {
            continuation.finish(throwing: error)
            throw error
        }
    }

    /// Starts a consumer whose deliveries go to `sink`, on the I/O thread, as they arrive (one
    /// batch per turn of the loop); the returned consumer's `deliveries` is empty. At most
    /// `prefetch` are unsettled at a time.
    public func consume(_ options: ConsumeOptions, into sink: some DeliverySink) async throws(AMQPError) -> Consumer {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: [Delivery].self, throwing: (any Error).self)
        continuation.finish()
        return try await consume(options, sink: sink, deliveries: Deliveries(batches: stream))
    }

    private func consume(_ options: ConsumeOptions, sink: any DeliverySink, deliveries: Deliveries) async throws(AMQPError) -> Consumer {
        let (channel, epoch, tag) = try await perform { loop throws(AMQPError) in try loop.consume(options, sink: sink) }
        return Consumer(connection: self, queue: options.queue, consumerTag: tag, channel: channel, epoch: epoch, deliveries: deliveries)
    }

    /// Opens a confirm-mode channel for publishing.
    public func openPublisher(_ options: PublisherOptions = PublisherOptions()) async throws(AMQPError) -> Publisher {
        let channel = try await perform { loop throws(AMQPError) in try loop.openPublisher(options) }
        return Publisher(connection: self, channel: channel, confirmTimeout: options.confirmTimeout)
    }

    /// Opens a channel for reading queues message by message with `basic.get` (see
    /// `GetChannel`). Bodies announced larger than `maxBodySize` bytes (nil: no limit) are
    /// spooled to a temporary file as they arrive, never buffered in memory.
    public func openGetChannel(maxBodySize: Int? = nil) async throws(AMQPError) -> GetChannel {
        let (channel, epoch) = try await perform { loop throws(AMQPError) in try loop.openGetChannel(maxBodySize: maxBodySize) }
        return GetChannel(connection: self, channel: channel, epoch: epoch)
    }

    /// Queues a settlement for the I/O thread; returns at once. Settlements of a channel
    /// incarnation that has closed (or of a dead connection) are dropped: the broker has already
    /// requeued those deliveries.
    public func settle(_ tag: DeliveryTag, _ disposition: Disposition) {
        commands.submit(CommandQueue.Settle(tag: tag, disposition: disposition))
    }

    public func ack(_ delivery: Delivery) { settle(delivery.tag, .ack) }
    public func nack(_ delivery: Delivery, requeue: Bool) { settle(delivery.tag, .nack(requeue: requeue)) }
    public func reject(_ delivery: Delivery, requeue: Bool) { settle(delivery.tag, .reject(requeue: requeue)) }

    /// Sends the settlements already queued, closes the connection (`connection.close`), and
    /// waits for the I/O thread to finish. Pending publishes fail with `.closedByClient`.
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            if commands.submit(.close(continuation)) != nil {
                continuation.resume()
            }
        }
    }
}
