import AMQP

/// What RabbitMQ refuses, or silently ignores, for a queue's type: refused at `warren check`
/// rather than by the broker at start. The quoted replies are RabbitMQ 3.10.8's.
extension ConfigurationValidation {
    /// Arguments a stream refuses ("invalid arg ... of queue type rabbit_stream_queue"), with
    /// what to use instead where something else does the job. A stream keeps every message
    /// until its retention (`x-max-age`, `x-max-length-bytes`) removes old segments.
    static let argumentsRefusedByStreams: [String: String] = [
        "x-dead-letter-exchange": "failed messages go where dead_letter says",
        "x-dead-letter-routing-key": "failed messages go where dead_letter says",
        "x-message-ttl": "bound the stream's retention with x-max-age instead",
        "x-expires": "a stream is never deleted for being unused",
        "x-max-length": "bound the stream's size with x-max-length-bytes instead",
        "x-overflow": "a stream drops its oldest segments, as x-max-length-bytes and x-max-age say",
        "x-max-priority": "a stream has no priorities",
        "x-delivery-limit": "a stream never redelivers",
        "x-single-active-consumer": "a stream has no single active consumer on RabbitMQ 3.10",
    ]

    func validateQueueType(_ queue: QueueConfiguration, at path: [ConfigPathComponent]) {
        switch queue.type {
        case .classic:
            break
        case .quorum:
            validateQuorumQueue(queue, at: path)
        case .stream:
            validateStreamQueue(queue, at: path)
        }
    }

    private func validateQuorumQueue(_ queue: QueueConfiguration, at path: [ConfigPathComponent]) {
        if !queue.durable {
            d.report(path + [.key("durable")], "quorum queues are always durable; remove durable = false or use type = \"classic\"")
        }
        let arguments = path + [.key("arguments")]
        if queue.arguments["x-max-priority"] != nil {
            d.report(
                arguments + [.key("x-max-priority")],
                "quorum queues have no priorities: RabbitMQ refuses the declaration (\"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '\(queue.name)' ... of queue type rabbit_quorum_queue\"); remove it or use type = \"classic\"")
        }
        guard let limit = queue.arguments["x-delivery-limit"] else { return }
        let limitPath = arguments + [.key("x-delivery-limit")]
        guard let value = limit.integerValue else {
            if case .string(let text) = limit {
                d.report(
                    limitPath,
                    "x-delivery-limit is a string (\"\(text.prefix(20))\"): RabbitMQ 3.10 accepts it and ignores it, so no limit applies; give a number, e.g. \"x-delivery-limit\" = \(Int(text) ?? 10)")
            } else {
                d.report(limitPath, "expected an integer (the number of redeliveries the broker allows)")
            }
            return
        }
        // The broker counts requeues (warren's retries are new copies, each starting at zero):
        // below max_attempts, it drops or dead-letters a message that warren would still try.
        guard let retry = queue.retry, retry.maxAttempts >= 1, !d.hasIssue(under: path + [.key("retry")]), value < Int64(retry.maxAttempts) else {
            return
        }
        d.report(
            limitPath,
            "x-delivery-limit \(value) is below retry.max_attempts \(retry.maxAttempts): the broker would drop (or dead-letter) a message requeued more than \(value) times before warren parks it; raise it above max_attempts, remove it, or lower max_attempts")
    }

    private func validateStreamQueue(_ queue: QueueConfiguration, at path: [ConfigPathComponent]) {
        if !queue.durable {
            d.report(
                path + [.key("durable")],
                "stream queues are always durable: RabbitMQ refuses durable = false (\"PRECONDITION_FAILED - invalid property 'non-durable' for queue '\(queue.name)' ...\"); remove durable = false")
        }
        if queue.deadLetter == .broker {
            d.report(
                path + [.key("dead_letter")],
                "a stream queue has no dead-lettering: dead_letter = \"broker\" rejects failed messages, and RabbitMQ refuses basic.reject on a stream and closes the connection (\"NOT_IMPLEMENTED - basic.nack and basic.reject not supported by stream queues\"); remove dead_letter to park them in \(QueueConfiguration.parkingQueueName(queue.name)), or set dead_letter = { exchange = \"...\" }")
        }
        if case .routes(_, unrouted: .reject) = queue.target {
            d.report(
                path + [.key("unrouted")],
                "unrouted = \"reject\" rejects unrouted messages, and RabbitMQ refuses basic.reject on a stream and closes the connection (\"NOT_IMPLEMENTED - basic.nack and basic.reject not supported by stream queues\"); use \"dead_letter\" (the default) or \"ack\"")
        }
        if queue.singleActiveConsumer {
            d.report(
                path + [.key("single_active_consumer")],
                "single_active_consumer does not apply to stream queues: RabbitMQ 3.10 refuses the declaration (\"PRECONDITION_FAILED - invalid arg 'x-single-active-consumer' for queue '\(queue.name)' ... of queue type rabbit_stream_queue\"); remove it")
        }
        for entry in queue.arguments {
            guard let name = entry.key.text, let instead = Self.argumentsRefusedByStreams[name] else { continue }
            d.report(
                path + [.key("arguments"), .key(name)],
                "stream queues do not take \(name): RabbitMQ refuses the declaration (\"PRECONDITION_FAILED - invalid arg '\(name)' for queue '\(queue.name)' ... of queue type rabbit_stream_queue\"); remove it (\(instead))")
        }
    }

    /// `[state] directory` holds the stream offsets: checked only when a queue is a stream, so
    /// a file without one need not have it.
    func validateStateDirectory(_ c: Configuration) {
        guard c.queues.contains(where: { $0.type == .stream }) else { return }
        let path: [ConfigPathComponent] = [.key("state"), .key("directory")]
        guard !d.hasIssue(under: path) else { return }
        let directory = c.state.directory
        if !checks.isDirectory(directory) {
            d.report(path, "the state directory \(directory) does not exist (stream queues keep their offsets in it); create it or set [state] directory")
        } else if !checks.isWritableDirectory(directory) {
            d.report(path, "warren cannot write in the state directory \(directory) (stream queues keep their offsets in it); make it writable or set [state] directory")
        }
    }
}
