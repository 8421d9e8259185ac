/// Assembles one channel's content sequence (a `basic.deliver` or `basic.return` method, then a
/// content header, then body frames) into one message.
///
/// librabbitmq's own `amqp_read_message` waits for the header and body with no timeout and can
/// drop frames of other channels (notes §0.4, §8), so Warren reads frames one at a time and keeps
/// one assembler per channel. Pure state: frames in, completed messages out.
struct ContentAssembler {
    struct DeliverMethod: Sendable, Equatable {
        var consumerTag: String
        var deliveryTag: UInt64
        var redelivered: Bool
        var exchange: AMQPString
        var routingKey: AMQPString
    }

    struct ReturnMethod: Sendable, Equatable {
        var replyCode: UInt16
        var replyText: String
        var exchange: String
        var routingKey: String
    }

    enum Start: Sendable, Equatable {
        case deliver(DeliverMethod)
        case returned(ReturnMethod)
    }

    struct Message: Sendable {
        var start: Start
        var properties: BasicProperties
        var body: [UInt8]
    }

    private enum Phase {
        case idle
        case awaitingHeader
        case awaitingBody
    }

    /// Never reserve more than this up front: the body size comes from the peer.
    static let maximumUpfrontReservation = 16 << 20

    private var phase: Phase = .idle
    private var start: Start?
    private var properties = BasicProperties()
    private var expectedSize = 0
    private var body: [UInt8] = []

    var isIdle: Bool { phase == .idle }

    /// A content-bearing method arrived; its header must come next.
    mutating func begin(_ start: Start) throws(AMQPError) {
        guard phase == .idle else {
            throw AMQPError(.protocolError, "a new content method arrived before the previous message's content was complete")
        }
        self.start = start
        phase = .awaitingHeader
    }

    /// The content header. A zero body size completes the message at once.
    mutating func header(bodySize: UInt64, properties: BasicProperties) throws(AMQPError) -> Message? {
        guard phase == .awaitingHeader else {
            throw AMQPError(.protocolError, "a content header arrived without a content method before it")
        }
        guard bodySize <= UInt64(Int.max) else {
            throw AMQPError(.protocolError, "a content header announced an impossible body size \(bodySize)")
        }
        self.properties = properties
        expectedSize = Int(bodySize)
        if expectedSize == 0 {
            return complete()
        }
        body = []
        body.reserveCapacity(min(expectedSize, Self.maximumUpfrontReservation))
        phase = .awaitingBody
        return nil
    }

    /// One body frame; the bytes are copied before this returns.
    mutating func body(_ bytes: UnsafeRawBufferPointer) throws(AMQPError) -> Message? {
        guard phase == .awaitingBody else {
            throw AMQPError(.protocolError, "a body frame arrived without a content header before it")
        }
        guard bytes.count <= expectedSize - body.count else {
            throw AMQPError(
                .protocolError,
                "body frames carried more than the \(expectedSize) bytes their header announced")
        }
        body.append(contentsOf: bytes)
        return body.count == expectedSize ? complete() : nil
    }

    /// Forget a partial message (its channel closed).
    mutating func reset() {
        phase = .idle
        start = nil
        body = []
    }

    private mutating func complete() -> Message {
        guard let start else {
            preconditionFailure("ContentAssembler completed a message in phase \(phase) without a start method")
        }
        let message = Message(start: start, properties: properties, body: body)
        phase = .idle
        self.start = nil
        body = []
        properties = BasicProperties()
        return message
    }
}
