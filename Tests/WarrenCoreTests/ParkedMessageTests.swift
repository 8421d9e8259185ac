import AMQP
import Foundation
import Testing
@testable import WarrenCore

@Suite struct ParkedMessageTests {
    static func parked(_ headers: FieldTable, messageID: String? = "m-1", body: String = "hello") -> ParkedMessage {
        ParkedMessage(Delivery(
            tag: DeliveryTag(channel: 1, epoch: 0, value: 1), consumerTag: "", redelivered: false, exchange: "", routingKey: "orders.dead",
            properties: BasicProperties(headers: headers, messageID: messageID.map { AMQPString($0) }), body: Array(body.utf8)))
    }

    static let forensic: FieldTable = [
        "x-warren-reason": "failed", "x-warren-handler": "billing", "x-warren-attempts": .int64(5),
        "x-warren-error": "exit code 3: boom\nsecond line", "x-warren-failed-at": "2026-12-07T04:14:58.416Z",
        "x-warren-original-exchange": "shop", "x-warren-original-routing-key": "order.created", "x-warren-attempt": .int64(5),
        "x-warren-stderr-tail": "boom", "x-delivery-count": .int64(2), "x-kind": "refund",
    ]

    @Test func readsWarrensForensicHeaders() throws {
        let message = Self.parked(Self.forensic)
        #expect(message.isWarrens)
        #expect(message.reason == "failed")
        #expect(message.handler == "billing")
        #expect(message.attempts == 5)
        #expect(message.errorLine == "exit code 3: boom")
        #expect(message.originalExchange == "shop")
        #expect(message.originalRoutingKey == "order.created")
        #expect(message.bodyBytes == 5)
        let at = try #require(message.failedAtDate)
        #expect(abs(at.timeIntervalSince1970 - 1_796_616_898.416) < 0.001)
    }

    @Test func aMessageWarrenDidNotParkReadsAsUnknownAndIllTypedHeadersAsAbsent() {
        let message = Self.parked(["x-warren-handler": .int64(7), "x-warren-attempts": "many", "x-warren-failed-at": "yesterday"])
        #expect(!message.isWarrens)
        #expect(message.reason == "unknown")
        #expect(message.handler == nil)
        #expect(message.attempts == nil)
        #expect(message.failedAtDate == nil)
        #expect(message.replayCopy() == nil, "no original destination")
    }

    @Test func aReplayGoesToTheOriginalDestinationWithoutWarrensHeadersAndCountsReplays() throws {
        let copy = try #require(Self.parked(Self.forensic).replayCopy())
        #expect(copy.exchange == "shop")
        #expect(copy.routingKey == AMQPString("order.created"))
        #expect(copy.mandatory)
        #expect(copy.body == Array("hello".utf8))
        let headers = try #require(copy.properties.headers)
        #expect(headers.entries.map { $0.key.text ?? "" } == ["x-kind", "x-warren-replays"])
        #expect(headers["x-warren-replays"] == .int64(1))
        #expect(copy.properties.messageID == AMQPString("m-1"))
        #expect(RetryPlanner.attempt(headers: copy.properties.headers) == 1, "its attempts start again at 1")

        var again = Self.forensic
        again["x-warren-replays"] = .int64(2)
        #expect(Self.parked(again).replayCopy()?.properties.headers?["x-warren-replays"] == .int64(3))
        again["x-warren-replays"] = .int64(.max)
        #expect(Self.parked(again).replayCopy()?.properties.headers?["x-warren-replays"] == .int64(.max), "saturates")
    }

    @Test func toQueueSendsItThroughTheDefaultExchange() throws {
        let copy = try #require(Self.parked(["x-kind": "refund"]).replayCopy(toQueue: "orders"))
        #expect(copy.exchange == "")
        #expect(copy.routingKey == AMQPString("orders"))
    }

    @Test func filtersCombine() {
        let message = Self.parked(Self.forensic)
        #expect(ParkedSelection().matches(message))
        #expect(ParkedSelection(reason: "failed", handler: "billing", messageID: "m-1").matches(message))
        #expect(!ParkedSelection(reason: "failed", handler: "other").matches(message))
        #expect(!ParkedSelection(messageID: "m-2").matches(message))
        #expect(ParkedSelection(parkedBefore: Date(timeIntervalSince1970: 1_796_700_000)).matches(message))
        #expect(!ParkedSelection(parkedBefore: Date(timeIntervalSince1970: 1_796_600_000)).matches(message))
        #expect(!ParkedSelection(parkedBefore: Date()).matches(Self.parked([:])), "no readable failed_at: never older")
    }
}
