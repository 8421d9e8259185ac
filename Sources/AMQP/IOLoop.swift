internal import CRabbitMQ
internal import CRabbitMQShims
import Logging
import Synchronization
import Glibc

/// Channel epochs are unique in the process, so a settlement can never match a channel
/// incarnation other than the one its delivery came from, across channels and reconnects alike.
private let epochSource = Atomic<UInt64>(0)

func nextChannelEpoch() -> UInt64 {
    epochSource.add(1, ordering: .relaxed).newValue
}

/// The owner of one `amqp_connection_state_t`, running on its own thread: librabbitmq's
/// connection state is not thread-safe (docs/architecture.md).
///
/// Every librabbitmq call for the connection happens here. Each turn of `run()`:
/// 1. drains input with zero-timeout reads (queued frames first), dispatching every frame and
///    copying what it carries into Swift values, then releases the library's buffers;
/// 2. takes the command batch (RPC operations, settlements, publishes) and executes it;
/// 3. expires publishes past their deadline, flushes settlements, sends publishes the confirm
///    window allows, and resumes the callers whose publishes resolved;
/// 4. blocks in epoll_wait() (or poll()) on the socket and the wake-up eventfd, but only when
///    the library holds no buffered input (the kernel cannot see it), and never longer than half
///    the heartbeat, one second, the next confirm deadline or the next settlement hold-back:
///    heartbeats are sent and checked only inside library calls, and a loop that turns every
///    second even when idle lets a health check tell "idle" from "wedged" (`IOLoopProgress`).
final class IOLoop {
    typealias Tracker = ConfirmTracker<OutgoingMessage, CommandQueue.Waiter>

    final class ConsumerState {
        let queue: String
        let consumerTag: String
        let sink: any DeliverySink
        var settler: AckSettler
        /// Deliveries assembled during this turn of the loop, handed over together at its end:
        /// one hand-over to the sink per turn instead of one per message (`add`, `flush`).
        private(set) var pending: [Delivery] = []
        /// The size of the last batch handed over: the next one's first delivery reserves that
        /// much, rather than the batch growing from empty (several reallocations per turn), and
        /// an idle consumer holds no buffer.
        private var lastBatchCount = 0
        /// The last exchange and routing key seen: a consumer's deliveries mostly repeat them,
        /// and each delivery then shares one string instead of allocating its own.
        var exchange = RepeatedString()
        var routingKey = RepeatedString()

        init(queue: String, consumerTag: String, sink: any DeliverySink, settler: AckSettler) {
            self.queue = queue
            self.consumerTag = consumerTag
            self.sink = sink
            self.settler = settler
        }

        /// Adds a delivery to this turn's batch; true when it is the turn's first.
        func add(_ delivery: consuming Delivery) -> Bool {
            let first = pending.isEmpty
            if first { pending.reserveCapacity(lastBatchCount) }
            pending.append(consume delivery)
            return first
        }

        /// Hands the pending deliveries to the reader; returns them when nobody reads any more.
        func flush() -> [Delivery] {
            guard !pending.isEmpty else { return [] }
            lastBatchCount = pending.count
            let batch = pending
            pending = []
            return sink.receive(consume batch)
        }

        /// Ends the stream after what it already received.
        func finish(throwing error: AMQPError? = nil) {
            _ = flush()
            sink.finish(error)
        }
    }

    final class PublisherState {
        var tracker: Tracker
        init(maxInFlight: Int) { tracker = Tracker(maxInFlight: maxInFlight) }
    }

    enum Role {
        case control
        case consumer(ConsumerState)
        case publisher(PublisherState)
        /// A channel for `basic.get` (IOLoop+Get).
        case getter(GetState)

        var kind: ChannelLifecycle.Kind {
            switch self {
            case .control: .control
            case .consumer: .consumer
            case .publisher: .publisher
            case .getter: .getter
            }
        }
    }

