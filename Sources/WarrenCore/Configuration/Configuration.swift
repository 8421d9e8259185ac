import AMQP
import Foundation
import Logging

/// Everything `warren.toml` describes (docs/configuration.md), parsed, defaulted and validated.
/// Defaults live here, next to each field, and nowhere else.
public struct Configuration: Sendable {
    /// The file this was loaded from (for messages).
    public var sourceFile: String
    public var broker: BrokerConfiguration
    public var publisher = PublisherConfiguration()
    public var defaults = QueueDefaults()
    public var log = LogConfiguration()
    /// `nil`: no metrics endpoint.
    public var metrics: MetricsConfiguration?
    public var dedup = DedupConfiguration()
    /// Where warren keeps what must survive a restart (stream offsets).
    public var state = StateConfiguration()
    /// The `warren ctl` socket.
    public var control = ControlConfiguration()
    /// Span export (`[tracing]`); nil: no spans are exported.
    public var tracing: TracingConfiguration?
    public var exchanges: [ExchangeConfiguration] = []
    public var queues: [QueueConfiguration] = []
    /// In file order.
    public var handlers: [HandlerConfiguration] = []

    public func handler(named name: String) -> HandlerConfiguration? {
        handlers.first { $0.name == name }
    }
}

public struct BrokerConfiguration: Sendable, Equatable {
    /// Parsed from `urls` (or `url`); passwords are only in here, never in messages.
    public var endpoints: [AMQPEndpoint]
    /// Read at start and on reload; overrides the URLs' passwords.
    public var passwordFile: String?
    public var heartbeat: Duration = .seconds(30)
    public var connectTimeout: Duration = .seconds(5)
    public var reconnectInitialDelay: Duration = .milliseconds(500)
    public var reconnectMaxDelay: Duration = .seconds(30)
    /// `%h` already replaced by the host name.
    public var connectionName = "warren@%h"
    /// The broker's `consumer_timeout`: a delivery unacked for longer makes the broker close
    /// the channel, so no handler timeout may exceed it.
    public var consumerTimeout: Duration = .seconds(30 * 60)
    public var tls: TLSSettings?
    /// RabbitMQ's management HTTP API (`http://host:15672`), which `warren check --connect`
    /// asks for what AMQP cannot tell: the policies in effect on a queue. nil: not asked.
    public var managementURL: String?
}

public struct TLSSettings: Sendable, Hashable {
    public var caFile: String?
    public var certFile: String?
    public var keyFile: String?
    public var verifyPeer = true
    public var verifyHostname = true
}

public struct PublisherConfiguration: Sendable, Equatable {
    public var confirmTimeout: Duration = .seconds(5)
    public var mandatory = true
    public var maxInFlight = 1000
}

public enum AckPolicy: String, Sendable, CaseIterable {
    case ackFirst = "ack_first"
    case ack
    case rejectOnError = "reject_on_error"
    case nackOnError = "nack_on_error"
    case manual
}

public enum AckMode: String, Sendable, CaseIterable {
    case batched
    case immediate
}

/// `[defaults]`: what every `[[queues]]` entry inherits unless it sets its own.
public struct QueueDefaults: Sendable {
    public var ackPolicy = AckPolicy.nackOnError
    public var prefetch = 32
    public var concurrency = 8
    public var handlerTimeout: Duration = .seconds(30)
    public var ackMode = AckMode.batched
    public var shutdownTimeout: Duration = .seconds(30)
    public var maxBodySize = 64 << 20
    /// `circuit_breaker` for every queue that does not set its own.
    public var circuitBreaker: CircuitBreakerPolicy?
}

public enum LogFormat: String, Sendable, CaseIterable {
    case logfmt
    case json
}

public struct LogConfiguration: Sendable, Equatable {
    public var level = Logger.Level.info
    public var format = LogFormat.logfmt
}

public struct MetricsConfiguration: Sendable, Hashable {
    public var host: String
    public var port: Int
}

public enum DedupStoreKind: String, Sendable, CaseIterable {
    case memory
    case sqlite
}

public struct DedupConfiguration: Sendable, Equatable {
    public var store = DedupStoreKind.memory
    public var path = "/var/lib/warren/dedup.sqlite"
    public var ttl: Duration = .seconds(24 * 3600)
}

public struct ExchangeConfiguration: Sendable, Hashable {
    public var name: String
    public var type = "direct"
    public var durable = true
    public var autoDelete = false
    public var `internal` = false
    public var arguments: FieldTable = [:]
}

public enum QueueType: String, Sendable, CaseIterable {
    case classic
    case quorum
    /// An append-only log (RabbitMQ 3.9+): consumers read it from an offset, acks are credit,
    /// nothing is removed or requeued (docs/streams.md).
    case stream
}

