import Foundation
import Testing
@testable import WarrenCore

/// The delivery-limit advice of `warren check --connect`, from the management API's JSON.
@Suite struct DeliveryLimitCheckTests {
    static func queue(maxAttempts: Int? = 5) throws -> QueueConfiguration {
        let retry = maxAttempts.map { "retry = { max_attempts = \($0) }" } ?? "retry = false"
        let configuration = try ConfigurationLoader.parse(source: """
            [broker]
            urls = ["amqp://guest:guest@127.0.0.1:5672/"]

            [[queues]]
            name = "orders"
            type = "quorum"
            handler = "h"
            \(retry)

            [handlers.h]
            kind = "noop"
            """, file: "test.toml")
        return try #require(configuration.queues.first)
    }

    @Test func readsTheLimitFromArgumentsAndTheEffectivePolicyTheLowerWinning() throws {
        let json = #"""
            {"name":"orders","arguments":{"x-queue-type":"quorum","x-delivery-limit":8},"policy":"limits",
             "effective_policy_definition":{"delivery-limit":3,"dead-letter-exchange":"dlx"}}
            """#
        let facts = try #require(DeliveryLimitCheck.facts(fromQueueJSON: Data(json.utf8)))
        #expect(facts == .init(deliveryLimitArgument: 8, deliveryLimitPolicy: 3, deadLetterExchange: true, policyName: "limits"))
        #expect(facts.effectiveLimit == 3)
    }

    @Test func anEmptyPolicyDefinitionWrittenAsAnArrayAndOddValuesAreRead() throws {
        let json = #"{"arguments":{"x-delivery-limit":"5","x-dead-letter-exchange":""},"policy":null,"effective_policy_definition":[]}"#
        let facts = try #require(DeliveryLimitCheck.facts(fromQueueJSON: Data(json.utf8)))
        // A string limit is ignored by RabbitMQ 3.10, and so here.
        #expect(facts == .init(deliveryLimitArgument: nil, deliveryLimitPolicy: nil, deadLetterExchange: true, policyName: nil))
        #expect(DeliveryLimitCheck.facts(fromQueueJSON: Data("[1,2]".utf8)) == nil)
    }

    @Test func aPolicyLimitBelowMaxAttemptsWithoutADeadLetterExchangeGivesBothWarnings() throws {
        let facts = DeliveryLimitCheck.Facts(deliveryLimitPolicy: 2, policyName: "limits")
        let warnings = DeliveryLimitCheck.warnings(for: try Self.queue(maxAttempts: 5), at: "queues[0]", facts: facts)
        #expect(warnings.count == 2)
        #expect(warnings[0].hasPrefix("queues[0]: the queue's delivery limit is 2 (policy \"limits\"), below retry.max_attempts 5"))
        #expect(warnings[1].contains("has no dead-letter exchange: the broker drops a message requeued more than 2 times"))
    }

    @Test func aLimitAboveMaxAttemptsWithADeadLetterExchangeOrNoLimitIsFine() throws {
        let queue = try Self.queue(maxAttempts: 5)
        #expect(DeliveryLimitCheck.warnings(for: queue, at: "queues[0]", facts: .init(deliveryLimitPolicy: 10, deadLetterExchange: true)).isEmpty)
        #expect(DeliveryLimitCheck.warnings(for: queue, at: "queues[0]", facts: .init()).isEmpty)
        // Without warren's ladder only the missing dead-letter exchange matters.
        let noRetry = DeliveryLimitCheck.warnings(for: try Self.queue(maxAttempts: nil), at: "queues[0]", facts: .init(deliveryLimitArgument: 1))
        #expect(noRetry.count == 1)
        #expect(noRetry[0].contains("(argument x-delivery-limit) and it has no dead-letter exchange"))
    }

    @Test func pathSegmentsArePercentEncoded() {
        #expect(QueuePolicies.segment("/") == "%2F")
        #expect(QueuePolicies.segment("orders.v1-a_b") == "orders.v1-a_b")
        #expect(QueuePolicies.segment("a~b") == "a%7Eb")
        #expect(QueuePolicies.segment("é q") == "%C3%A9%20q")
    }
}
