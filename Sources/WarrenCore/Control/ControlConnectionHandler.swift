import NIOCore

/// One control connection, on its event loop: collects the request line, answers it, closes.
///
/// A channel handler rather than a `NIOAsyncChannel` per connection: a connection accepted
/// while the listener is being cancelled would leave an async channel nobody consumes, which
/// NIO treats as a programming error and traps on (swift-nio issue 2813). Here a connection
/// owns nothing that must be handed over: it answers, or its timeout closes it.
final class ControlConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Answers a request (or the reason there is none) with the lines to send back.
    typealias Responder = @Sendable (Result<ControlProtocol.Request, ControlProtocol.RequestProblem>) -> [String]

    private let timeout: Duration
    private let respond: Responder
    private var reader = ControlProtocol.LineReader()
    private var deadline: Scheduled<Void>?
    private var answered = false

    init(timeout: Duration, respond: @escaping Responder) {
        self.timeout = timeout
        self.respond = respond
    }

    func channelActive(context: ChannelHandlerContext) {
        let timeout = timeout
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(timeout)) { [self] in
            answer(.failure(.timeout(timeout)), context: context)
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        disarm()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        let buffer = unwrapInboundIn(data)
        switch reader.append(buffer.readableBytesView) {
        case .needMore: break
        case .line(let line): answer(ControlProtocol.parse(line), context: context)
        case .tooLong: answer(.failure(.tooLong), context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The client shut down its side without a complete line.
        if case .some(.inputClosed) = event as? ChannelEvent, !answered {
            answer(.failure(reader.isEmpty ? .empty : .unterminated), context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A reset or a broken pipe: nobody is left to answer.
        context.close(promise: nil)
    }

    /// Sends the answer, then closes once it is written (not before: a long status answer may
    /// take more than one write), or when the timeout passes again (a client that does not read
    /// its answer keeps no place for longer).
    private func answer(_ request: Result<ControlProtocol.Request, ControlProtocol.RequestProblem>, context: ChannelHandlerContext) {
        guard !answered else { return }
        answered = true
        disarm()
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(timeout)) {
            context.close(promise: nil)
        }
        let text = respond(request).map { $0 + "\n" }.joined()
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: text)), promise: written)
        let channel = context.channel
        written.futureResult.whenComplete { _ in channel.close(promise: nil) }
    }

    private func disarm() {
        deadline?.cancel()
        deadline = nil
    }
}
