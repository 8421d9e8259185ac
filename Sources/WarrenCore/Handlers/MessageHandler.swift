import AMQP

/// What a handler sees of one delivery.
public struct HandlerInput: Sendable {
    public var queue: String
    /// The exchange and routing key exactly as the broker sent them (any bytes).
    public var exchange: AMQPString
    public var routingKey: AMQPString
    public var redelivered: Bool
    /// 1 for the first delivery; see `RetryPlanner.attempt`.
    public var attempt: Int
    public var properties: BasicProperties
    public var body: [UInt8]
    /// For log context only.
    public var deliveryTag: UInt64
    /// The effective handler timeout: the handler's own `timeout`, else the queue's
    /// `handler_timeout`. Handlers that enforce their own timeout read it from here.
    public var timeout: Duration
    /// For a stream queue: the message's offset in the stream (`x-stream-offset`).
    public var streamOffset: Int64?
    /// The trace context of this handler run (docs/tracing.md): a child of `deliveryTrace`, with
    /// a span id of its own. What the handler receives as `traceparent`, and what its outputs
    /// and reply carry forward.
    public var trace: MessageTrace
    /// The delivery's own context (from its `traceparent`, or a trace started for it): what the
    /// copies of the input carry (retry, dead-letter, `republish`).
    public var deliveryTrace: MessageTrace
    /// Where the run may wait with a thread held (an exec run waiting for its process): right
    /// here when its worker runs on a thread of its own, else on one of its queue's
    /// `BlockingThreads`. Set by the engine, which knows where each worker runs.
    public var blocking: BlockingWait = .spare
    /// The spans of this run and its delivery when warren exports spans (nil when it does not).
    var tracing: RunTracing?

    /// Without `trace`, the run starts a trace of its own (and `deliveryTrace` is the same).
    public init(queue: String, exchange: AMQPString, routingKey: AMQPString, redelivered: Bool, attempt: Int,
                properties: BasicProperties, body: [UInt8], deliveryTag: UInt64, timeout: Duration = .seconds(30),
                trace: MessageTrace = .started(), deliveryTrace: MessageTrace? = nil) {
        self.queue = queue
        self.exchange = exchange
        self.routingKey = routingKey
        self.redelivered = redelivered
        self.attempt = attempt
        self.properties = properties
        self.body = body
        self.deliveryTag = deliveryTag
        self.timeout = timeout
        self.trace = trace
        self.deliveryTrace = deliveryTrace ?? trace
    }
}

/// An explicit decision by the handler (what each does: docs/delivery.md, "Ack policies").
public enum Verdict: Sendable, Hashable {
    case ack
    /// Permanent failure: dead-letter with reason `rejected`.
    case reject
    /// Put back now.
    case requeue
    /// Retry later; a delay is rounded up to the nearest ladder step.
    case retry(delay: Duration?)

    public var name: String {
        switch self {
        case .ack: "ack"
        case .reject: "reject"
        case .requeue: "requeue"
        case .retry: "retry"
        }
    }
}

/// A failed handler run, described for logs and dead-letter headers.
public struct HandlerFailure: Sendable, Hashable, Error, CustomStringConvertible {
    /// In words: `exit code 3`, `killed by SIGKILL`, `timeout after 30s`, `HTTP 500`.
    public var error: String
    public var isTimeout = false
    public var exitCode: Int32?
    public var signal: String?
    public var httpStatus: Int?
    /// The last 2 KiB of the handler's stderr.
    public var stderrTail: String?

    public init(_ error: String, isTimeout: Bool = false, exitCode: Int32? = nil, signal: String? = nil, httpStatus: Int? = nil, stderrTail: String? = nil) {
        self.error = error
        self.isTimeout = isTimeout
        self.exitCode = exitCode
        self.signal = signal
        self.httpStatus = httpStatus
        self.stderrTail = stderrTail
    }

    public var description: String { error }
}

/// What a successful run produces besides success: the RPC reply (published to the message's
/// `reply_to`) and messages to publish. All are confirmed before the input is acked.
public struct HandlerOutput: Sendable {
    /// One optional reference, nil when the run produced nothing (most runs): an outcome is
    /// copied several times on its way to the settlement, and three fields of their own would
    /// cost three reference counts each time. Immutable: a change makes a new box.
    private final class Storage: Sendable {
        let reply: [UInt8]?
        let publishes: [OutgoingMessage]
        let replyTrace: MessageTrace?

        init(reply: [UInt8]?, publishes: [OutgoingMessage], replyTrace: MessageTrace?) {
            (self.reply, self.publishes, self.replyTrace) = (reply, publishes, replyTrace)
        }
    }

    private var storage: Storage?

    public var reply: [UInt8]? {
        get { storage?.reply }
        set { update(reply: newValue, publishes: publishes, replyTrace: replyTrace) }
    }

    public var publishes: [OutgoingMessage] {
        get { storage?.publishes ?? [] }
        set { update(reply: reply, publishes: newValue, replyTrace: replyTrace) }
    }

