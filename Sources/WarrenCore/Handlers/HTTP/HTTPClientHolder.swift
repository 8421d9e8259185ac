import AsyncHTTPClient
import Logging
import NIOCore
import Synchronization

/// The one `HTTPClient` of an `http` handler, created on first use and shut down once.
///
/// Why lazily: an `HTTPClient` must be shut down before it is released (AsyncHTTPClient traps in
/// debug builds otherwise), and `HandlerRegistry` may throw while building a later handler, in
/// which case nobody calls `shutdown()` on the handlers already built. A client that does not
/// exist yet needs no shutdown; the first message creates it.
final class HTTPClientHolder: Sendable {
    private enum State {
        case idle
        case running(HTTPClient)
        case shutDown
    }

    private let configuration: HTTPClient.Configuration
    private let state = Mutex(State.idle)

    /// `poolSize`: connections kept per host. At least the concurrency of the queues that use the
    /// handler, so that no request waits for a connection while another queue slot is free.
    init(poolSize: Int, connectTimeout: Duration) {
        var configuration = HTTPClient.Configuration()
        // A webhook POST must not silently move to another URL (or lose its method and body on a
        // 301/302, as browsers do): a 3xx is answered as a failure, see HTTPResponseMapping.
        configuration.redirectConfiguration = .disallow
        configuration.timeout = HTTPClient.Configuration.Timeout(connect: TimeAmount(connectTimeout))
        configuration.connectionPool = HTTPClient.Configuration.ConnectionPool(
            idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: max(1, poolSize))
        // A refused or failed connection fails the requests waiting for it at once, and the
        // queue's retry ladder backs off; retrying inside the client would hold each message
        // (and its concurrency slot) for the whole connect timeout and hide the cause.
        configuration.connectionPool.retryConnectionEstablishment = false
        self.configuration = configuration
    }

    /// The client, created on the first call; nil after `shutdown()`.
    func client() -> HTTPClient? {
        state.withLock { state in
            switch state {
            case .idle:
                let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
                state = .running(client)
                return client
            case .running(let client):
                return client
            case .shutDown:
                return nil
            }
        }
    }

    /// Closes the pooled connections. The engine calls it after the last message finished.
    func shutdown(logger: Logger) async {
        let client = state.withLock { state -> HTTPClient? in
            defer { state = .shutDown }
            if case .running(let client) = state { return client }
            return nil
        }
        guard let client else { return }
        do {
            try await client.shutdown()
        } catch {
            logger.warning("http client shutdown failed", metadata: [LogKeys.error: "\(error)"])
        }
    }
}
