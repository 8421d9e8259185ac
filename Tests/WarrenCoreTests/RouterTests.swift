import AMQP
import Testing

@testable import WarrenCore

@Suite("Routing")
struct RouterTests {
    static func delivery(routingKey: String = "k", type: String? = nil, headers: FieldTable? = nil) -> Delivery {
        Delivery(
            tag: DeliveryTag(channel: 1, epoch: 1, value: 1), consumerTag: "c", redelivered: false, exchange: "x", routingKey: AMQPString(routingKey),
            properties: BasicProperties(headers: headers, type: type.map { AMQPString($0) }), body: [])
    }

    static let router = Router(.routes([
        Route(match: RouteMatch(type: "OrderCreated"), handlers: ["audit", "search"]),
        Route(match: RouteMatch(headers: ["x-kind": "refund"]), handlers: ["refunds"]),
        Route(match: RouteMatch(routingKey: "order.*.eu"), handlers: ["eu"]),
    ], unrouted: .deadLetter))

    @Test func theFirstMatchingRouteWins() {
        // Matches the type route and the routing-key route: the type route comes first.
        #expect(Self.router.handlers(for: Self.delivery(routingKey: "order.created.eu", type: "OrderCreated")) == ["audit", "search"])
        #expect(Self.router.handlers(for: Self.delivery(routingKey: "order.created.eu")) == ["eu"])
    }

    @Test func headersMatchAsTextWhateverTheirFieldType() {
        #expect(Self.router.handlers(for: Self.delivery(headers: ["x-kind": .string("refund")])) == ["refunds"])
        #expect(Self.router.handlers(for: Self.delivery(headers: ["x-kind": .bytes(Array("refund".utf8))])) == ["refunds"])
        let numeric = Router(.routes([Route(match: RouteMatch(headers: ["n": "7", "b": "true"]), handlers: ["h"])], unrouted: .ack))
        #expect(numeric.handlers(for: Self.delivery(headers: ["n": .int32(7), "b": .boolean(true)])) == ["h"])
        #expect(numeric.handlers(for: Self.delivery(headers: ["n": .int32(7)])) == nil)
    }

    @Test func aMessageThatMatchesNoRouteIsUnrouted() {
        #expect(Self.router.handlers(for: Self.delivery(routingKey: "order.created.us", type: "Other", headers: ["x-kind": .string("sale")])) == nil)
    }

    @Test func everyConditionOfAMatchMustHold() {
        let router = Router(.routes([Route(match: RouteMatch(type: "T", routingKey: "a.#"), handlers: ["h"])], unrouted: .ack))
        #expect(router.handlers(for: Self.delivery(routingKey: "a.b", type: "T")) == ["h"])
        #expect(router.handlers(for: Self.delivery(routingKey: "b.a", type: "T")) == nil)
        #expect(router.handlers(for: Self.delivery(routingKey: "a.b", type: "U")) == nil)
    }

    @Test(arguments: [
        ("order.*.eu", "order.created.eu", true), ("order.*.eu", "order.eu", false), ("order.*.eu", "order.a.b.eu", false),
        ("order.#", "order", true), ("order.#", "order.a.b", true), ("#.eu", "eu", true), ("#.eu", "a.b.eu", true),
        ("#", "", true), ("*", "a.b", false), ("a.#.z", "a.z", true), ("a.#.z", "a.b.c.z", true),
        ("a.#.z", "a.b.c", false), ("*.*", "a.b", true), ("a.b", "a.b", true), ("a.b", "a.bc", false),
    ])
    func topicPatternsFollowAMQPSemantics(pattern: String, key: String, matches: Bool) {
        #expect(Router.topicMatches(pattern: pattern, routingKey: key) == matches)
    }
}