    /// The context of the run that produced `reply`, which the reply carries; set by the engine.
    public var replyTrace: MessageTrace? {
        get { storage?.replyTrace }
        set { update(reply: reply, publishes: publishes, replyTrace: newValue) }
    }

    public init(reply: [UInt8]? = nil, publishes: [OutgoingMessage] = []) {
        update(reply: reply, publishes: publishes, replyTrace: nil)
    }

    private mutating func update(reply: [UInt8]?, publishes: [OutgoingMessage], replyTrace: MessageTrace?) {
        storage = reply == nil && publishes.isEmpty && replyTrace == nil
            ? nil : Storage(reply: reply, publishes: publishes, replyTrace: replyTrace)
    }

    public static let none = HandlerOutput()

    /// A reply or a publish. Read from the box, not through `reply` and `publishes`, which
    /// return copies.
    var publishesSomething: Bool {
        guard let storage else { return false }
        return storage.reply != nil || !storage.publishes.isEmpty
    }
}

/// How one handler run ended.
///
/// A failure and a verdict are boxed (`indirect`): the success every message of a healthy queue
/// ends with stays small to copy through the decision.
public enum HandlerOutcome: Sendable {
    case success(HandlerOutput)
    indirect case failure(HandlerFailure)
    /// `error` is the handler's own explanation, if it gave one. `details` carries what the run
    /// left behind for a person to look at (exit code, stderr tail, HTTP status) when the verdict
    /// was read from them, so a rejected message is parked with the same forensics as a failed one.
    indirect case verdict(Verdict, error: String?, output: HandlerOutput, details: HandlerFailure? = nil)

    /// Success, or the ack verdict (the same thing said explicitly).
    public var isSuccess: Bool {
        switch self {
        case .success, .verdict(.ack, _, _, _): true
        default: false
        }
    }

    /// The `result` label of `warren_handler_runs_total`.
    public var resultName: String {
        switch self {
        case .success: "success"
        case .failure(let f): f.isTimeout ? "timeout" : "failure"
        case .verdict(let v, _, _, _): v.name
        }
    }
}

/// The contract every handler kind implements. `handle` must return (it may be cancelled when
/// the handler timeout passes: kill what it started and return promptly).
///
/// Lifecycle: the engine calls `run()` once at start, in a task of its own, for the whole life
/// of the process; `handle` may be called concurrently from the first moment (it waits for what
/// `run` brings up, within the input's timeout). At shutdown the engine first lets in-flight
/// messages finish, then cancels `run()`, and after it returned calls `shutdown()` once.
public protocol MessageHandler: Sendable {
    func handle(_ input: HandlerInput) async -> HandlerOutcome
    /// Background work the handler owns (worker processes and their restarts). Returns when
    /// cancelled, after stopping that work. The default does nothing.
    func run() async
    /// Release what the handler holds (worker processes, libraries). Called once, at shutdown.
    func shutdown() async
    /// True when the handler cannot overrun its timeout (it finishes at once, or enforces the
    /// timeout itself, e.g. by killing its process). The engine then spares the per-run timer,
    /// which costs more than a whole noop run.
    var enforcesOwnTimeout: Bool { get }
    /// Where `handle` may run, which decides where its queue's workers run (`QueueRunner`).
    /// The default is `.sharedPool`.
    var threading: HandlerThreading { get }
    /// The outcome decided without suspending, for a handler that never waits for anything
    /// (`noop`, `republish`); nil means "call `handle`". When it answers, the engine takes the
    /// delivery from receipt to settlement without an async call, so Swift concurrency is paid
    /// only by handlers that really suspend. The default is nil.
    func outcomeAtOnce(_ input: HandlerInput) -> HandlerOutcome?
}

extension MessageHandler {
    public func run() async {}
    public func shutdown() async {}
    public var enforcesOwnTimeout: Bool { false }
    public var threading: HandlerThreading { .sharedPool }
    public func outcomeAtOnce(_ input: HandlerInput) -> HandlerOutcome? { nil }
}

/// What a handler does to the thread it runs on, and so where its queue's workers run.
public enum HandlerThreading: Sendable {
    /// `handle` returns promptly without blocking a thread (no process, file, lock or remote
    /// call it waits for synchronously). A queue whose handlers are all like this runs them on
    /// the consumer connection's I/O thread, next to the deliveries.
    case neverBlocks
    /// `handle` awaits slow work without blocking a thread, or blocks only briefly: the shared
    /// pool, so it can never hold up reading, heartbeats or the other queues.
    case sharedPool
    /// `handle` waits for slow work (a child process) with a thread held, where
    /// `HandlerInput.blocking` says: right where it runs when the thread is its worker's own,
    /// else on one of its queue's `BlockingThreads`. A queue with such handlers has those
    /// threads; when all its handlers are like this, each worker runs on one of them.
    case ownThread
}
