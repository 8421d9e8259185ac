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
    /// Whether publishing can work right now: a publisher connection is up and the broker is not
    /// blocking it. A queue backing off after a transient failure waits for this.
    var isHealthy: @Sendable () -> Bool = { true }

    /// Publishes concurrently; `nil` when every message was confirmed, else the first problem,
    /// a permanent one before any transient one (a message the broker refuses for good decides
    /// what happens to the input, whatever else went wrong beside it).
    /// `tracing`: the delivery whose processing publishes, when spans are exported: each
    /// publish gets a span of its own under the delivery's.
    func publishAll(_ messages: [OutgoingMessage], tracing: TracedDelivery? = nil) async -> PublishProblem? {
        guard !messages.isEmpty else { return nil }
        if messages.count == 1, let only = messages.first {
            return await publishOne(only, tracing: tracing)
        }
        return await withTaskGroup(of: PublishProblem?.self) { group in
            for message in messages {
                group.addTask { await publishOne(message, tracing: tracing) }
            }
            var first: PublishProblem?
            for await problem in group {
                guard let problem else { continue }
                if first == nil || (problem.isPermanent && first?.isPermanent == false) { first = problem }
            }
            return first
        }
    }

    private func publishOne(_ message: OutgoingMessage, tracing: TracedDelivery?) async -> PublishProblem? {
        guard let tracing else { return await publishOne(message) }
        let started = SpanClock.now()
        var result: PublishResult?
        let problem = await publishOne(message) { result = $0 }
        tracing.recordPublish(message, started: started, result: result, problem: problem)
        return problem
    }

    private func publishOne(_ message: OutgoingMessage, result report: (PublishResult) -> Void = { _ in }) async -> PublishProblem? {
        var message = message
        message.mandatory = mandatory
        guard let publisher = await link.publisher(waitingUpTo: confirmTimeout) else {
            metrics.count(.failed)
            report(.failed)
            return PublishProblem(.transient, "publish to \(Self.destination(message)) failed: no publisher connection (reconnecting)")
        }
        do {
            let outcome = try await publisher.publish(message)
            metrics.count(Self.result(outcome))
            report(Self.result(outcome))
            guard let kind = PublishProblem.classify(outcome) else { return nil }
            return PublishProblem(kind, "publish to \(Self.destination(message)) \(outcome)")
        } catch {
            metrics.count(.failed)
            report(.failed)
            return PublishProblem(
                PublishProblem.classify(error, exchange: message.exchange), "publish to \(Self.destination(message)) failed: \(error)")
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
        destination(exchange: message.exchange, routingKey: message.routingKey)
    }

    static func destination(exchange: String, routingKey: AMQPString) -> String {
        exchange.isEmpty ? "queue \"\(routingKey)\"" : "exchange \"\(exchange)\" (\(routingKey))"
    }
}
