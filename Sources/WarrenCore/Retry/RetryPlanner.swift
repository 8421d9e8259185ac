import AMQP
import Foundation

/// Attempt counting and the retry / dead-letter copies (docs/delivery.md). Pure.
public enum RetryPlanner {
    public static let attemptHeader = "x-warren-attempt"
    public static let originalExchangeHeader = "x-warren-original-exchange"
    public static let originalRoutingKeyHeader = "x-warren-original-routing-key"

    /// `max(x-warren-attempt, x-delivery-count + 1)`, at least 1. Quorum queues count
    /// redeliveries in `x-delivery-count`; classic queues keep no count, so an immediate requeue
    /// does not raise the attempt there, but the retry ladder does.
    ///
    /// Both headers come from the producer as much as from the broker: any integer type and
    /// value is accepted and saturates (2^63-1 stays 2^63-1, negative counts as 1); anything else
    /// (a string, a table) is ignored.
    public static func attempt(headers: FieldTable?) -> Int {
        guard let headers else { return 1 }
        let warren = headers[attemptHeader]?.integerValue ?? 1
        let deliveries = headers["x-delivery-count"]?.integerValue.map { $0 == .max ? $0 : $0 + 1 } ?? 1
        return Int(clamping: max(1, warren, deliveries))
    }

    public enum RetryStep: Sendable, Hashable {
        /// Publish to this delay queue with `x-warren-attempt` = `nextAttempt`, confirm, then ack.
        case delay(queue: String, delay: Duration, nextAttempt: Int)
        case deadLetter(DeadLetterReason)
        /// `retry = false`: nack with requeue.
        case requeue
    }

    /// Where a retry of `attempt` goes. Without a requested delay, the ladder step of this
    /// attempt; a verdict's own delay is rounded up to the next step of the delay series and
    /// capped at `max_delay` (`RetryPolicy.delaySeries`), whatever `max_attempts` is.
    public static func step(queue: QueueConfiguration, attempt: Int, requestedDelay: Duration?) -> RetryStep {
        guard let policy = queue.retry else { return .requeue }
        let ladder = policy.ladder
        guard attempt < policy.maxAttempts, let last = ladder.last else { return .deadLetter(.attemptsExhausted) }
        let delay: Duration
        if let requestedDelay, requestedDelay > .zero {
            delay = policy.delayStep(forRequested: requestedDelay) ?? last
        } else {
            delay = ladder[min(max(attempt - 1, 0), ladder.count - 1)]
        }
        // attempt < maxAttempts, so the increment cannot overflow.
        return .delay(queue: QueueConfiguration.retryQueueName(queue.name, delay: delay), delay: delay, nextAttempt: attempt &+ 1)
    }

    /// The copy that goes to a delay queue: same body and properties, the attempt header
    /// incremented, and where the message originally came from (set once, then kept).
    public static func retryCopy(of delivery: Delivery, delayQueue: String, nextAttempt: Int) -> OutgoingMessage {
        var properties = delivery.properties
        var headers = properties.headers ?? FieldTable()
        headers[attemptHeader] = .int64(Int64(clamping: nextAttempt))
        recordOrigin(of: delivery, in: &headers)
        properties.headers = headers
        return OutgoingMessage(exchange: "", routingKey: delayQueue, mandatory: true, properties: properties, body: delivery.body)
    }

    /// The copy that goes to the dead-letter destination, with the forensic headers.
    public static func deadLetterCopy(
        of delivery: Delivery, exchange: String, routingKey: String, reason: DeadLetterReason, error: String,
        handler: String?, attempts: Int, failure: HandlerFailure?, now: Date = Date()
    ) -> OutgoingMessage {
        var properties = delivery.properties
        var headers = properties.headers ?? FieldTable()
        headers["x-warren-reason"] = .string(reason.rawValue)
        headers["x-warren-error"] = .string(shortened(error, to: errorLimit))
        if let handler { headers["x-warren-handler"] = .string(handler) }
        headers["x-warren-attempts"] = .int64(Int64(clamping: attempts))
        if let code = failure?.exitCode { headers["x-warren-exit-code"] = .int64(Int64(code)) }
        if let signal = failure?.signal { headers["x-warren-signal"] = .string(signal) }
        if let status = failure?.httpStatus { headers["x-warren-http-status"] = .int64(Int64(clamping: status)) }
        if let tail = failure?.stderrTail, !tail.isEmpty { headers["x-warren-stderr-tail"] = .string(lastBytes(of: tail, upTo: stderrTailLimit)) }
        headers["x-warren-failed-at"] = .string(rfc3339(now))
        recordOrigin(of: delivery, in: &headers)
        properties.headers = headers
        // A per-message TTL would let the parked copy expire: parking is for people to look at.
        properties.expiration = nil
        // An oversized body was spooled to a file rather than kept in memory: the copy is sent
        // from there.
        var spooled: SpooledBody?
        if case .success(let file) = delivery.oversizedBody?.spool { spooled = file }
        return OutgoingMessage(
            exchange: exchange, routingKey: routingKey, mandatory: true, properties: properties, body: delivery.body, spooledBody: spooled)
    }

    /// `x-warren-error` holds at most this many bytes (a handler's explanation can be long).
    public static let errorLimit = 4096
    /// `x-warren-stderr-tail` holds the last this many bytes of stderr.
    public static let stderrTailLimit = 2048
    /// In a reduced park copy (the full one was refused), `x-warren-error` is cut to this.
    public static let reducedErrorLimit = 256

    /// The first `maxBytes` bytes of `text` as UTF-8, cut at a character boundary, with `...`
    /// when something was cut.
    public static func shortened(_ text: String, to maxBytes: Int) -> String {
        guard text.utf8.count > maxBytes else { return text }
        var kept = ""
        var used = 3
        for character in text {
            let size = character.utf8.count
            if used + size > maxBytes { break }
            kept.append(character)
            used += size
        }
        return kept + "..."
    }

    /// The last `maxBytes` bytes of `text` as UTF-8, cut at a character boundary.
    static func lastBytes(of text: String, upTo maxBytes: Int) -> String {
        guard text.utf8.count > maxBytes else { return text }
        var kept: [Character] = []
        var used = 0
        for character in text.reversed() {
            let size = character.utf8.count
            if used + size > maxBytes { break }
            kept.append(character)
            used += size
        }
        return String(kept.reversed())
    }

    /// A failure's forensics for a reduced park copy: the exit code, signal and HTTP status
    /// stay; the stderr tail goes (the error text is shortened by the caller).
    static func reduced(_ failure: HandlerFailure) -> HandlerFailure {
        var reduced = failure
        reduced.stderrTail = nil
        return reduced
    }

    static func rfc3339(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
    }
}
