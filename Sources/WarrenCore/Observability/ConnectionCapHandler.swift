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
    private var admitted = false

    init(limiter: ConnectionLimiter) {
        self.limiter = limiter
    }

    func channelActive(context: ChannelHandlerContext) {
        guard limiter.admit() else {
            // Nothing is read or answered: the client sees the connection closed at once.
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
