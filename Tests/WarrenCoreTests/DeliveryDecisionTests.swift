import AMQP
import Foundation
import Testing

@testable import WarrenCore

/// The per-delivery decision, event by event, without a broker: every failure class of a publish
/// made while processing an input, under every ack policy.
@Suite("Delivery decision")
struct DeliveryDecisionTests {
    typealias Action = DeliveryDecision.Action

    static let returned = PublishProblem(.permanent, "publish to queue \"gone\" returned (312 NO_ROUTE)")
    static let refused = PublishProblem(.permanent, "publish to queue \"jobs.dead\" failed: the message's properties and headers take too many bytes")
    static let noPublisher = PublishProblem(.transient, "publish failed: no publisher connection (reconnecting)")

    static func queue(
        policy: AckPolicy = .nackOnError, retry: RetryPolicy? = RetryPolicy(maxAttempts: 3), deadLetter: DeadLetterTarget? = nil,
        arguments: FieldTable = [:]
    ) -> QueueConfiguration {
        var queue = QueueConfiguration(
            name: "jobs", target: .handler("h"), ackPolicy: policy, prefetch: 10, concurrency: 2, handlerTimeout: .seconds(30),
            ackMode: .batched, shutdownTimeout: .seconds(30), maxBodySize: 1024, retry: retry,
            deadLetter: deadLetter ?? .publish(exchange: "", routingKey: "jobs.dead"))
        queue.arguments = arguments
        return queue
    }

    static func delivery(headers: FieldTable? = nil, replyTo: AMQPString? = nil) -> Delivery {
        Delivery(
            tag: DeliveryTag(channel: 1, epoch: 1, value: 7), consumerTag: "c", redelivered: false, exchange: "orders", routingKey: "new",
            properties: BasicProperties(headers: headers, replyTo: replyTo, messageID: "m-1"), body: Array("payload".utf8))
    }

    static func decision(_ queue: QueueConfiguration, attempt: Int = 1, delivery: Delivery = delivery()) -> DeliveryDecision {
        DeliveryDecision(.init(queue: queue, delivery: delivery, attempt: attempt, now: Date(timeIntervalSince1970: 0)))
    }

    static let reply = OutgoingMessage(exchange: "", routingKey: "gone", mandatory: true, properties: BasicProperties(), body: [1])
    static let success = DeliveryDecision.Trigger.handled(.success(HandlerOutput(reply: [1])), handler: "h", outputs: [reply])
    static let failure = DeliveryDecision.Trigger.handled(.failure(HandlerFailure("exit code 1", exitCode: 1)), handler: "h", outputs: [])

    // MARK: helpers to read actions

    static func published(_ action: Action) -> (messages: [OutgoingMessage], purpose: DeliveryDecision.Purpose)? {
        if case .publish(let messages, let purpose) = action { return (messages, purpose) }
        return nil
    }

    static func settled(_ action: Action) -> (Disposition, MessageOutcome, backOff: Bool)? {
        if case .settle(let disposition, let outcome, _, let backOff) = action { return (disposition, outcome, backOff) }
        return nil
    }

    static func header(_ message: OutgoingMessage?, _ key: String) -> FieldValue? { message?.properties.headers?[key] }

    // MARK: success and outputs

    @Test func aSuccessPublishesItsOutputsThenAcksOnceConfirmed() {
        var decision = Self.decision(Self.queue())
        let first = decision.start(Self.success)
        #expect(Self.published(first)?.purpose == .outputs)
        #expect(Self.published(first)?.messages.map(\.routingKey) == ["gone"])
        let second = decision.published(nil)
        #expect(Self.settled(second)?.0 == .ack)
        #expect(Self.settled(second)?.1 == .acked)
    }

    @Test func aSuccessWithoutOutputsAcksAtOnce() {
        var decision = Self.decision(Self.queue())
        let action = decision.start(.handled(.success(.none), handler: "h", outputs: []))
        #expect(Self.settled(action)?.1 == .acked)
    }

