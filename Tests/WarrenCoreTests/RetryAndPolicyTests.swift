import AMQP
import Testing

@testable import WarrenCore

@Suite("Retry planning and the ack-policy table")
struct RetryAndPolicyTests {
    static func queue(retry: RetryPolicy?) -> QueueConfiguration {
        QueueConfiguration(
            name: "jobs", target: .handler("h"), ackPolicy: .nackOnError, prefetch: 10, concurrency: 2,
            handlerTimeout: .seconds(30), ackMode: .batched, shutdownTimeout: .seconds(30), maxBodySize: 1 << 20, retry: retry,
            deadLetter: .publish(exchange: "", routingKey: "jobs.dead"))
    }

    @Test func theAttemptIsTheLargerOfTheWarrenHeaderAndTheDeliveryCountPlusOne() {
        #expect(RetryPlanner.attempt(headers: nil) == 1)
        #expect(RetryPlanner.attempt(headers: ["x-warren-attempt": .int64(3)]) == 3)
        #expect(RetryPlanner.attempt(headers: ["x-delivery-count": .int64(4)]) == 5, "quorum queues count redeliveries")
        #expect(RetryPlanner.attempt(headers: ["x-warren-attempt": .int32(2), "x-delivery-count": .int64(4)]) == 5)
        #expect(RetryPlanner.attempt(headers: ["x-warren-attempt": .int64(6), "x-delivery-count": .int64(1)]) == 6)
        #expect(RetryPlanner.attempt(headers: ["x-warren-attempt": .string("junk")]) == 1, "a malformed header does not break counting")
    }

    @Test func retriesWalkTheLadderThenDeadLetterWhenAttemptsAreExhausted() {
        let queue = Self.queue(retry: RetryPolicy(maxAttempts: 4, delay: .seconds(1), multiplier: 2, maxDelay: .seconds(300)))
        #expect(RetryPlanner.step(queue: queue, attempt: 1, requestedDelay: nil) == .delay(queue: "jobs.retry.1s", delay: .seconds(1), nextAttempt: 2))
        #expect(RetryPlanner.step(queue: queue, attempt: 3, requestedDelay: nil) == .delay(queue: "jobs.retry.4s", delay: .seconds(4), nextAttempt: 4))
        #expect(RetryPlanner.step(queue: queue, attempt: 4, requestedDelay: nil) == .deadLetter(.attemptsExhausted))
    }