    final class Channel {
        let id: UInt16
        /// Open or closed, which incarnation, whether its subscription delivers: decided by the
        /// pure `ChannelLifecycle`, carried out by `IOLoop.carryOut`.
        var lifecycle: ChannelLifecycle
        var assembler = ContentAssembler()
        /// The properties of the last content header, for the next one that repeats them.
        var recentProperties = RepeatedProperties()
        let role: Role

        init(id: UInt16, role: Role) {
            self.id = id
            self.role = role
            lifecycle = ChannelLifecycle(kind: role.kind, epoch: nextChannelEpoch())
        }

        var isOpen: Bool { lifecycle.isOpen }
        var epoch: UInt64 { lifecycle.epoch }
    }

    let connection: amqp_connection_state_t
    let queue: CommandQueue
    let events: AsyncStream<ConnectionEvent>.Continuation
    let negotiated: NegotiatedParameters
    var logger: Logger
    let maxFramesPerTurn: Int
    /// Whether the connection is plain TCP, where all the library has not yet read is in the
    /// kernel and the loop's wait sees it (`drainInput`).
    let isPlainTCP: Bool
    /// What a health check reads: last turn, last bytes from the broker, blocking calls.
    let progress: IOLoopProgress

    var channels: [UInt16: Channel] = [:] {
        didSet {
            lastChannel = nil
            publisherChannels = channels.values.filter {
                if case .publisher = $0.role { true } else { false }
            }
        }
    }
    /// The publisher channels among `channels`, which every turn visits (to expire, count and
    /// send publishes, and for their next deadline): kept as the channels change, rarely, rather
    /// than found again in the dictionary each turn.
    private(set) var publisherChannels: [Channel] = []
    /// The channel of the last frame: a delivery's three frames, and usually the next
    /// delivery's, are on the same channel. Forgotten whenever `channels` changes.
    private var lastChannel: Channel?
    var controlChannel: UInt16?
    /// Open, blocked by the broker, closing on request, or failed (`ConnectionLifecycle`).
    var lifecycle = ConnectionLifecycle()
    /// Why the connection is unusable, once it is; the loop ends and tears down.
    var fatal: AMQPError? { lifecycle.failure }
    /// Not failed yet. Checked several times per frame.
    var isAlive: Bool { lifecycle.isAlive }
    var closeWaiters: [CheckedContinuation<Void, Never>] = []
    /// Consumer channels with settlements recorded but not yet sent.
    var pendingSettlement = ChannelIDs()
    /// A consumer's deliveries reached half its window from the last ack this turn: reading
    /// stops there (`drainInput`), and what is left in the buffer waits for the next turn.
    var turnFull = false
    /// Consumers with deliveries assembled this turn, not yet handed over (flushDeliveries).
    var consumersWithPending: [ConsumerState] = []
    var resolutions: [Tracker.Resolution] = []
    /// When this turn's jobs started: the time of the settlements they record.
    var turnNow: UInt64 = 0
    var settleActions: [AckSettler.Action] = []

    init(connection: amqp_connection_state_t, queue: CommandQueue, events: AsyncStream<ConnectionEvent>.Continuation,
         negotiated: NegotiatedParameters, logger: Logger, maxFramesPerTurn: Int, isPlainTCP: Bool = false,
         progress: IOLoopProgress) {
        self.connection = connection
        self.queue = queue
        self.events = events
        self.negotiated = negotiated
        self.logger = logger
        self.maxFramesPerTurn = max(1, maxFramesPerTurn)
        self.isPlainTCP = isPlainTCP
        self.progress = progress
    }

    /// The open or closing channel `id`, if any.
    func channel(_ id: UInt16) -> Channel? {
        if let last = lastChannel, last.id == id { return last }
        lastChannel = channels[id]
        return lastChannel
    }

    /// A settlement made by a job running on this thread, between turns (`CommandQueue.submit`).
    func recordFromJob(_ settle: CommandQueue.Settle) {
        if isAlive { record(settle, now: turnNow) }
    }

