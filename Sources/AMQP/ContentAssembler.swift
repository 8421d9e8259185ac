/// Assembles one channel's content sequence (a `basic.deliver` or `basic.return` method, then a
/// content header, then body frames) into one message.
///
/// librabbitmq's own `amqp_read_message` waits for the header and body with no timeout and can
/// drop frames of other channels, so Warren reads frames one at a time and keeps
/// one assembler per channel. Pure state: frames in, completed messages out.
struct ContentAssembler {
    /// A `basic.deliver` or `basic.get-ok`. The consumer tag is not kept: a consumer's channel
    /// knows its consumer, and a get has none.
    struct DeliverMethod: Sendable, Equatable {
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

    /// A completed message taken whole (`takeMessage`): a `basic.return`, or whatever a
    /// channel that consumes nothing received. A consumer's delivery is taken as a `Delivery`
    /// directly (`takeDelivery`).
    struct Message: Sendable {
        var start: Start
        var properties: BasicProperties
        /// Empty when `oversized` is set.
        var body: [UInt8]
        /// Set when the header announced more than `maxBodySize`: the body went to a spool
        /// file (or, if that failed, was counted and dropped), never into memory.
        var oversized: OversizedBody? = nil
    }

    private enum Phase {
        case idle
        case awaitingHeader
        case awaitingBody
        /// An oversized body: its frames are written to `spool` (or only counted once the spool
        /// failed, `spoolError`) as they arrive.
        case spoolingBody
        /// The message is complete and waits to be taken (`takeMessage`, `takeDelivery`).
        case complete
    }

    /// Never reserve more than this up front: the body size comes from the peer.
    static let maximumUpfrontReservation = 16 << 20

    /// Bodies announced larger than this are not assembled in memory but spooled (`nil`: no
    /// limit). Set for a consumer's channel from `ConsumeOptions.maxBodySize`.
    var maxBodySize: Int?
    /// Creates the spool file for an oversized body of the given size. A seam for tests.
    var openSpool: (Int) throws(AMQPError) -> SpooledBody = { size throws(AMQPError) in try SpooledBody.create(size: size) }

    private var phase: Phase = .idle
    private var start: Start?
    /// Set by the header, taken by the message it completes.
    private var properties: BasicProperties?
    private var expectedSize = 0
    private var body: [UInt8] = []
    /// Bytes of an oversized body received so far.
    private var spooledCount = 0
    private var spool: SpooledBody?
    private var spoolError: AMQPError?
    /// A completed oversized body's size and spool, until the message is taken.
    private var completedOversized: OversizedBody?

    init(maxBodySize: Int? = nil) {
        self.maxBodySize = maxBodySize
    }

    var isIdle: Bool { phase == .idle }
    /// A message is complete and has not been taken yet.
    var isComplete: Bool { phase == .complete }
    /// Between the header and the last body frame of an oversized message.
    var isSpooling: Bool { phase == .spoolingBody }

    /// A content-bearing method arrived; its header must come next.
    mutating func begin(_ start: consuming Start) throws(AMQPError) {
        guard phase == .idle else {
            throw AMQPError(.protocolError, "a new content method arrived before the previous message's content was complete")
        }
        self.start = consume start
        phase = .awaitingHeader
    }

    /// The content header; whether it completes the message (a zero body size). A size over
    /// `maxBodySize` sends the body to a spool file instead of memory.
    ///
    /// A message is left in place when it completes, to be taken: a completed message handed
    /// back up through the calls (an optional of about 120 bytes) was copied at each return.
    mutating func receiveHeader(bodySize: UInt64, properties: BasicProperties) throws(AMQPError) -> Bool {
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
        if let maxBodySize, expectedSize > maxBodySize {
            // Decided here, from the announced size, before any of the body is buffered.
            spooledCount = 0
            do {
                spool = try openSpool(expectedSize)
                spoolError = nil
            } catch {
                spool = nil
                spoolError = error
            }
            phase = .spoolingBody
            return false
        }
        // Reserved by the first body frame (`receiveBody`), which usually carries it all.
        body = []
        phase = .awaitingBody
        return false
    }

