import Testing

@testable import AMQP

@Suite("ContentAssembler")
struct ContentAssemblerTests {
    private func deliver(_ tag: UInt64) -> ContentAssembler.Start {
        .deliver(.init(deliveryTag: tag, redelivered: false, exchange: "x", routingKey: "k"))
    }

    private func feed(_ assembler: inout ContentAssembler, _ bytes: [UInt8]) throws -> ContentAssembler.Message? {
        try bytes.withUnsafeBytes { buffer in try assembler.body(buffer) }
    }

    @Test func anEmptyBodyCompletesAtTheHeader() throws {
        var a = ContentAssembler()
        try a.begin(deliver(1))
        let message = try #require(try a.header(bodySize: 0, properties: BasicProperties(messageID: "m")))
        #expect(message.body.isEmpty)
        #expect(message.properties.messageID == "m")
        #expect(a.isIdle)
    }

    @Test func aCompletedDeliveryWaitsToBeTakenAsADeliveryAndNothingBeginsBeforeThat() throws {
        var a = ContentAssembler()
        try a.begin(.deliver(.init(deliveryTag: 9, redelivered: true, exchange: "ex", routingKey: "rk")))
        #expect(try !a.receiveHeader(bodySize: 3, properties: BasicProperties(messageID: "m")))
        #expect(a.completedDeliveryTag == nil, "not complete before its body")
        #expect(try [UInt8]([1, 2, 3]).withUnsafeBytes { try a.receiveBody($0) })
        #expect(a.isComplete && a.completedDeliveryTag == 9)
        #expect(throws: AMQPError.self, "the next method before the message was taken") { try a.begin(deliver(10)) }
        let delivery = a.takeDelivery(channel: 4, epoch: 2, consumerTag: "ctag")
        #expect(delivery.tag == DeliveryTag(channel: 4, epoch: 2, value: 9))
        #expect(delivery.redelivered && delivery.exchange == "ex" && delivery.routingKey == "rk" && delivery.consumerTag == "ctag")
        #expect(delivery.properties.messageID == "m" && delivery.body == [1, 2, 3] && delivery.oversizedBody == nil)
        #expect(a.isIdle && a.completedDeliveryTag == nil)
        try a.begin(deliver(10))
    }

    @Test func aCompletedReturnHasNoDeliveryTagAndIsTakenWhole() throws {
        var a = ContentAssembler()
        try a.begin(.returned(.init(replyCode: 312, replyText: "NO_ROUTE", exchange: "x", routingKey: "k")))
        #expect(try a.receiveHeader(bodySize: 0, properties: BasicProperties(messageID: "r")))
        #expect(a.isComplete && a.completedDeliveryTag == nil)
        let message = a.takeMessage()
        #expect(message.start == .returned(.init(replyCode: 312, replyText: "NO_ROUTE", exchange: "x", routingKey: "k")))
        #expect(message.properties.messageID == "r" && a.isIdle)
    }

    @Test func aBodyLargerThanOneFrameIsJoinedByteExact() throws {
        let frameMax = 131_072
        let payload = (0..<(3 * frameMax + 17)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var a = ContentAssembler()
        try a.begin(deliver(1))
        #expect(try a.header(bodySize: UInt64(payload.count), properties: BasicProperties()) == nil)
        var completed: ContentAssembler.Message?
        var offset = 0
        while offset < payload.count {
            let end = min(offset + frameMax - 8, payload.count)
            completed = try feed(&a, Array(payload[offset..<end]))
            #expect((completed == nil) == (end < payload.count))
            offset = end
        }
        #expect(try #require(completed).body == payload)
    }

    @Test func channelsAssembleIndependentlyWhenFramesInterleave() throws {
        var one = ContentAssembler()
        var two = ContentAssembler()
        try one.begin(deliver(1))
        try two.begin(deliver(7))
        _ = try one.header(bodySize: 4, properties: BasicProperties(type: "one"))
        _ = try two.header(bodySize: 2, properties: BasicProperties(type: "two"))
        let partial = try feed(&one, [1, 2])
        #expect(partial == nil)
        let second = try #require(try feed(&two, [9, 9]))
        let first = try #require(try feed(&one, [3, 4]))
        #expect(first.body == [1, 2, 3, 4])
        #expect(first.properties.type == "one")
        #expect(second.body == [9, 9])
        #expect(second.start == deliver(7))
    }

    @Test func aHeaderWithoutAMethodIsAProtocolError() {
        var a = ContentAssembler()
        #expect(throws: AMQPError.self) { try a.header(bodySize: 1, properties: BasicProperties()) }
    }

    @Test func moreBodyBytesThanAnnouncedIsAProtocolError() throws {
        var a = ContentAssembler()
        try a.begin(deliver(1))
        _ = try a.header(bodySize: 2, properties: BasicProperties())
        let error = #expect(throws: AMQPError.self) { try feed(&a, [1, 2, 3]) }
        #expect(error?.code == .protocolError)
    }

    @Test func aNewMethodBeforeTheBodyEndsIsAProtocolError() throws {
        var a = ContentAssembler()
        try a.begin(deliver(1))
        _ = try a.header(bodySize: 5, properties: BasicProperties())
        #expect(throws: AMQPError.self) { try a.begin(deliver(2)) }
    }

    @Test func resetForgetsAPartialMessage() throws {
        var a = ContentAssembler()
        try a.begin(deliver(1))
        _ = try a.header(bodySize: 5, properties: BasicProperties())
        a.reset()
        #expect(a.isIdle)
        try a.begin(deliver(2))
    }
}

extension ContentAssembler {
    /// The tests' view of a step: the message it completed, taken at once, as the loop takes it.
    mutating func header(bodySize: UInt64, properties: BasicProperties) throws(AMQPError) -> Message? {
        try receiveHeader(bodySize: bodySize, properties: properties) ? takeMessage() : nil
    }

    mutating func body(_ bytes: UnsafeRawBufferPointer) throws(AMQPError) -> Message? {
        try receiveBody(bytes) ? takeMessage() : nil
    }
}
