import AMQP

/// Every publish the engine makes (retry copies, dead letters, replies, handler outputs), with
/// confirms. The caller acks its input only when `publishAll` reports no problem.
struct EnginePublisher: Sendable {
    let link: PublisherLink
    let mandatory: Bool
    /// How long a publish waits for a publisher connection that is being re-established.
    let confirmTimeout: Duration
    /// `warren_publishes_total{result}`, resolved once per session.
    let metrics = PublishMetrics()

    /// Publishes concurrently; `nil` when every message was confirmed, else the first problem
    /// in words (nacked, returned, timed out, or the channel/connection error).
    func publishAll(_ messages: [OutgoingMessage]) async -> String? {
        guard !messages.isEmpty else { return nil }
        if messages.count == 1, let only = messages.first {
            return await publishOne(only)
        }
        return await withTaskGroup(of: String?.self) { group in
            for message in messages {
                group.addTask { await publishOne(message) }
            }
            var firstProblem: String?
            for await problem in group where firstProblem == nil {
                firstProblem = problem
            }
            return firstProblem
        }
    }

    private func publishOne(_ message: OutgoingMessage) async -> String? {
        var message = message
        message.mandatory = mandatory
        guard let publisher = await link.publisher(waitingUpTo: confirmTimeout) else {
            metrics.count(.failed)
            return "publish to \(Self.destination(message)) failed: no publisher connection (reconnecting)"
        }
        do {
            let outcome = try await publisher.publish(message)
            metrics.count(Self.result(outcome))
            return outcome == .confirmed ? nil : "publish to \(Self.destination(message)) \(outcome)"
        } catch {
            metrics.count(.failed)
            return "publish to \(Self.destination(message)) failed: \(error)"
        }
    }

    static func result(_ outcome: PublishOutcome) -> PublishResult {
        switch outcome {
        case .confirmed: .confirmed
        case .nacked: .nacked
        case .returned: .returned
        case .timedOut: .timeout
        }
    }

    static func destination(_ message: OutgoingMessage) -> String {
        message.exchange.isEmpty ? "queue \"\(message.routingKey)\"" : "exchange \"\(message.exchange)\" (\(message.routingKey))"
    }
}