    /// Runs the loop until the connection ends; `executor`'s jobs run between reading and
    /// writing, so what they settle goes out in the same turn.
    func run(executor: IOLoopExecutor) {
        let wakeFD = queue.wakeFD
        let idleTimeoutMS = negotiated.heartbeat > 0 ? min(negotiated.heartbeat * 500, 1000) : 1000
        // The socket and the wake-up fd are registered with the kernel once, for the loop's
        // life: poll() registered and unregistered both on every wait, thousands of times a
        // second while messages stream in. Without an epoll instance (no descriptor left),
        // poll() it is.
        let sockfd = amqp_get_sockfd(connection)
        let waiter = warren_epoll2_open(sockfd, wakeFD)
        defer { if waiter >= 0 { close(waiter) } }
        progress.register()
        // Jobs run between reading and writing: a settlement they make is recorded directly
        // (`recordFromJob`), timed by the turn's clock.
        queue.loopThreadStarted(self)
        defer { queue.loopThreadEnded() }
        // The clock is read once before the jobs and once after the last of them (`runJobs`),
        // and both reads serve the whole turn: a read costs about as much as a delivery's
        // hand-over, and these times only need to be right to within a turn.
        var socketWasReady = false
        while isAlive {
            let read = drainInput(limit: maxFramesPerTurn)
            // Before the deliveries go out: a sink may settle some of them on the spot.
            turnNow = monotonicNanoseconds()
            // Readable after the wait counts as hearing from the broker, even before the
            // bytes make a whole frame.
            if read > 0 || socketWasReady { progress.heard(at: turnNow) }
            socketWasReady = false
            flushDeliveries()
            if !isAlive { break }
            let now = executor.runJobs(from: turnNow, budgetNanoseconds: Self.jobBudgetNanoseconds)
            if !isAlive { break }
            amqp_maybe_release_buffers(connection)

            // Settlements first: one submitted before a command (closing its channel, say) must
            // be recorded before that command runs.
            let batch = queue.take()
            progress.turned(at: now)
            for settle in batch.settles { record(settle, now: now) }
            for command in batch.commands {
                switch command {
                case .perform(let operation):
                    if let fatal {
                        operation(.failure(fatal))
                    } else {
                        // Operations are RPCs that block in librabbitmq up to the RPC timeout:
                        // the health check allows for that rather than call the loop wedged. One
                        // that leaves the connection alive got its reply, which the wait never saw:
                        // that counts as hearing from the broker.
                        progress.enteringCall(at: monotonicNanoseconds())
                        operation(.success(self))
                        progress.leftCall()
                        if isAlive { progress.heard(at: monotonicNanoseconds()) }
                    }
                case .close(let waiter):
                    closeWaiters.append(waiter)
                    carryOut(lifecycle.closeRequested())
                }
            }
            for publish in batch.publishes { enqueue(publish) }
            if isAlive { expirePublishes(now: now) }
            // Every frame is its own send() in librabbitmq: corked, the acks and
            // publishes of one turn leave in as few segments as fit, and the broker is woken
            // once for them rather than once per frame.
            let corked = isAlive && outboundFrames() > 1 && warren_tcp_cork(amqp_get_sockfd(connection), 1) == 0
            if isAlive { flushSettlements(now: now) }
            if isAlive { sendPublishes() }
            if corked { _ = warren_tcp_cork(amqp_get_sockfd(connection), 0) }
            resumeResolved()
            if lifecycle.isClosing || !isAlive { break }

            if amqp_frames_enqueued(connection) != 0 || amqp_data_in_buffer(connection) != 0 || queue.hasWork {
                continue
            }
            var timeoutMS = idleTimeoutMS
            if let deadline = nextDeadline() {
                // From the turn's clock: the flush since then only makes the wait end that
                // much after the deadline, not before it.
                let untilMS = deadline > now ? Int((deadline - now + 999_999) / 1_000_000) : 0
                timeoutMS = min(timeoutMS, untilMS)
            }
            var socketReady: Int32 = 0
            var wakeReady: Int32 = 0
            let rc = waiter >= 0
                ? warren_epoll2_wait(waiter, Int32(timeoutMS), &socketReady, &wakeReady)
                : warren_poll2(sockfd, wakeFD, Int32(timeoutMS), &socketReady, &wakeReady)
            if rc < 0 && rc != -EINTR {
                fail(AMQPError(.library, "waiting for the socket failed (errno \(-rc))"))
                break
            }
            if wakeReady != 0 { warren_eventfd_drain(wakeFD) }
            socketWasReady = socketReady != 0
        }
        if isAlive {
            progress.enteringCall(at: monotonicNanoseconds())
            closeGracefully()
        }
        teardown()
    }

