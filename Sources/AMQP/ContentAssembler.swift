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

    struct Message: Sendable {
        var start: Start
        /// Optional inside so that `takeDelivery` can take them without putting an empty
        /// value (a lazily made global, retained) in their place.
        private var taken: BasicProperties?
        var properties: BasicProperties { taken ?? BasicProperties() }
        /// Empty when `oversized` is set.
        var body: [UInt8]
        /// Set when the header announced more than `maxBodySize`: the body went to a spool
        /// file (or, if that failed, was counted and dropped), never into memory.
        var oversized: OversizedBody? = nil

        init(start: Start, properties: BasicProperties, body: [UInt8], oversized: OversizedBody? = nil) {
            self.start = start
            taken = properties
            self.body = body
            self.oversized = oversized
        }

        /// The tag of a `basic.deliver` or `basic.get-ok`; nil for a `basic.return`.
        var deliveryTag: UInt64? {
            guard case .deliver(let method) = start else { return nil }
            return method.deliveryTag
        }

        /// Moves the message into a delivery: swapped out, its strings and buffers are not
        /// retained once more for the delivery and released again when the message ends (a
        /// `consuming` method would still copy them). Only for a message whose `deliveryTag` is
        /// set; the caller checks. Not optional: binding an optional result copies it once more.
        mutating func takeDelivery(channel: UInt16, epoch: UInt64, consumerTag: String) -> Delivery {
            var start = Start.deliver(DeliverMethod(deliveryTag: 0, redelivered: false, exchange: "", routingKey: ""))
            swap(&start, &self.start)
            guard case .deliver(let method) = consume start else {
                preconditionFailure("a basic.return taken as a delivery")
            }
            var body: [UInt8] = []
            swap(&body, &self.body)
            return Delivery(
                tag: DeliveryTag(channel: channel, epoch: epoch, value: method.deliveryTag), consumerTag: consumerTag,
                redelivered: method.redelivered, exchange: method.exchange, routingKey: method.routingKey,
                properties: taken.take() ?? BasicProperties(), body: body, oversizedBody: oversized.take())
        }
    }

    private enum Phase {
        case idle
        case awaitingHeader
        case awaitingBody
        /// An oversized body: its frames are written to `spool` (or only counted once the spool
        /// failed, `spoolError`) as they arrive.
        case spoolingBody
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

    init(maxBodySize: Int? = nil) {
        self.maxBodySize = maxBodySize
    }

    var isIdle: Bool { phase == .idle }
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

    /// The content header. A zero body size completes the message at once; a size over
    /// `maxBodySize` sends the body to a spool file instead of memory.
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
            return nil
        }
        // Reserved by the first body frame (`body(_:)`), which usually carries it all.
        body = []
        phase = .awaitingBody
        return nil
    }

    /// One body frame; the bytes are copied before this returns.
    mutating func body(_ bytes: UnsafeRawBufferPointer) throws(AMQPError) -> Message? {
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
        return body.count == expectedSize ? complete() : nil
    }

    /// One body frame of an oversized message: written to the spool file, never kept here.
    /// A write that fails (disk full) drops the spool; the rest of the body is only counted, so
    /// the frame sequence stays in step and the delivery still completes, without its body.
    private mutating func spoolBody(_ bytes: UnsafeRawBufferPointer) throws(AMQPError) -> Message? {
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
        return spooledCount == expectedSize ? complete() : nil
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
    }

    private mutating func complete() -> Message {
        // Moved out (`take`, `swap`), not copied then reset: a copy retains every string and
        // buffer of the message once more, and the reset releases them again.
        guard let start = start.take() else {
            preconditionFailure("ContentAssembler completed a message in phase \(phase) without a start method")
        }
        var oversized: OversizedBody?
        if phase == .spoolingBody {
            let kept: Result<SpooledBody, AMQPError>
            if let spool {
                kept = .success(spool)
            } else {
                kept = .failure(spoolError ?? AMQPError(.spoolFailed, "the body was not spooled"))
            }
            oversized = OversizedBody(size: expectedSize, spool: kept)
        }
        var body: [UInt8] = []
        swap(&body, &self.body)
        let properties = self.properties.take() ?? BasicProperties()
        phase = .idle
        spool = nil
        spoolError = nil
        spooledCount = 0
        return Message(start: start, properties: properties, body: body, oversized: oversized)
    }
}
