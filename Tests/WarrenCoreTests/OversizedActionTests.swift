import AMQP
import Testing

@testable import WarrenCore

@Suite("Consumer options")
struct ConsumeOptionsTests {
    @Test func aQueuesConsumerIsOpenedWithItsMaxBodySize() {
        let queue = RetryAndPolicyTests.queue(retry: nil)
        #expect(Session.consumeOptions(queue).maxBodySize == queue.maxBodySize)
    }

    @Test func batchedAcksWaitForAFullerRunExceptWhereTheyPrecedeTheHandler() {
        var queue = RetryAndPolicyTests.queue(retry: nil)
        #expect(Session.consumeOptions(queue).settlement == .default)
        queue.ackPolicy = .ackFirst
        #expect(Session.consumeOptions(queue).settlement == .coalesced(holdBack: SettlementMode.defaultHoldBack, holdingRuns: false))
        queue.ackMode = .immediate
        #expect(Session.consumeOptions(queue).settlement == .immediate)
    }
}
