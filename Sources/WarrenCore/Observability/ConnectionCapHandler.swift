import NIOCore
import Synchronization

/// Counts the listener's open connections across event loops.
final class ConnectionLimiter: Sendable {
    private let open = Mutex(0)
    let limit: Int

    init(limit: Int) {
        self.limit = max(1, limit)
    }

    /// Takes a place if one is free.
    func admit() -> Bool {
        open.withLock { open in
            guard open < limit else { return false }
            open += 1
            return true
        }
    }

    func release() {
        open.withLock { $0 = max(0, $0 - 1) }
    }
}

/// First in a connection's pipeline: closes it when it becomes active beyond the limit, and
/// frees its place when it closes.
final class ConnectionCapHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let limiter: ConnectionLimiter
    /// Written before closing a connection beyond the limit (the control socket's `error:`
    /// line); nil: closed without a word (HTTP).
    private let refusal: [UInt8]?
    private var admitted = false

    init(limiter: ConnectionLimiter, refusal: [UInt8]? = nil) {
        self.limiter = limiter
        self.refusal = refusal
    }

    func channelActive(context: ChannelHandlerContext) {
        guard limiter.admit() else {
            // Nothing is read: the client sees the connection closed at once, after the
            // refusal when there is one (flushed before the close, on this same loop tick).
            if let refusal { context.writeAndFlush(NIOAny(context.channel.allocator.buffer(bytes: refusal)), promise: nil) }
            context.close(promise: nil)
            return
        }
        admitted = true
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard admitted else { return }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if admitted {
            admitted = false
            limiter.release()
        }
        context.fireChannelInactive()
    }
}