    /// The engine skips making a decision when `settlesAtOnce` answers: its answer must be what
    /// the decision itself would have done, for every policy and every kind of outcome.
    @Test(arguments: AckPolicy.allCases)
    func settlingAtOnceIsExactlyWhatTheDecisionWouldDo(policy: AckPolicy) {
        let outcomes: [HandlerOutcome] = [
            .success(.none), .success(HandlerOutput(reply: [1])), .failure(HandlerFailure("exit code 1", exitCode: 1)),
            .verdict(.ack, error: nil, output: .none), .verdict(.requeue, error: "busy", output: .none),
            .verdict(.reject, error: "bad", output: .none), .verdict(.retry(delay: .seconds(1)), error: "later", output: .none),
        ]
        var settledAtOnce = 0
        for outcome in outcomes {
            for outputs in [[], [Self.reply]] where outputs.isEmpty || outcome.isSuccess {
                var decision = Self.decision(Self.queue(policy: policy))
                let full = decision.start(.handled(outcome, handler: "h", outputs: outputs))
                guard let atOnce = DeliveryDecision.settlesAtOnce(outcome, outputs: outputs, policy: policy) else {
                    // Left to the decision: it publishes something first.
                    #expect(Self.published(full) != nil, "\(policy) \(outcome) \(outputs.count)")
                    continue
                }
                settledAtOnce += 1
                #expect("\(atOnce)" == "\(full)", "\(policy) \(outcome) \(outputs.count)")
            }
        }
        // A success without outputs, an ack verdict, and a requeue (or, after ack_first, every
        // outcome without outputs) end at once under every policy.
        #expect(settledAtOnce >= 3)
    }

    @Test func aReplyReturnedAsUnroutableGoesThroughTheRetryLadderNotBackToTheQueue() {
        var decision = Self.decision(Self.queue(policy: .nackOnError))
        _ = decision.start(Self.success)
        let next = decision.published(Self.returned)
        let retry = Self.published(next)
        #expect(retry?.purpose == .retryCopy)
        #expect(retry?.messages.first?.routingKey == "jobs.retry.1s")
        #expect(Self.header(retry?.messages.first, "x-warren-attempt") == .int64(2))
        #expect(Self.settled(decision.published(nil))?.1 == .retried)
    }

    @Test func aReplyThatCannotBePublishedOnTheLastAttemptIsParkedWithThePublishFailure() {
        var decision = Self.decision(Self.queue(policy: .nackOnError), attempt: 3)
        _ = decision.start(Self.success)
        let park = Self.published(decision.published(Self.returned))
        #expect(park?.purpose == .parkCopy)
        #expect(park?.messages.first?.routingKey == "jobs.dead")
        #expect(Self.header(park?.messages.first, "x-warren-reason") == .string("attempts_exhausted"))
        #expect(Self.header(park?.messages.first, "x-warren-error")?.stringValue?.contains("312 NO_ROUTE") == true)
        #expect(Self.settled(decision.published(nil))?.1 == .deadLettered)
    }

    @Test(arguments: [AckPolicy.manual, .nackOnError])
    func aRefusedReplyIsNeverRequeuedEvenUnderPoliciesThatRequeueFailures(policy: AckPolicy) {
        var decision = Self.decision(Self.queue(policy: policy))
        _ = decision.start(Self.success)
        let next = decision.published(Self.returned)
        #expect(Self.settled(next) == nil, "a permanent refusal must not settle (requeue) at once")
        #expect(Self.published(next)?.purpose == .retryCopy)
    }

    @Test func aRefusedReplyWithoutARetryLadderIsParkedAsPublishFailed() {
        var decision = Self.decision(Self.queue(policy: .manual, retry: nil))
        _ = decision.start(Self.success)
        let park = Self.published(decision.published(Self.returned))
        #expect(park?.purpose == .parkCopy)
        #expect(Self.header(park?.messages.first, "x-warren-reason") == .string("publish_failed"))
    }

    @Test func rejectOnErrorParksARefusedReplyAtOnce() {
        var decision = Self.decision(Self.queue(policy: .rejectOnError))
        _ = decision.start(Self.success)
        let park = Self.published(decision.published(Self.returned))
        #expect(Self.header(park?.messages.first, "x-warren-reason") == .string("publish_failed"))
    }

    @Test func ackPolicyAcksARefusedReplyAsItAcksEveryFailure() {
        var decision = Self.decision(Self.queue(policy: .ack))
        _ = decision.start(Self.success)
        #expect(Self.settled(decision.published(Self.returned))?.1 == .acked)
    }

    @Test func aTransientPublishFailureRequeuesAndAsksTheQueueToBackOff() {
        var decision = Self.decision(Self.queue())
        _ = decision.start(Self.success)
        let settled = Self.settled(decision.published(Self.noPublisher))
        #expect(settled?.0 == .nack(requeue: true))
        #expect(settled?.1 == .requeued)
        #expect(settled?.backOff == true)
    }