    /// One body frame; whether it completes the message. The bytes are copied before this returns.
    mutating func receiveBody(_ bytes: UnsafeRawBufferPointer) throws(AMQPError) -> Bool {
        if phase == .spoolingBody {
            return try spoolBody(bytes)
        }
        guard phase == .awaitingBody else {
            throw AMQPError(.protocolError, "a body frame arrived without a content header before it")
        }
        guard bytes.count <= expectedSize - body.count else {
            throw AMQPError(
                .protocolError,
                "body frames carried more than the \(expectedSize) bytes their header announced")
        }
        if body.isEmpty {
            if bytes.count == expectedSize {
                // The whole body in one frame: one allocation of its size and one copy.
                body = [UInt8](bytes)
                return complete()
            }
            body.reserveCapacity(min(expectedSize, Self.maximumUpfrontReservation))
        }
        body.append(contentsOf: bytes)
        return body.count == expectedSize ? complete() : false
    }

    /// One body frame of an oversized message: written to the spool file, never kept here.
    /// A write that fails (disk full) drops the spool; the rest of the body is only counted, so
    /// the frame sequence stays in step and the delivery still completes, without its body.
    private mutating func spoolBody(_ bytes: UnsafeRawBufferPointer) throws(AMQPError) -> Bool {
        guard bytes.count <= expectedSize - spooledCount else {
            throw AMQPError(
                .protocolError,
                "body frames carried more than the \(expectedSize) bytes their header announced")
        }
        spooledCount += bytes.count
        if let file = spool {
            do {
                try file.append(bytes)
            } catch {
                spool = nil
                spoolError = error
            }
        }
        return spooledCount == expectedSize ? complete() : false
    }

    /// Forget a partial message (its channel closed).
    mutating func reset() {
        phase = .idle
        start = nil
        properties = nil
        body = []
        spool = nil
        spoolError = nil
        spooledCount = 0
        completedOversized = nil
    }

    /// The body is all there (or all spooled): the message waits to be taken.
    private mutating func complete() -> Bool {
        if phase == .spoolingBody {
            completedOversized = OversizedBody(
                size: expectedSize, spool: spool.map { .success($0) } ?? .failure(spoolError ?? AMQPError(.spoolFailed, "the body was not spooled")))
        }
        phase = .complete
        spool = nil
        spoolError = nil
        spooledCount = 0
        return true
    }

    /// The tag of the completed message if it is a `basic.deliver` or `basic.get-ok`; nil for a
    /// `basic.return`, or when no message is complete.
    var completedDeliveryTag: UInt64? {
        guard phase == .complete, case .deliver(let method) = start else { return nil }
        return method.deliveryTag
    }

    /// The completed message, taken whole; the assembler is idle again.
    mutating func takeMessage() -> Message {
        guard phase == .complete, let start = start.take() else {
            preconditionFailure("ContentAssembler: no completed message to take (phase \(phase))")
        }
        phase = .idle
        var body: [UInt8] = []
        swap(&body, &self.body)
        return Message(start: start, properties: properties.take() ?? BasicProperties(), body: body, oversized: completedOversized.take())
    }

    /// The completed `basic.deliver` or `basic.get-ok` as a delivery; the assembler is idle
    /// again. Its parts are moved (`take`, `swap`) into the delivery, not copied and reset: a
    /// copy retains every string and buffer once more, and the reset releases them again. Only
    /// when `completedDeliveryTag` is set; the caller checks.
    mutating func takeDelivery(channel: UInt16, epoch: UInt64, consumerTag: String) -> Delivery {
        guard phase == .complete, case .deliver(let method) = start.take() else {
            preconditionFailure("ContentAssembler: no completed delivery to take (phase \(phase))")
        }
        phase = .idle
        var body: [UInt8] = []
        swap(&body, &self.body)
        return Delivery(
            tag: DeliveryTag(channel: channel, epoch: epoch, value: method.deliveryTag), consumerTag: consumerTag,
            redelivered: method.redelivered, exchange: method.exchange, routingKey: method.routingKey,
            properties: properties.take() ?? BasicProperties(), body: body, oversizedBody: completedOversized.take())
    }
}
