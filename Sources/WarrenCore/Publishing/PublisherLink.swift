import AMQP
import Logging
import Synchronization

/// The publisher connection of a session, replaceable: when it is lost, the session reconnects
/// it on its own, without touching the consumers (whose in-flight deliveries would otherwise be
/// redelivered and run again). Publishes meanwhile wait for the new connection, at most the
/// confirm timeout; one that still finds none fails, so its input is not acked.
final class PublisherLink: Sendable {
    private struct State {
        var connection: AMQPConnection?
        var publisher: Publisher?
        /// Set while a publisher is available; replaced by an unset one when it is lost.
        var available = Latch()
        var closed = false
    }

    private let state = Mutex(State())

    init(connection: AMQPConnection, publisher: Publisher) {
        attach(connection, publisher)
    }

    /// Opens a publisher connection and a publisher on it.
    static func connect(_ configuration: Configuration, logger: Logger) async throws -> (AMQPConnection, Publisher) {
        let connection = try await AMQPConnection.connect(configuration.connectionConfiguration(role: "publisher"), logger: logger)
        do {
            let publisher = try await connection.openPublisher(PublisherOptions(
                maxInFlight: configuration.publisher.maxInFlight, confirmTimeout: configuration.publisher.confirmTimeout))
            return (connection, publisher)
        } catch {
            await connection.close()
            throw error
        }
    }

    var connection: AMQPConnection? { state.withLock { $0.connection } }

    /// Whether a publisher connection is up right now.
    var isAttached: Bool { state.withLock { $0.publisher != nil } }

    func attach(_ connection: AMQPConnection, _ publisher: Publisher) {
        let available = state.withLock { state -> Latch in
            state.connection = connection
            state.publisher = publisher
            return state.available
        }
        available.set()
    }

    /// The connection died: publishes wait for `attach` from now on.
    func detach() {
        state.withLock { state in
            state.connection = nil
            state.publisher = nil
            if state.available.isSet { state.available = Latch() }
        }
    }

    /// The current publisher, waiting up to `timeout` for one; nil when none came.
    func publisher(waitingUpTo timeout: Duration) async -> Publisher? {
        let (publisher, available, closed) = state.withLock { ($0.publisher, $0.available, $0.closed) }
        if let publisher { return publisher }
        if closed { return nil }
        await sleep(for: timeout, unless: available)
        return state.withLock { $0.publisher }
    }

    /// Closes the current connection; later publishes fail at once.
    func close() async {
        let (connection, available) = state.withLock { state -> (AMQPConnection?, Latch) in
            state.closed = true
            defer {
                state.connection = nil
                state.publisher = nil
            }
            return (state.connection, state.available)
        }
        available.set()
        await connection?.close()
    }
}