    @Test func aVerdictDelayIsRoundedUpToTheDelaySeriesAndCappedAtMaxDelay() {
        let queue = Self.queue(retry: RetryPolicy(maxAttempts: 5, delay: .seconds(1), multiplier: 2, maxDelay: .seconds(300)))
        #expect(RetryPlanner.step(queue: queue, attempt: 1, requestedDelay: .milliseconds(1500)) == .delay(queue: "jobs.retry.2s", delay: .seconds(2), nextAttempt: 2))
        #expect(RetryPlanner.step(queue: queue, attempt: 1, requestedDelay: .seconds(120)) == .delay(queue: "jobs.retry.128s", delay: .seconds(128), nextAttempt: 2),
                "beyond the ladder of max_attempts, the series goes on")
        #expect(RetryPlanner.step(queue: queue, attempt: 1, requestedDelay: .seconds(3600)) == .delay(queue: "jobs.retry.5m", delay: .seconds(300), nextAttempt: 2))
        #expect(RetryPlanner.step(queue: queue, attempt: 2, requestedDelay: .zero) == .delay(queue: "jobs.retry.2s", delay: .seconds(2), nextAttempt: 3),
                "a zero delay asks for the ladder")
    }

    @Test func aVerdictDelayBeyondTheShortLadderWaitsForTheNextSeriesStepUpToMaxDelay() {
        // The acceptance case: ladder 300ms/600ms (max_attempts 3), max_delay 2s, a pipe asking for 1500ms.
        let policy = RetryPolicy(maxAttempts: 3, delay: .milliseconds(300), multiplier: 2, maxDelay: .seconds(2))
        #expect(policy.ladder == [.milliseconds(300), .milliseconds(600)])
        #expect(policy.delaySeries == [.milliseconds(300), .milliseconds(600), .milliseconds(1200), .seconds(2)])
        #expect(RetryPlanner.step(queue: Self.queue(retry: policy), attempt: 1, requestedDelay: .milliseconds(1500))
            == .delay(queue: "jobs.retry.2s", delay: .seconds(2), nextAttempt: 2))
    }

    @Test func theDelaySeriesOfMultiplierOneIsTheDelayThenMaxDelay() {
        let policy = RetryPolicy(maxAttempts: 10, delay: .seconds(5), multiplier: 1, maxDelay: .seconds(60))
        #expect(policy.ladder == [.seconds(5)])
        #expect(policy.delaySeries == [.seconds(5), .seconds(60)])
        #expect(RetryPolicy(maxAttempts: 1).delaySeries.isEmpty, "no retry, no delay queues")
    }

    @Test func attemptCountersFromTheMessageSaturateInsteadOfTrapping() {
        #expect(RetryPlanner.attempt(headers: ["x-delivery-count": .int64(.max)]) == Int.max)
        #expect(RetryPlanner.attempt(headers: ["x-warren-attempt": .int64(.max)]) == Int.max)
        #expect(RetryPlanner.attempt(headers: ["x-delivery-count": .uint64(.max)]) == 1, "not representable: ignored")
        #expect(RetryPlanner.attempt(headers: ["x-delivery-count": .int64(.min), "x-warren-attempt": .int64(-5)]) == 1)
        let queue = Self.queue(retry: RetryPolicy(maxAttempts: .max))
        if case .delay(_, _, let next) = RetryPlanner.step(queue: queue, attempt: .max - 1, requestedDelay: nil) {
            #expect(next == .max)
        } else {
            Issue.record("expected a retry step")
        }
        #expect(RetryPlanner.step(queue: queue, attempt: .max, requestedDelay: nil) == .deadLetter(.attemptsExhausted))
    }

    @Test func retryFalseMeansNackWithRequeue() {
        #expect(RetryPlanner.step(queue: Self.queue(retry: nil), attempt: 1, requestedDelay: nil) == .requeue)
    }

    @Test(arguments: AckPolicy.allCases)
    func thePolicyTable(policy: AckPolicy) {
        let failure = HandlerOutcome.failure(HandlerFailure("exit code 1"))
        let expectedFailure: DeliveryAction = switch policy {
        case .ackFirst: .alreadySettled
        case .ack: .ack
        case .rejectOnError: .deadLetter(.failed)
        case .nackOnError: .retry(delay: nil)
        case .manual: .requeue
        }
        #expect(policy.action(for: failure) == expectedFailure)
        #expect(policy.action(for: .success(.none)) == (policy == .ackFirst ? .alreadySettled : .ack))
        let verdicts: [(Verdict, DeliveryAction)] = [
            (.ack, .ack), (.reject, .deadLetter(.rejected)), (.requeue, .requeue), (.retry(delay: .seconds(5)), .retry(delay: .seconds(5))),
        ]
        for (verdict, action) in verdicts {
            #expect(policy.action(for: .verdict(verdict, error: nil, output: .none)) == (policy == .ackFirst ? .alreadySettled : action))
        }
        #expect(policy.acksBeforeHandling == (policy == .ackFirst))
    }

    @Test func theRetryCopyCarriesTheNextAttemptAndKeepsTheOriginalRoute() {
        let delivery = Delivery(
            tag: DeliveryTag(channel: 1, epoch: 1, value: 1), consumerTag: "c", redelivered: false, exchange: "orders",
            routingKey: "order.created", properties: BasicProperties(headers: ["k": "v"], messageID: "m"), body: [1, 2])
        let copy = RetryPlanner.retryCopy(of: delivery, delayQueue: "jobs.retry.1s", nextAttempt: 2)
        #expect(copy.exchange == "")
        #expect(copy.routingKey == "jobs.retry.1s")
        #expect(copy.body == [1, 2])
        #expect(copy.properties.messageID == "m")
        #expect(copy.properties.headers?["x-warren-attempt"]?.integerValue == 2)
        #expect(copy.properties.headers?["x-warren-original-exchange"] == .string("orders"))
        #expect(copy.properties.headers?["x-warren-original-routing-key"] == .string("order.created"))
        #expect(copy.properties.headers?["k"] == .string("v"))
    }
}
