internal import CRabbitMQShims
import Synchronization

/// The only way into an I/O loop from other threads: a mutex-guarded batch of commands plus an
/// eventfd that wakes the loop out of poll(). Producers signal the eventfd only when the loop has
/// not been signalled since it last took the batch, so a burst of settlements costs one write.
final class CommandQueue: Sendable {
    /// Called once, on the I/O thread, with the publish's outcome.
    typealias Waiter = @Sendable (Result<PublishOutcome, AMQPError>) -> Void

    enum Command: Sendable {
        /// Runs on the I/O thread with the loop, or with the error that ended it.
        case perform(@Sendable (Result<IOLoop, AMQPError>) -> Void)
        /// Close the connection, then resume.
        case close(CheckedContinuation<Void, Never>)
    }

    struct Publish: Sendable {
        var channel: UInt16
        var message: OutgoingMessage
        var waiter: Waiter
        var deadline: UInt64
    }

    struct Settle: Sendable {
        var tag: DeliveryTag
        var disposition: Disposition
    }

    struct Batch: Sendable {
        var commands: [Command] = []
        var publishes: [Publish] = []
        var settles: [Settle] = []
    }

    private struct State: Sendable {
        var batch = Batch()
        var signalled = false
        var closed: AMQPError?
    }

    private let state = Mutex(State())
    let wakeFD: Int32

    init() throws(AMQPError) {
        let fd = warren_eventfd_create()
        guard fd >= 0 else {
            throw AMQPError(.library, "cannot create an eventfd for the I/O loop (errno \(-fd))")
        }
        wakeFD = fd
    }

    deinit {
        _ = Glibc_close(wakeFD)
    }

    /// Returns the error that closed the queue, if it is closed (the command was not queued).
    func submit(_ command: Command) -> AMQPError? {
        enqueue { $0.commands.append(command) }
    }

    func submit(_ publish: Publish) -> AMQPError? {
        enqueue { $0.publishes.append(publish) }
    }

    /// Returns false if the loop is gone (the settlement is moot: the broker requeues).
    @discardableResult
    func submit(_ settle: Settle) -> Bool {
        enqueue { $0.settles.append(settle) } == nil
    }

    private func enqueue(_ add: (inout Batch) -> Void) -> AMQPError? {
        let (closed, signal): (AMQPError?, Bool) = state.withLock { state in
            if let closed = state.closed { return (closed, false) }
            add(&state.batch)
            let signal = !state.signalled
            state.signalled = true
            return (nil, signal)
        }
        if signal { warren_eventfd_signal(wakeFD) }
        return closed
    }

    /// Everything queued since the last call.
    func take() -> Batch {
        state.withLock { state in
            let batch = state.batch
            state.batch = Batch()
            state.signalled = false
            return batch
        }
    }

    /// Refuse further commands with `error`; returns what was still queued.
    func close(_ error: AMQPError) -> Batch {
        state.withLock { state in
            state.closed = state.closed ?? error
            let batch = state.batch
            state.batch = Batch()
            return batch
        }
    }

    var closedError: AMQPError? { state.withLock { $0.closed } }
}

import Glibc

private func Glibc_close(_ fd: Int32) -> Int32 { Glibc.close(fd) }
