import Glibc
import Logging
import NIOCore
import NIOPosix

/// The `[control] socket` listener that `warren ctl` talks to: one request line per connection
/// (`ControlProtocol`), answered from `QueueControls`, then the connection is closed.
///
/// Structured like `ObservabilityServer`: `bind` happens up front, so that a path in use fails
/// start-up before anything connects, and `run()` serves inside the caller's task until that
/// task is cancelled; then the socket file is removed. Each connection is answered by its own
/// pipeline (`ControlConnectionHandler`).
///
/// A request must arrive within `Limits.requestTimeout` (5 s) of accepting; at most
/// `Limits.maxConnections` (16) are open at once, and one beyond that is answered with an
/// `error:` line and closed. Access is the file's mode, 0660: root, the service user and its group.
public struct ControlServer: Sendable {
    public struct Limits: Sendable {
        public var requestTimeout: Duration
        public var maxConnections: Int

        public init(requestTimeout: Duration = .seconds(5), maxConnections: Int = 16) {
            self.requestTimeout = requestTimeout
            self.maxConnections = maxConnections
        }
    }

    /// Why the socket could not be set up.
    public struct BindError: Error, Sendable, CustomStringConvertible {
        public enum Code: Sendable, Equatable {
            /// Another warren (or another program) listens at the path.
            case inUse
            /// Something that is not a socket is at the path.
            case notASocket
            /// The path's directory does not exist.
            case directoryMissing
            case permissionDenied
            case cannotBind
        }

        public let code: Code
        public let path: String
        public let reason: String

        init(_ code: Code, path: String, reason: String) {
            self.code = code
            self.path = path
            self.reason = reason
        }

        public var description: String { "control socket \(path): \(reason)" }
    }

    /// The socket file's mode: the service user and its group may connect, nobody else.
    public static let socketMode: mode_t = 0o660

    private let listener: NIOAsyncChannel<Void, Never>
    private let identity: ControlSocketFile.Identity
    public let path: String

    /// Binds `path` after checking what is there: a socket someone listens on, or a file that is
    /// not a socket, is refused; a stale socket is replaced. Then the file gets mode 0660.
    public static func bind(
        path: String, controls: QueueControls, logger: Logger, limits: Limits = Limits()
    ) async throws(BindError) -> ControlServer {
        if try ControlSocketFile.inspect(path) == .staleSocket {
            try ControlSocketFile.removeStale(path)
            logger.info("removed a stale control socket", metadata: [LogKeys.socket: "\(path)"])
        }
        let limiter = ConnectionLimiter(limit: limits.maxConnections)
        let refusal = Array((ControlProtocol.errorLine("too many control connections at once (\(limits.maxConnections)); try again") + "\n").utf8)
        let timeout = limits.requestTimeout
        let respond: ControlConnectionHandler.Responder = { request in Self.respond(to: request, controls, logger: logger) }
        let listener: NIOAsyncChannel<Void, Never>
        do {
            listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                // The client may shut down its side after the request; the answer still goes out.
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .bind(unixDomainSocketPath: path) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        // The cap comes first, so that a connection beyond it reaches nothing else.
                        try channel.pipeline.syncOperations.addHandler(ConnectionCapHandler(limiter: limiter, refusal: refusal))
                        try channel.pipeline.syncOperations.addHandler(ControlConnectionHandler(timeout: timeout, respond: respond))
                    }
                }
        } catch {
            let code: BindError.Code =
                switch (error as? IOError)?.errnoCode {
                case EADDRINUSE: .inUse
                case EACCES, EPERM: .permissionDenied
                case ENOENT: .directoryMissing
                default: .cannotBind
                }
            throw BindError(code, path: path, reason: "\(error)")
        }
        let identity: ControlSocketFile.Identity
        do {
            identity = try ControlSocketFile.adopt(path, mode: socketMode)
        } catch {
            try? await listener.channel.close()
            unlink(path)
            throw error
        }
        return ControlServer(listener: listener, identity: identity, path: path)
    }

    /// Serves until the calling task is cancelled, then closes the listener and removes the
    /// socket file. Connections already accepted finish on their own (answered, or closed at
    /// their timeout).
    public func run() async {
        try? await listener.executeThenClose { connections in
            // Each connection is served by its pipeline; nothing to do with it here.
            for try await _ in connections {}
        }
        ControlSocketFile.remove(path, identity: identity)
    }

    /// The answer lines to a request. Pure apart from acting on `controls`, for tests.
    static func respond(
        to request: Result<ControlProtocol.Request, ControlProtocol.RequestProblem>, _ controls: QueueControls, logger: Logger
    ) -> [String] {
        switch request {
        case .failure(let problem):
            return [ControlProtocol.errorLine(problem.description)]
        case .success(.status):
            return ["ok"] + controls.report().map(ControlProtocol.statusLine)
        case .success(.pause(let queue)):
            return setPaused(true, queue, controls, logger: logger)
        case .success(.resume(let queue)):
            return setPaused(false, queue, controls, logger: logger)
        }
    }

    private static func setPaused(_ paused: Bool, _ queue: String, _ controls: QueueControls, logger: Logger) -> [String] {
        let name = ControlProtocol.quoted(queue)
        let changed: Bool
        do {
            changed = paused ? try controls.pause(queue) : try controls.resume(queue)
        } catch {
            return [ControlProtocol.errorLine("no queue named \(name) in the running configuration")]
        }
        guard changed else { return ["ok \(name) \(paused ? "was already paused" : "was not paused")"] }
        logger.info(paused ? "queue paused by operator" : "queue resumed by operator", metadata: [LogKeys.queue: "\(queue)"])
        return ["ok \(paused ? "paused" : "resumed") \(name)"]
    }
}