    /// How long one turn runs jobs before it reads the socket again.
    static let jobBudgetNanoseconds: UInt64 = 5_000_000

    /// Mark the connection dead; the loop ends at the next check and tears down.
    func fail(_ error: AMQPError) {
        lifecycle.failed(error)
    }

    /// Carries out what the connection's lifecycle decided.
    func carryOut(_ actions: [ConnectionLifecycle.Action]) {
        for action in actions {
            switch action {
            case .reportBlocked(let reason):
                logger.debug("connection blocked by the broker", metadata: ["reason": "\(reason)"])
                events.yield(.blocked(reason: reason))
            case .reportUnblocked:
                logger.info("connection unblocked by the broker")
                events.yield(.unblocked)
            case .closeGracefully:
                break  // the loop ends this turn and closes (run())
            }
        }
    }

    /// At least the number of frames the settlements and publishes of this turn will send.
    private func outboundFrames() -> Int {
        var frames = 0
        for id in pendingSettlement {
            if let channel = channel(id), case .consumer(let consumer) = channel.role {
                frames += consumer.settler.finishedCount > 0 ? 1 : 0
                if case .immediate = consumer.settler.mode { frames += consumer.settler.finishedCount }
            }
        }
        if lifecycle.mayPublish {
            for channel in publisherChannels {
                if case .publisher(let publisher) = channel.role { frames += 3 * publisher.tracker.unsentCount }
            }
        }
        return frames
    }

    private func nextDeadline() -> UInt64? {
        var earliest: UInt64?
        func consider(_ deadline: UInt64?) {
            guard let deadline else { return }
            earliest = min(earliest ?? deadline, deadline)
        }
        for id in pendingSettlement {
            if let channel = channel(id), case .consumer(let consumer) = channel.role {
                consider(consumer.settler.nextDeadline())
            }
        }
        for channel in publisherChannels {
            if case .publisher(let publisher) = channel.role {
                consider(publisher.tracker.nextDeadline)
            }
        }
        return earliest
    }

    private func closeGracefully() {
        // Settlements recorded so far go out before the close, with no hold-back.
        flushSettlements(now: .max)
        let reply = amqp_connection_close(connection, Int32(AMQP_REPLY_SUCCESS))
        if reply.reply_type != AMQP_RESPONSE_NORMAL {
            logger.debug("connection.close did not complete cleanly")
        }
        lifecycle.closed(AMQPError(.closedByClient, "the connection was closed by this process", endpoint: negotiated.endpoint.description))
    }

    private func teardown() {
        progress.unregister()
        let error = fatal ?? AMQPError(.closedByClient, "the connection was closed by this process")
        amqp_destroy_connection(connection)
        let (leftovers, jobs) = queue.close(error)
        IOLoopExecutor.runElsewhere(jobs)
        for (_, channel) in channels {
            switch channel.role {
            case .consumer(let consumer):
                consumer.finish(throwing: error)
            case .publisher(let publisher):
                publisher.tracker.failAll(error, into: &resolutions)
            case .getter(let getter):
                getter.fail(error)
            case .control:
                break
            }
        }
        channels.removeAll()
        for publish in leftovers.publishes { publish.waiter(.failure(error)) }
        for command in leftovers.commands {
            switch command {
            case .perform(let operation): operation(.failure(error))
            case .close(let waiter): closeWaiters.append(waiter)
            }
        }
        resumeResolved()
        if error.code == .closedByClient {
            logger.debug("connection closed")
            events.yield(.closed(nil))
        } else {
            logger.warning("connection lost", metadata: ["error": "\(error)"])
            events.yield(.closed(error))
        }
        events.finish()
        for waiter in closeWaiters { waiter.resume() }
        closeWaiters.removeAll()
    }