/// Where a stream queue's consumer starts the first time, when warren has no stored offset for
/// it (`offset` in the file); afterwards it resumes after the last offset it processed.
public enum StreamOffset: Sendable, Hashable {
    /// The oldest message the stream still holds.
    case first
    /// The last chunk the stream wrote (RabbitMQ starts at a chunk boundary: a few messages
    /// before the very last may come too).
    case last
    /// Only messages written after the consumer starts (RabbitMQ's default).
    case next
    /// This offset (or the first one after it that the stream still holds).
    case offset(Int64)
    /// The first message written at or after this time (second precision).
    case timestamp(Date)
    /// Messages written in this span before the consumer starts (`offset = "2h ago"`).
    case ago(Duration)
}

/// `[state]`: what warren keeps on disk across restarts.
public struct StateConfiguration: Sendable, Equatable {
    /// The directory for stream offsets (`<directory>/stream-offsets/`). The shipped systemd
    /// unit's StateDirectory.
    public var directory = "/var/lib/warren"
    /// A stream queue's processed offset is written after this many messages...
    public var offsetFlushEvery = 1000
    /// ...or this long after the last write, whichever comes first, and on stop.
    public var offsetFlushInterval: Duration = .seconds(1)
}

/// `[control]`: the unix socket `warren ctl` talks to (docs/cli.md, "warren ctl").
public struct ControlConfiguration: Sendable, Equatable {
    /// The default path: the shipped systemd unit's RuntimeDirectory.
    public static let defaultSocket = "/run/warren/control.sock"
    /// The socket's path; nil when `socket = ""` turns it off.
    public var socket: String? = ControlConfiguration.defaultSocket
    /// `socket` was set in the file. A default path that cannot be used (its directory missing,
    /// as outside systemd) only disables `warren ctl`; a path the operator chose must work.
    public var socketConfigured = false
}

public struct BindingConfiguration: Sendable, Hashable {
    public var exchange: String
    public var routingKey = ""
    public var arguments: FieldTable = [:]
}

public struct RetryPolicy: Sendable, Hashable {
    /// Total deliveries to the handler, the first included.
    public var maxAttempts = 5
    public var delay: Duration = .seconds(1)
    public var multiplier = 2.0
    public var maxDelay: Duration = .seconds(300)

    /// Above this a ladder step makes no sense (and a delay queue would hold messages for days).
    public static let longestMaxDelay: Duration = .seconds(24 * 3600)

    /// The distinct delays of the retry ladder, ascending: step n (n = 1 ... maxAttempts-1)
    /// waits delay × multiplier^(n-1), capped at maxDelay, in whole milliseconds.
    public var ladder: [Duration] {
        guard maxAttempts > 1 else { return [] }
        var steps: [Duration] = []
        let base = Double(delay.milliseconds)
        let cap = maxDelay.milliseconds
        // Distinct steps are few (they grow geometrically up to the cap); the bound keeps a
        // huge max_attempts with multiplier 1.0 from looping for minutes.
        for n in 1..<min(maxAttempts, 10_001) {
            let raw = base * pow(multiplier, Double(n - 1))
            let ms = raw.isFinite && raw < Double(cap) ? Int64(raw.rounded()) : cap
            let step = Duration.milliseconds(max(ms, 1))
            if steps.last != step { steps.append(step) }
            if ms >= cap { break }
        }
        return steps
    }

    /// Every delay a retry can wait, ascending, and so the delay queues warren declares: the
    /// series delay × multiplier^k (k = 0, 1, ...) in whole milliseconds, capped at maxDelay, with
    /// maxDelay itself as the last step. The ladder is a prefix of it. A handler's verdict delay
    /// (pipe `delay`, plugin `delay_ms`, HTTP `Retry-After`) is rounded up to one of these steps,
    /// whatever `max_attempts` is. Empty when no retry can happen (`max_attempts` = 1).
    public var delaySeries: [Duration] {
        guard maxAttempts > 1 else { return [] }
        var steps: [Duration] = []
        let base = Double(delay.milliseconds)
        let cap = max(maxDelay.milliseconds, 1)
        // With multiplier 1.0 the series never grows: the bound stops it, and the cap follows.
        for k in 0..<64 {
            let raw = base * pow(multiplier, Double(k))
            let ms = raw.isFinite && raw < Double(cap) ? Int64(raw.rounded()) : cap
            let step = Duration.milliseconds(max(ms, 1))
            if steps.last != step { steps.append(step) }
            if ms >= cap || (multiplier <= 1 && k > 0) { break }
        }
        let last = Duration.milliseconds(cap)
        if steps.last.map({ $0 < last }) ?? true { steps.append(last) }
        return steps
    }

