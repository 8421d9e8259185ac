import AMQP

extension RetryPlanner {
    /// Records where the message came from, once: a copy of a copy keeps the first origin.
    /// Written as long strings of the delivery's exact bytes (a routing key may hold any), so
    /// a parked message can be sent back to exactly where it was going.
    static func recordOrigin(of delivery: Delivery, in headers: inout FieldTable) {
        if headers[originalExchangeHeader] == nil { headers[originalExchangeHeader] = .longString(delivery.exchange) }
        if headers[originalRoutingKeyHeader] == nil { headers[originalRoutingKeyHeader] = .longString(delivery.routingKey) }
    }
}