    func resumeResolved() {
        guard !resolutions.isEmpty else { return }
        for resolution in resolutions {
            resolution.waiter(resolution.result)
        }
        resolutions.removeAll(keepingCapacity: true)
    }
}

@available(*, unavailable, message: "IOLoop is confined to its connection's I/O thread")
extension IOLoop: Sendable {}

/// A string read off the wire that tends to repeat: decoded again only when its bytes change.
/// Confined to the I/O thread, like the consumer state that holds it.
struct RepeatedString {
    private var bytes: [UInt8] = []
    private var string: AMQPString = ""

    mutating func string(_ wire: amqp_bytes_t) -> AMQPString {
        let incoming = wire.rawBuffer
        if !bytes.holdsExactly(incoming) {
            bytes = Array(incoming)
            string = AMQPString(amqpBytes: wire)
        }
        return string
    }
}

/// The properties of a channel's last content header, given again while the next header
/// carries the same encoded bytes: producers often send the same properties with every message
/// (a content type, a delivery mode), and decoding them allocates their box each time. Headers
/// over `cacheable` bytes are decoded every time and not kept, which bounds both the memory
/// held and the comparison.
struct RepeatedProperties {
    static let cacheable = 256
    private var raw: [UInt8] = []
    private var properties = BasicProperties()

    mutating func properties(decoded: UnsafeMutableRawPointer?, raw wire: amqp_bytes_t) -> BasicProperties {
        let incoming = wire.rawBuffer
        // An empty `raw` is nothing kept: an empty encoding (a queued frame's) never is.
        if !raw.isEmpty && raw.holdsExactly(incoming) { return properties }
        let decoded = decoded.map { BasicProperties(amqpProperties: $0.assumingMemoryBound(to: amqp_basic_properties_t.self).pointee) }
            ?? BasicProperties()
        if incoming.isEmpty || incoming.count > Self.cacheable {
            raw = []
            properties = BasicProperties()
        } else {
            raw = Array(incoming)
            properties = decoded
        }
        return decoded
    }
}

extension amqp_bytes_t {
    /// The bytes, in place (empty for a null pointer).
    var rawBuffer: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: bytes, count: bytes == nil ? 0 : len)
    }
}

extension [UInt8] {
    /// Whether these are exactly the bytes of `other`: what the repeated-value caches of the
    /// loop (`RepeatedString`, `RepeatedProperties`) compare a frame's bytes with.
    func holdsExactly(_ other: UnsafeRawBufferPointer) -> Bool {
        withUnsafeBytes { mine in
            guard mine.count == other.count else { return false }
            guard let mineBase = mine.baseAddress, let otherBase = other.baseAddress else { return true }
            return memcmp(mineBase, otherBase, other.count) == 0
        }
    }
}

/// The ids of the channels with something to send, each once, in the order they first had
/// some. A connection has a few channels busy at a time: a short array searched linearly costs
/// less than hashing into a set, and `keep` filters it in place.
struct ChannelIDs: Sequence {
    private var ids: [UInt16] = []

    var isEmpty: Bool { ids.isEmpty }

    mutating func insert(_ id: UInt16) {
        if !ids.contains(id) { ids.append(id) }
    }

    mutating func remove(_ id: UInt16) {
        if let index = ids.firstIndex(of: id) { ids.remove(at: index) }
    }

    /// Keeps the ids for which `body` (called once for each, in order) returns true.
    mutating func keep(_ body: (UInt16) -> Bool) {
        ids.removeAll { !body($0) }
    }

    func makeIterator() -> IndexingIterator<[UInt16]> { ids.makeIterator() }
}
