import Testing

@testable import AMQP

/// Every transition of a channel's lifecycle, the odd orderings included, without a socket.
@Suite struct ChannelLifecycleTests {
    typealias Lifecycle = ChannelLifecycle

    @Test func aConsumerCancelledByUsEndsItsDeliveriesOnceAndStillSettlesUntilClosed() {
        var channel = Lifecycle(kind: .consumer, epoch: 7)
        #expect(channel.cancel(epoch: 7) == [.sendCancel])
        #expect(channel.cancelSent() == [.endDeliveries(.requested)])
        #expect(channel.accepts(settlementOf: 7), "deliveries received before the cancel stay settleable")
        #expect(channel.cancel(epoch: 7) == [], "a second cancel sends nothing")
        #expect(channel.cancelSent() == [])
    }

    @Test func aBrokerCancelDuringOursEndsTheStreamWithTheBrokersReasonAndOursThenDoesNothing() {
        var channel = Lifecycle(kind: .consumer, epoch: 1)
        #expect(channel.cancel(epoch: 1) == [.sendCancel])
        // While our basic.cancel waits for cancel-ok, the broker's basic.cancel arrives first.
        #expect(channel.brokerCancelled(noWait: false) == [.sendCancelOk, .endDeliveries(.cancelledByBroker), .reportCancelled])
        #expect(channel.cancelSent() == [], "the stream already ended")
        #expect(channel.isOpen)
    }

    @Test func aBrokerCancelAfterOursOnlyAnswersIt() {
        var channel = Lifecycle(kind: .consumer, epoch: 1)
        _ = channel.cancel(epoch: 1)
        _ = channel.cancelSent()
        #expect(channel.brokerCancelled(noWait: false) == [.sendCancelOk])
        #expect(channel.brokerCancelled(noWait: true) == [])
    }

    @Test func aCancelForAnEarlierIncarnationOrAClosedChannelSendsNothing() {
        var channel = Lifecycle(kind: .consumer, epoch: 2)
        #expect(channel.cancel(epoch: 1) == [])
        _ = channel.brokerClosed(answeringRPC: false)
        #expect(channel.cancel(epoch: 2) == [])
        #expect(Lifecycle(kind: .publisher, epoch: 3).cancel(epoch: 3) == [], "only consumers cancel")
    }

    @Test func theBrokerClosingAConsumerChannelDropsWhatIsUnsentEndsTheStreamAndForgetsIt() {
        var channel = Lifecycle(kind: .consumer, epoch: 4)
        #expect(channel.brokerClosed(answeringRPC: false) == [.discardUnsent, .endDeliveries(.channelClosed), .forget, .reportClosed])
        #expect(!channel.isOpen)
        #expect(!channel.accepts(settlementOf: 4), "acks for a closed channel are dropped: the broker requeued those deliveries")
        #expect(channel.brokerClosed(answeringRPC: false) == [], "a close after a close does nothing")
    }

    @Test func aBrokerCloseAfterTheBrokerCancelDoesNotEndTheStreamTwice() {
        var channel = Lifecycle(kind: .consumer, epoch: 4)
        _ = channel.brokerCancelled(noWait: true)
        #expect(channel.brokerClosed(answeringRPC: true) == [.discardUnsent, .forget])
    }

    @Test func ourCloseFlushesFirstThenForgetsAndEndsTheStreamOnCloseOk() {
        var channel = Lifecycle(kind: .consumer, epoch: 5)
        #expect(channel.close(epoch: 5) == [.flushAndSendClose])
        #expect(channel.sendsSettlements, "what was settled before the close still goes out")
        #expect(!channel.accepts(settlementOf: 5), "nothing new is accepted while closing")
        #expect(!channel.isOpen, "frames of a closing channel are dropped")
        #expect(channel.close(epoch: 5) == [], "a second close while closing does nothing")
        #expect(channel.closeSent() == [.forget, .endDeliveries(.requested)])
        #expect(!channel.sendsSettlements)
    }

    @Test func theBrokersCloseCrossingOursEndsTheChannelWithTheBrokersReasonAndCloseOkThenDoesNothing() {
        var channel = Lifecycle(kind: .consumer, epoch: 5)
        _ = channel.close(epoch: 5)
        // Our channel.close gets the broker's channel.close as its reply.
        #expect(channel.brokerClosed(answeringRPC: true) == [.discardUnsent, .endDeliveries(.channelClosed), .forget])
        #expect(channel.closeSent() == [])
    }

    @Test func closingAChannelTheBrokerClosedOnlyForgetsIt() {
        var channel = Lifecycle(kind: .getter, epoch: 6)
        #expect(channel.brokerClosed(answeringRPC: false) == [.discardUnsent, .failGet, .forget, .reportClosed])
        #expect(channel.close(epoch: 6) == [.forget])
        #expect(channel.close(epoch: 5) == [], "a close for another incarnation")
    }

    @Test func aPublisherChannelClosedByTheBrokerStaysAndReopensWithANewEpoch() {
        var channel = Lifecycle(kind: .publisher, epoch: 8)
        #expect(channel.brokerClosed(answeringRPC: false) == [.discardUnsent, .failInFlightPublishes, .reportClosed])
        #expect(!channel.isOpen)
        channel.reopened(epoch: 9)
        #expect(channel.isOpen && channel.epoch == 9)
        #expect(!channel.accepts(settlementOf: 8), "the old incarnation's tags never match the new one")
        channel.reopened(epoch: 10)
        #expect(channel.epoch == 9, "an open channel is not reopened")
    }

    @Test func theControlChannelIsForgottenWhenTheBrokerClosesIt() {
        var channel = Lifecycle(kind: .control, epoch: 1)
        #expect(channel.brokerClosed(answeringRPC: true) == [.discardUnsent, .forget])
        #expect(channel.subscription == .none)
    }

    @Test func aDeliveryGoesToTheReaderWhileSubscribedBackToTheQueueAfterAndNowhereOnceClosed() {
        var channel = Lifecycle(kind: .consumer, epoch: 1)
        #expect(channel.routeDelivery() == .reader)
        _ = channel.brokerCancelled(noWait: true)
        #expect(channel.routeDelivery() == .giveBack, "a deliver for a cancelled consumer goes straight back")
        _ = channel.brokerClosed(answeringRPC: false)
        #expect(channel.routeDelivery() == .drop)
        var closing = Lifecycle(kind: .consumer, epoch: 2)
        _ = closing.close(epoch: 2)
        #expect(closing.routeDelivery() == .drop, "the broker requeues what it sent to a channel we close")
    }
}
