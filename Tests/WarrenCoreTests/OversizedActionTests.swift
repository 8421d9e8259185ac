import AMQP
import Testing

@testable import WarrenCore

/// What happens to a delivery over `max_body_size`, for each dead-letter target, with and
/// without its body at hand.
@Suite("Oversized delivery decisions")
struct OversizedActionTests {
    private let park = DeadLetterTarget.publish(exchange: "", routingKey: "q.dead")

    @Test func aBodyAtTheLimitIsNotOversized() {
        #expect(DeliveryProcessor.oversizedAction(bodySize: 1024, bodyKept: true, limit: 1024, deadLetter: park) == nil)
    }

    @Test func aBodyOverTheLimitWithItsSpoolIsCopiedToTheParkingDestination() {
        #expect(DeliveryProcessor.oversizedAction(bodySize: 1025, bodyKept: true, limit: 1024, deadLetter: park)
            == .publishCopy(exchange: "", routingKey: "q.dead"))
    }

    @Test func aBodyThatCouldNotBeSpooledIsHeldRatherThanParkedWithoutIt() {
        #expect(DeliveryProcessor.oversizedAction(bodySize: 1025, bodyKept: false, limit: 1024, deadLetter: park) == .hold)
    }

    @Test func withTheBrokersDeadLetterExchangeItIsRejectedWhetherOrNotItWasSpooled() {
        for kept in [true, false] {
            #expect(DeliveryProcessor.oversizedAction(bodySize: 1025, bodyKept: kept, limit: 1024, deadLetter: .broker) == .reject)
        }
    }

    @Test func withDropItIsDroppedWhetherOrNotItWasSpooled() {
        for kept in [true, false] {
            #expect(DeliveryProcessor.oversizedAction(bodySize: 1025, bodyKept: kept, limit: 1024, deadLetter: .drop) == .drop)
        }
    }
}

@Suite("Consumer options")
struct ConsumeOptionsTests {
    @Test func aQueuesConsumerIsOpenedWithItsMaxBodySize() {
        let queue = RetryAndPolicyTests.queue(retry: nil)
        #expect(Session.consumeOptions(queue).maxBodySize == queue.maxBodySize)
    }
}
