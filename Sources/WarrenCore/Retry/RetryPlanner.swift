import AMQP
import Foundation

/// Attempt counting and the retry / dead-letter copies (SPEC §4). Pure.
public enum RetryPlanner {
    public static let attemptHeader = "x-warren-attempt"
    public static let originalExchangeHeader = "x-warren-original-exchange"
    public static let originalRoutingKeyHeader = "x-warren-original-routing-key"

    /// `max(x-warren-attempt, x-delivery-count + 1)`, at least 1. Quorum queues count
    /// redeliveries in `x-delivery-count`; classic queues keep no count, so an immediate requeue
    /// does not raise the attempt there, but the retry ladder does.
    public static func attempt(headers: FieldTable?) -> Int {
        let warren = headers?[attemptHeader]?.integerValue ?? 1
        let deliveries = (headers?["x-delivery-count"]?.integerValue).map { $0 + 1 } ?? 1
        return Int(clamping: max(1, warren, deliveries))
    }

    public enum RetryStep: Sendable, Hashable {
        /// Publish to this delay queue with `x-warren-attempt` = `nextAttempt`, confirm, then ack.
        case delay(queue: String, delay: Duration, nextAttempt: Int)
        case deadLetter(DeadLetterReason)
        /// `retry = false`: nack with requeue.
        case requeue
    }

    /// Where a retry of `attempt` goes. A verdict's own delay is rounded up to the nearest ladder
    /// step and capped at the last one, so no other delay queues exist.
    public static func step(queue: QueueConfiguration, attempt: Int, requestedDelay: Duration?) -> RetryStep {
        guard let policy = queue.retry else { return .requeue }
        let ladder = policy.ladder
        guard attempt < policy.maxAttempts, let last = ladder.last else { return .deadLetter(.attemptsExhausted) }
        let delay: Duration
        if let requestedDelay {
            delay = ladder.first { $0 >= requestedDelay } ?? last
        } else {
            delay = ladder[min(max(attempt - 1, 0), ladder.count - 1)]
        }
        return .delay(queue: QueueConfiguration.retryQueueName(queue.name, delay: delay), delay: delay, nextAttempt: attempt + 1)
    }

    /// The copy that goes to a delay queue: same body and properties, the attempt header
    /// incremented, and where the message originally came from (set once, then kept).
    public static func retryCopy(of delivery: Delivery, delayQueue: String, nextAttempt: Int) -> OutgoingMessage {
        var properties = delivery.properties
        var headers = properties.headers ?? FieldTable()
        headers[attemptHeader] = .int64(Int64(nextAttempt))
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
        headers["x-warren-error"] = .string(error)
        if let handler { headers["x-warren-handler"] = .string(handler) }
        headers["x-warren-attempts"] = .int64(Int64(attempts))
        if let code = failure?.exitCode { headers["x-warren-exit-code"] = .int64(Int64(code)) }
        if let signal = failure?.signal { headers["x-warren-signal"] = .string(signal) }
        if let status = failure?.httpStatus { headers["x-warren-http-status"] = .int64(Int64(status)) }
        if let tail = failure?.stderrTail { headers["x-warren-stderr-tail"] = .string(String(tail.suffix(2048))) }
        headers["x-warren-failed-at"] = .string(rfc3339(now))
        recordOrigin(of: delivery, in: &headers)
        properties.headers = headers
        // A per-message TTL would let the parked copy expire: parking is for people to look at.
        properties.expiration = nil
        return OutgoingMessage(exchange: exchange, routingKey: routingKey, mandatory: true, properties: properties, body: delivery.body)
    }

    static func rfc3339(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
    }
}