    @Test func ackFirstOnlyLogsAFailedOutputPublish() {
        var decision = Self.decision(Self.queue(policy: .ackFirst))
        #expect(Self.published(decision.start(Self.success))?.purpose == .outputsAfterAck)
        guard case .finished(let event) = decision.published(Self.returned) else {
            Issue.record("ack_first has nothing left to settle")
            return
        }
        #expect(event.level == .error)
    }

    // MARK: the retry copy

    @Test func aRetryCopyThatIsRefusedParksTheMessageInsteadOfRequeueing() {
        var decision = Self.decision(Self.queue())
        #expect(Self.published(decision.start(Self.failure))?.purpose == .retryCopy)
        let park = Self.published(decision.published(PublishProblem(.permanent, "publish to queue \"jobs.retry.1s\" returned (312 NO_ROUTE)")))
        #expect(park?.purpose == .parkCopy)
        #expect(Self.header(park?.messages.first, "x-warren-reason") == .string("publish_failed"))
    }

    @Test func aRetryCopyThatTimesOutRequeuesWithBackOff() {
        var decision = Self.decision(Self.queue())
        _ = decision.start(Self.failure)
        #expect(Self.settled(decision.published(PublishProblem(.transient, "timed out")))?.backOff == true)
    }

    // MARK: the park copy and what follows when it is refused

    @Test func aRefusedParkCopyIsRetriedReducedWithTheProducersHeadersWhole() {
        let producerHeaders: FieldTable = ["tenant": "acme", "big": .bytes(Array(repeating: 7, count: 500))]
        var decision = Self.decision(Self.queue(policy: .rejectOnError), delivery: Self.delivery(headers: producerHeaders))
        let failure = HandlerFailure(String(repeating: "e", count: 10_000), exitCode: 3, stderrTail: String(repeating: "s", count: 2000))
        let full = Self.published(decision.start(.handled(.failure(failure), handler: "h", outputs: [])))
        #expect(full?.purpose == .parkCopy)
        #expect(Self.header(full?.messages.first, "x-warren-error")?.stringValue?.utf8.count ?? 0 <= RetryPlanner.errorLimit)
        #expect(Self.header(full?.messages.first, "x-warren-stderr-tail") != nil)
        let reduced = Self.published(decision.published(Self.refused))
        #expect(reduced?.purpose == .reducedParkCopy)
        let copy = reduced?.messages.first
        #expect(Self.header(copy, "x-warren-error")?.stringValue?.utf8.count ?? .max <= RetryPlanner.reducedErrorLimit)
        #expect(Self.header(copy, "x-warren-stderr-tail") == nil)
        #expect(Self.header(copy, "x-warren-exit-code") == .int64(3))
        #expect(Self.header(copy, "tenant") == "acme")
        #expect(Self.header(copy, "big") == .bytes(Array(repeating: 7, count: 500)))
        #expect(copy?.body == Array("payload".utf8))
        #expect(Self.settled(decision.published(nil))?.1 == .deadLettered)
    }

    @Test func whenNoCopyCanBeParkedTheQueuesDeadLetterExchangeTakesTheMessage() {
        var decision = Self.decision(Self.queue(policy: .rejectOnError, arguments: ["x-dead-letter-exchange": "dlx"]))
        _ = decision.start(Self.failure)
        _ = decision.published(Self.refused)
        let settled = Self.settled(decision.published(Self.refused))
        #expect(settled?.0 == .reject(requeue: false))
        #expect(settled?.1 == .rejected)
    }

    @Test func whenNoCopyCanBeParkedAndThereIsNoDeadLetterExchangeTheDeliveryIsHeld() {
        var decision = Self.decision(Self.queue(policy: .rejectOnError))
        _ = decision.start(Self.failure)
        _ = decision.published(Self.refused)
        guard case .hold(let event) = decision.published(Self.refused) else {
            Issue.record("expected the delivery to be held")
            return
        }
        #expect(event.level == .error)
    }

    @Test func aParkCopyThatFailsTransientlyRequeuesWithBackOff() {
        var decision = Self.decision(Self.queue(policy: .rejectOnError))
        _ = decision.start(Self.failure)
        #expect(Self.settled(decision.published(Self.noPublisher))?.backOff == true)
    }

    // MARK: verdicts and forensics

    @Test func aRejectVerdictIsParkedWithTheRunsForensics() {
        var decision = Self.decision(Self.queue(policy: .nackOnError))
        let details = HandlerFailure("exit code 65: bad order", exitCode: 65, stderrTail: "bad order\n")
        let action = decision.start(.handled(.verdict(.reject, error: "exit code 65: bad order", output: .none, details: details), handler: "h", outputs: []))
        let copy = Self.published(action)?.messages.first
        #expect(Self.header(copy, "x-warren-reason") == .string("rejected"))
        #expect(Self.header(copy, "x-warren-exit-code") == .int64(65))
        #expect(Self.header(copy, "x-warren-stderr-tail") == .string("bad order\n"))
    }