    /// The step a verdict asking for `requested` waits: the first step of the delay series at
    /// least as long, or maxDelay when the request is longer than every step.
    public func delayStep(forRequested requested: Duration) -> Duration? {
        let series = delaySeries
        return series.first { $0 >= requested } ?? series.last
    }
}

public enum DeadLetterTarget: Sendable, Hashable {
    /// Publish a copy (with forensic headers) here, confirm, then ack. The default is the
    /// parking queue `<queue>.dead` through the default exchange.
    case publish(exchange: String, routingKey: String)
    /// `basic.reject` without requeue: the queue's own `x-dead-letter-exchange` decides.
    case broker
    /// Ack and log a warning: explicit data loss.
    case drop
}

public enum UnroutedAction: String, Sendable, CaseIterable {
    case deadLetter = "dead_letter"
    case ack
    case reject
}

public struct RouteMatch: Sendable, Hashable {
    public var type: String?
    /// Header name -> expected value (compared as text).
    public var headers: [String: String] = [:]
    /// An AMQP topic pattern (`*` one word, `#` zero or more).
    public var routingKey: String?
}

public struct Route: Sendable, Hashable {
    public var match: RouteMatch
    public var handlers: [String]
}

public enum QueueTarget: Sendable, Hashable {
    case handler(String)
    case routes([Route], unrouted: UnroutedAction)
}

public struct QueueConfiguration: Sendable, Equatable {
    public var name: String
    public var declare = true
    public var durable = true
    public var type = QueueType.classic
    public var arguments: FieldTable = [:]
    public var bindings: [BindingConfiguration] = []
    public var target: QueueTarget
    public var ackPolicy: AckPolicy
    public var prefetch: Int
    public var concurrency: Int
    public var handlerTimeout: Duration
    public var ackMode: AckMode
    public var shutdownTimeout: Duration
    public var maxBodySize: Int
    public var dedup = false
    public var singleActiveConsumer = false
    public var consumerPriority = 0
    /// `rate_limit`: how many handler runs may start per second; nil: no limit.
    public var rateLimit: RateLimit?
    /// `circuit_breaker`: stop taking deliveries while the handler fails; nil: off.
    public var circuitBreaker: CircuitBreakerPolicy?
    /// For `type = "stream"`: where the consumer starts when no offset is stored.
    public var streamOffset = StreamOffset.next
    /// `nil`: `retry = false` (failures are nacked with requeue).
    public var retry: RetryPolicy? = RetryPolicy()
    public var deadLetter: DeadLetterTarget

    /// The parking queue Warren declares for this queue, if its dead letters go there.
    public var parkingQueue: String? {
        if case .publish(let exchange, let routingKey) = deadLetter, exchange.isEmpty, routingKey == Self.parkingQueueName(name) {
            return routingKey
        }
        return nil
    }

    public static func parkingQueueName(_ queue: String) -> String { "\(queue).dead" }
    public static func retryQueueName(_ queue: String, delay: Duration) -> String { "\(queue).retry.\(delay.configText)" }

    /// The handlers this queue can run.
    public var handlerNames: [String] {
        switch target {
        case .handler(let name): [name]
        case .routes(let routes, _): routes.flatMap(\.handlers)
        }
    }
}

public enum FsyncMode: String, Sendable, CaseIterable {
    case always
    case batch
    case never
}

public enum HandlerKind: Sendable, Hashable {
    /// `inheritEnvironment`: which of warren's variables the process sees (`inherit_env`).
    case exec(command: [String], environment: [String: String], workingDirectory: String?, inheritEnvironment: InheritedEnvironment = .standard)
    case pipe(
        command: [String], environment: [String: String], workingDirectory: String?, instances: Int, maxInFlightPerInstance: Int,
        inheritEnvironment: InheritedEnvironment = .standard)
    case http(url: String, method: String, headers: [String: String])
    /// `configJSON`: the handler's `config` table as a JSON object, passed to `init`.
    case plugin(library: String, configJSON: String)
    case noop
    case log
    case file(path: String, fsync: FsyncMode)
    case republish(exchange: String, routingKey: String)

    public var name: String {
        switch self {
        case .exec: "exec"
        case .pipe: "pipe"
        case .http: "http"
        case .plugin: "plugin"
        case .noop: "noop"
        case .log: "log"
        case .file: "file"
        case .republish: "republish"
        }
    }

    public static let names = ["exec", "pipe", "http", "plugin", "noop", "log", "file", "republish"]
}

public struct HandlerConfiguration: Sendable, Hashable {
    public var name: String
    public var kind: HandlerKind
    /// `nil`: the queue's `handler_timeout`.
    public var timeout: Duration?
}
