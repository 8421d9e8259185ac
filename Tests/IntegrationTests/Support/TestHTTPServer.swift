import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A real HTTP/1.1 server on 127.0.0.1 (an ephemeral port) for the webhook tests. It records
/// every request (method, URI, headers, body, arrival time, which connection carried it),
/// counts the TCP connections it accepted, and answers as the test's script says.
final class TestHTTPServer: Sendable {
    struct Request: Sendable {
        var method: String
        var uri: String
        var headers: HTTPHeaders
        var body: [UInt8]
        /// 1 for the first accepted connection.
        var connection: Int
        var at: ContinuousClock.Instant

        func header(_ name: String) -> String? { headers.first(name: name) }
    }

    struct Response: Sendable {
        var status = 200
        var headers: [(String, String)] = []
        var body: [UInt8] = []
        /// Answer only after this long; the connection stays open meanwhile.
        var delay: Duration?
    }

    /// Decides the answer to a request; `index` counts requests from 0 across connections.
    typealias Script = @Sendable (_ request: Request, _ index: Int) -> Response

    fileprivate struct State {
        var requests: [Request] = []
        var acceptedConnections = 0
        var openChannels: [ObjectIdentifier: any Channel] = [:]
    }

    /// Shared with the channel handlers, which exist before the server object does.
    final class Log: Sendable {
        fileprivate let state = Mutex(State())

        fileprivate func accepted(_ channel: any Channel) -> Int {
            state.withLock { state in
                state.acceptedConnections += 1
                state.openChannels[ObjectIdentifier(channel)] = channel
                return state.acceptedConnections
            }
        }

        fileprivate func closed(_ channel: any Channel) {
            _ = state.withLock { $0.openChannels.removeValue(forKey: ObjectIdentifier(channel)) }
        }

        fileprivate func record(_ request: Request) -> Int {
            state.withLock { state in
                state.requests.append(request)
                return state.requests.count - 1
            }
        }
    }

    let port: Int
    private let log: Log
    private let serverChannel: any Channel

    var url: String { "http://127.0.0.1:\(port)" }
    var requests: [Request] { log.state.withLock { $0.requests } }
    var acceptedConnections: Int { log.state.withLock { $0.acceptedConnections } }

    private init(port: Int, log: Log, serverChannel: any Channel) {
        self.port = port
        self.log = log
        self.serverChannel = serverChannel
    }

    static func start(_ script: @escaping Script = { _, _ in Response() }) async throws -> TestHTTPServer {
        let log = Log()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                let connection = log.accepted(channel)
                channel.closeFuture.whenComplete { _ in log.closed(channel) }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(RequestHandler(connection: connection, log: log, script: script))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        guard let port = channel.localAddress?.port else { throw TestTimeout(what: "binding the test HTTP server") }
        return TestHTTPServer(port: port, log: log, serverChannel: channel)
    }

    /// Stops listening and closes every open connection.
    func stop() async {
        try? await serverChannel.close()
        let open = log.state.withLock { Array($0.openChannels.values) }
        for channel in open { try? await channel.close() }
    }
}

/// One connection's request parsing and answering; runs on that connection's event loop only.
private final class RequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let connection: Int
    private let log: TestHTTPServer.Log
    private let script: TestHTTPServer.Script
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var active = true

    init(connection: Int, log: TestHTTPServer.Log, script: @escaping TestHTTPServer.Script) {
        self.connection = connection
        self.log = log
        self.script = script
    }

    func channelInactive(context: ChannelHandlerContext) {
        active = false
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = []
        case .body(let buffer):
            body.append(contentsOf: buffer.readableBytesView)
        case .end:
            guard let head else { return }
            let request = TestHTTPServer.Request(
                method: head.method.rawValue, uri: head.uri, headers: head.headers, body: body, connection: connection, at: .now)
            let response = script(request, log.record(request))
            let keepAlive = head.isKeepAlive
            if let delay = response.delay {
                context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(delay)) {
                    self.respond(response, keepAlive: keepAlive, context: context)
                }
            } else {
                respond(response, keepAlive: keepAlive, context: context)
            }
        }
    }

    private func respond(_ response: TestHTTPServer.Response, keepAlive: Bool, context: ChannelHandlerContext) {
        // A delayed answer whose client gave up (closed the connection) goes nowhere.
        guard active else { return }
        var headers = HTTPHeaders(response.headers)
        headers.add(name: "Content-Length", value: String(response.body.count))
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: response.body)))), promise: nil)
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}
