import NIOCore
import NIOHTTP1
import NIOPosix

/// The `[metrics] listen` HTTP endpoint: `/metrics` (Prometheus text format), `/healthz`
/// (`Liveness`: 200 while every I/O loop makes progress, else 503 with the reason) and
/// `/readyz` (200 only while every configured queue has a live consumer, else 503; the body is
/// the status summary either way).
///
/// HTTP parsing is SwiftNIO's (`configureHTTPServerPipeline`), not hand-written. The server is
/// structured: `bind` happens up front, so that a bad address fails start-up before anything
/// connects, and `run()` serves inside the caller's task until that task is cancelled, each
/// connection in a child task of its own.
///
/// A connection must deliver each complete request within `ObservabilityLimits.requestTimeout`
/// (10 s) of being accepted or of its previous response, and at most
/// `ObservabilityLimits.maxConnections` (64) are open at once; see `docs/metrics-endpoint.md`.
public struct ObservabilityServer: Sendable {
    /// Where each endpoint's answer comes from.
    public struct Sources: Sendable {
        public var metrics: @Sendable () -> [UInt8]
        public var liveness: @Sendable () -> Liveness.Verdict
        public var status: EngineStatus

        public init(status: EngineStatus, liveness: @escaping @Sendable () -> Liveness.Verdict = Liveness.current, metrics: @escaping @Sendable () -> [UInt8]) {
            self.status = status
            self.liveness = liveness
            self.metrics = metrics
        }
    }

    public struct Response: Sendable, Equatable {
        public var status: HTTPResponseStatus
        public var contentType = "text/plain; charset=utf-8"
        public var body: [UInt8]

        init(_ status: HTTPResponseStatus, _ text: String) {
            self.status = status
            self.body = Array((text + "\n").utf8)
        }

        init(_ status: HTTPResponseStatus, contentType: String, body: [UInt8]) {
            self.status = status
            self.contentType = contentType
            self.body = body
        }
    }

    private typealias Connection = NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>

    private let listener: NIOAsyncChannel<Connection, Never>
    private let sources: Sources

    /// The port actually bound (differs from the requested one when that was 0).
    public var port: Int? { listener.channel.localAddress?.port }

    /// Binds `host:port`; throws when the address cannot be used (in use, not local, no permission).
    public static func bind(
        host: String, port: Int, sources: Sources, limits: ObservabilityLimits = ObservabilityLimits()
    ) async throws -> ObservabilityServer {
        let limiter = ConnectionLimiter(limit: limits.maxConnections)
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    // The cap comes first, so that a connection beyond it reaches nothing else.
                    try channel.pipeline.syncOperations.addHandler(ConnectionCapHandler(limiter: limiter))
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(RequestDeadlineHandler(timeout: limits.requestTimeout))
                    return try Connection(wrappingChannelSynchronously: channel)
                }
            }
        return ObservabilityServer(listener: listener, sources: sources)
    }

    /// Serves until the calling task is cancelled, then closes the listener and every connection.
    public func run() async {
        let sources = sources
        await withDiscardingTaskGroup { group in
            try? await listener.executeThenClose { connections in
                for try await connection in connections {
                    group.addTask { await Self.serve(connection, sources) }
                }
            }
        }
    }

    private static func serve(_ connection: Connection, _ sources: Sources) async {
        try? await connection.executeThenClose { requests, responses in
            var head: HTTPRequestHead?
            for try await part in requests {
                switch part {
                case .head(let requestHead):
                    head = requestHead
                case .body:
                    continue
                case .end:
                    guard let request = head else { continue }
                    head = nil
                    let response = respond(method: request.method, uri: request.uri, sources)
                    var headers = HTTPHeaders()
                    headers.add(name: "Content-Type", value: response.contentType)
                    headers.add(name: "Content-Length", value: "\(response.body.count)")
                    headers.add(name: "Cache-Control", value: "no-store")
                    if !request.isKeepAlive { headers.add(name: "Connection", value: "close") }
                    try await responses.write(.head(HTTPResponseHead(version: request.version, status: response.status, headers: headers)))
                    if request.method != .HEAD {
                        try await responses.write(.body(.byteBuffer(ByteBuffer(bytes: response.body))))
                    }
                    try await responses.write(.end(nil))
                    if !request.isKeepAlive { return }
                }
            }
        }
    }

    /// The answer to one request. Pure apart from reading `sources`, for tests.
    public static func respond(method: HTTPMethod, uri: String, _ sources: Sources) -> Response {
        let path = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? uri
        guard ["/metrics", "/healthz", "/readyz"].contains(path) else {
            return Response(.notFound, "not found: try /metrics, /healthz or /readyz")
        }
        guard method == .GET || method == .HEAD else {
            return Response(.methodNotAllowed, "method not allowed: use GET")
        }
        switch path {
        case "/metrics":
            return Response(.ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: sources.metrics())
        case "/healthz":
            switch sources.liveness() {
            case .alive: return Response(.ok, "ok")
            case .stalled(let reason): return Response(.serviceUnavailable, reason)
            }
        default:
            let snapshot = sources.status.snapshot
            return Response(snapshot.isReady ? .ok : .serviceUnavailable, snapshot.summary)
        }
    }
}
