import AMQP
import Logging
import Synchronization

/// One consumed queue inside a session: the configuration it was started with (a reload that
/// changes the queue drains this slot and starts a new one) and the flags of its life.
final class QueueSlot: Sendable {
    let queue: QueueConfiguration
    /// The configuration the slot was started under: its handlers' entries and the topology
    /// that recovery re-declares come from here.
    let configuration: Configuration
    let handlers: HandlerRegistry
    /// Set to stop taking new deliveries: the session ends, or a reload removes or changes the queue.
    let draining = Latch()
    /// Set when every delivery the slot started is processed.
    let done = Latch()
    /// For a stream queue: where its consumers read, across re-subscriptions.
    let streamPosition: StreamPosition?
    /// Whether it may take deliveries now (pause, circuit breaker), and its counts.
    let gate: QueueGate

    init(queue: QueueConfiguration, configuration: Configuration, handlers: HandlerRegistry, controls: QueueControls, logger: Logger) {
        self.queue = queue
        gate = controls.gate(for: queue)
        self.configuration = configuration
        self.handlers = handlers
        streamPosition = queue.type == .stream
            ? StreamPosition(
                queue: queue, state: configuration.state, vhost: configuration.broker.endpoints.first?.vhost ?? "/", logger: logger)
            : nil
    }

    var name: String { queue.name }
}

/// The current consumer of each queue: a re-subscribed queue replaces its entry, so a stop or a
/// reload cancels the consumers that are live now.
final class LiveConsumers: Sendable {
    private let consumers = Mutex<[String: Consumer]>([:])

    func set(_ consumer: Consumer, for queue: String) { consumers.withLock { $0[queue] = consumer } }

    func consumer(of queue: String) -> Consumer? { consumers.withLock { $0[queue] } }

    func remove(_ queue: String) { _ = consumers.withLock { $0.removeValue(forKey: queue) } }

    var all: [Consumer] { consumers.withLock { Array($0.values) } }
}
