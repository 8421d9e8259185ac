import AMQP
import Testing

@testable import WarrenCore

@Suite("Consumer options")
struct ConsumeOptionsTests {
    @Test func aQueuesConsumerIsOpenedWithItsMaxBodySize() {
        let queue = RetryAndPolicyTests.queue(retry: nil)
        #expect(Session.consumeOptions(queue).maxBodySize == queue.maxBodySize)
    }
}
