import AMQP
import Logging

// `max_body_size`: a delivery over the limit is parked (reason `too_large`) without running a
// handler. The consumer is opened with the queue's limit, so the AMQP layer decides from the
// content header and spools such a body to an unnamed temporary file instead of memory; the
// dead-letter copy is then published straight from that file.
extension DeliveryProcessor {
    /// What to do with a delivery over `max_body_size`; `nil` for one within it.
    enum OversizedAction: Equatable {
        /// Publish the dead-letter copy (body from the spool file or memory), then ack.
        case publishCopy(exchange: String, routingKey: String)
        /// `basic.reject` without requeue: the queue's own dead-letter exchange takes it.
        case reject
        /// Ack and discard (`dead_letter = "drop"`).
        case drop
        /// The body is neither here nor in a file (the spool failed) and the copy would lose
        /// it: leave the delivery unacknowledged, so the broker keeps the message.
        case hold
    }

    /// Pure: the action for a delivery of `bodySize` bytes whose body is (`bodyKept`) or is not
    /// available to copy, under `limit` and the queue's dead-letter target.
    static func oversizedAction(bodySize: Int, bodyKept: Bool, limit: Int, deadLetter: DeadLetterTarget) -> OversizedAction? {
        guard bodySize > limit else { return nil }
        switch deadLetter {
        case .publish(let exchange, let routingKey): return bodyKept ? .publishCopy(exchange: exchange, routingKey: routingKey) : .hold
        case .broker: return .reject
        case .drop: return .drop
        }
    }

    /// Parks `delivery` if it is over the queue's `max_body_size`; returns false (and does
    /// nothing) if it is not.
    nonisolated(nonsending) func parkIfOversized(_ delivery: Delivery, attempt: Int, _ log: MessageLog) async -> Bool {
        let size: Int
        var spooled: SpooledBody?
        var spoolError: AMQPError?
        if let oversized = delivery.oversizedBody {
            size = oversized.size
            switch oversized.spool {
            case .success(let file): spooled = file
            case .failure(let error): spoolError = error
            }
        } else {
            // A consumer opened without the limit (or with a larger one) buffered it.
            size = delivery.body.count
        }
        guard let action = Self.oversizedAction(
            bodySize: size, bodyKept: spoolError == nil, limit: queue.maxBodySize, deadLetter: queue.deadLetter)
        else { return false }
        let error = "the body of \(size) bytes exceeds max_body_size (\(queue.maxBodySize))"
        let reason = DeadLetterReason.tooLarge
        switch action {
        case .publishCopy(let exchange, let routingKey):
            var copy = RetryPlanner.deadLetterCopy(
                of: delivery, exchange: exchange, routingKey: routingKey, reason: reason, error: error, handler: nil,
                attempts: attempt, failure: nil)
            copy.spooledBody = spooled
            if let problem = await publisher.publishAll([copy]) {
                log.error("publish not confirmed; message requeued", metadata: [LogKeys.error: "\(problem)"])
                connection.settle(delivery.tag, .nack(requeue: true))
                metrics.count(.requeued)
                return true
            }
            connection.settle(delivery.tag, .ack)
            metrics.count(.deadLettered)
            log.warning("message dead-lettered", metadata: [
                LogKeys.reason: "\(reason.rawValue)", LogKeys.error: "\(error)", "destination": "\(EnginePublisher.destination(copy))",
            ])
        case .reject:
            log.warning("message rejected to the broker's dead-letter exchange", metadata: [LogKeys.reason: "\(reason.rawValue)", LogKeys.error: "\(error)"])
            connection.settle(delivery.tag, .reject(requeue: false))
            metrics.count(.rejected)
        case .drop:
            log.warning("message dropped (dead_letter = drop)", metadata: [LogKeys.reason: "\(reason.rawValue)", LogKeys.error: "\(error)"])
            connection.settle(delivery.tag, .ack)
            metrics.count(.dropped)
        case .hold:
            // Requeueing would bring it straight back to the same failure, and acking would
            // lose it: it stays unacknowledged (one prefetch slot) until the channel closes.
            log.error("oversized message held unacknowledged: its body could not be spooled", metadata: [
                LogKeys.reason: "\(reason.rawValue)", LogKeys.error: "\(error)", "spool_error": "\(spoolError.map { "\($0)" } ?? "")",
            ])
        }
        return true
    }
}