    @Test func anHTTPRejectCarriesTheStatus() {
        let outcome = HTTPResponseMapping.outcome(status: 404, retryAfter: nil, body: .unwanted)
        var decision = Self.decision(Self.queue())
        let copy = Self.published(decision.start(.handled(outcome, handler: "web", outputs: [])))?.messages.first
        #expect(Self.header(copy, "x-warren-http-status") == .int64(404))
        #expect(Self.header(copy, "x-warren-handler") == .string("web"))
    }

    @Test func aRetryVerdictDelayIsRoundedUpAndCappedAtMaxDelay() {
        let policy = RetryPolicy(maxAttempts: 3, delay: .milliseconds(300), multiplier: 2, maxDelay: .seconds(2))
        var decision = Self.decision(Self.queue(retry: policy))
        let action = decision.start(.handled(.verdict(.retry(delay: .milliseconds(1500)), error: nil, output: .none), handler: "h", outputs: []))
        #expect(Self.published(action)?.messages.first?.routingKey == "jobs.retry.2s")
    }

    // MARK: before the handler

    @Test func aTooLargeMessageIsParkedWithoutRunningAHandler() {
        var decision = Self.decision(Self.queue())
        let copy = Self.published(decision.start(.tooLarge(bodySize: 5000)))?.messages.first
        #expect(Self.header(copy, "x-warren-reason") == .string("too_large"))
    }

    @Test func aTooLargeMessageWhoseBodyCouldNotBeSpooledIsNeverParkedWithoutIt() {
        var held = Self.decision(Self.queue())
        guard case .hold = held.start(.tooLarge(bodySize: 5000, bodyLost: true)) else {
            Issue.record("a copy without the body would lose the message: held")
            return
        }
        var withDLX = Self.decision(Self.queue(arguments: ["x-dead-letter-exchange": "dlx"]))
        #expect(Self.settled(withDLX.start(.tooLarge(bodySize: 5000, bodyLost: true)))?.0 == .reject(requeue: false))
        var broker = Self.decision(Self.queue(deadLetter: .broker))
        #expect(Self.settled(broker.start(.tooLarge(bodySize: 5000, bodyLost: true)))?.0 == .reject(requeue: false))
        var drop = Self.decision(Self.queue(deadLetter: .drop))
        #expect(Self.settled(drop.start(.tooLarge(bodySize: 5000, bodyLost: true)))?.1 == .dropped, "the operator chose to discard")
    }

    @Test func dropAndBrokerTargetsSettleWithoutPublishing() {
        var drop = Self.decision(Self.queue(policy: .rejectOnError, deadLetter: .drop))
        #expect(Self.settled(drop.start(Self.failure))?.1 == .dropped)
        var broker = Self.decision(Self.queue(policy: .rejectOnError, deadLetter: .broker))
        #expect(Self.settled(broker.start(Self.failure))?.0 == .reject(requeue: false))
    }

    // MARK: classification

    @Test func publishProblemsAreClassifiedByWhetherTheSameCopyCouldSucceedLater() {
        #expect(PublishProblem.classify(.returned(replyCode: 312, replyText: "NO_ROUTE")) == .permanent)
        #expect(PublishProblem.classify(.nacked) == .permanent)
        #expect(PublishProblem.classify(.timedOut) == .transient)
        #expect(PublishProblem.classify(.confirmed) == nil)
        let notFound = AMQPError(.channelClosed, "publisher channel closed", replyCode: 404, replyText: "NOT_FOUND - no exchange 'gone' in vhost '/'")
        #expect(PublishProblem.classify(notFound, exchange: "gone") == .permanent, "the channel closed because of this publish")
        #expect(PublishProblem.classify(notFound, exchange: "other") == .transient, "caught in another publish's channel close")
        #expect(PublishProblem.classify(AMQPError(.invalidArgument, "message_id too long"), exchange: "") == .permanent)
        #expect(PublishProblem.classify(AMQPError(.connectionLost, "socket closed"), exchange: "x") == .transient)
        #expect(PublishProblem.classify(AMQPError(.channelClosed, "closed", replyCode: 406, replyText: "PRECONDITION_FAILED - message size"), exchange: "") == .permanent)
    }
}
