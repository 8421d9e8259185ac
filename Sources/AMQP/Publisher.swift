import Foundation
import Synchronization

/// A confirm-mode channel. `publish` completes when the broker has confirmed, nacked or returned
/// the message, or when its deadline passes.
///
/// Mandatory publishes need a `message_id` to match a `basic.return` (it carries no delivery
/// tag): when the message has none, one is generated (`w.<process>.<n>`) and the
/// consumer sees it.
public struct Publisher: Sendable {
    public let connection: AMQPConnection
    public let channel: UInt16
    public let confirmTimeout: Duration

    public func publish(_ message: OutgoingMessage, timeout: Duration? = nil) async throws(AMQPError) -> PublishOutcome {
        let prepared = try prepare(message)
        let deadline = monotonicNanoseconds() &+ (timeout ?? confirmTimeout).nanoseconds
        let channel = channel
        let commands = connection.commands
        let result: Result<PublishOutcome, AMQPError> = await withCheckedContinuation { continuation in
            let waiter: CommandQueue.Waiter = { continuation.resume(returning: $0) }
            if let refused = commands.submit(CommandQueue.Publish(channel: channel, message: prepared, waiter: waiter, deadline: deadline)) {
                waiter(.failure(refused))
            }
        }
        return try result.get()
    }

    /// Queues the publish and returns at once; await the receipt for the outcome. Publishes
    /// submitted one after another from one task go out in that order (`publish` from
    /// concurrent tasks gives no such order).
    public func submit(_ message: OutgoingMessage, timeout: Duration? = nil) throws(AMQPError) -> PublishReceipt {
        let prepared = try prepare(message)
        let receipt = PublishReceipt()
        let deadline = monotonicNanoseconds() &+ (timeout ?? confirmTimeout).nanoseconds
        let waiter: CommandQueue.Waiter = { receipt.fulfil($0) }
        if let refused = connection.commands.submit(CommandQueue.Publish(channel: channel, message: prepared, waiter: waiter, deadline: deadline)) {
            waiter(.failure(refused))
        }
        return receipt
    }

    private func prepare(_ message: OutgoingMessage) throws(AMQPError) -> OutgoingMessage {
        var message = message
        if message.mandatory && message.properties.messageID == nil {
            message.properties.messageID = AMQPString(MessageIDs.next())
        }
        try Self.validate(message)
        try Self.validateHeaderFrame(message, frameMax: connection.negotiated.frameMax)
        return message
    }

    public func publish(
        exchange: String = "", routingKey: String, body: [UInt8], properties: BasicProperties = BasicProperties(),
        mandatory: Bool = true, timeout: Duration? = nil
    ) async throws(AMQPError) -> PublishOutcome {
        try await publish(
            OutgoingMessage(exchange: exchange, routingKey: routingKey, mandatory: mandatory, properties: properties, body: body),
            timeout: timeout)
    }

    /// Catch what the broker would answer by closing the channel, or what would break the frame
    /// stream, before it is sent.
    static func validate(_ message: OutgoingMessage) throws(AMQPError) {
        func short(_ value: String?, _ name: String) throws(AMQPError) {
            try short(value.map { AMQPString($0) }, name)
        }
        func short(_ value: AMQPString?, _ name: String) throws(AMQPError) {
            if let value, value.count > 255 {
                throw AMQPError(.invalidArgument, "\(name) is \(value.count) bytes long; AMQP allows at most 255")
            }
        }
        try short(message.exchange, "the exchange name")
        try short(message.routingKey, "the routing key")
        let p = message.properties
        try short(p.contentType, "content_type")
        try short(p.contentEncoding, "content_encoding")
        try short(p.correlationID, "correlation_id")
        try short(p.replyTo, "reply_to")
        try short(p.expiration, "expiration")
        try short(p.messageID, "message_id")
        try short(p.type, "type")
        try short(p.userID, "user_id")
        try short(p.appID, "app_id")
        try short(p.clusterID, "cluster_id")
        if let headers = p.headers {
            for entry in headers { try short(entry.key, "header name \"\(entry.key.description.prefix(40))\"") }
            if headers.holdsNonFiniteNumber {
                throw AMQPError(.invalidArgument, "a header holds a NaN or infinite number, which RabbitMQ cannot decode")
            }
        }
    }
}

extension Publisher {
    /// The content header must fit in one frame of the size negotiated with the broker (0: no
    /// limit). A copy that grew past it (a producer's headers near the limit, plus warren's own)
    /// is refused here, as a message that can never be sent.
    static func validateHeaderFrame(_ message: OutgoingMessage, frameMax: Int) throws(AMQPError) {
        let size = message.properties.headerFrameSize
        guard frameMax > 0, size > frameMax else { return }
        throw AMQPError(
            .invalidArgument,
            "the message's properties and headers take \(size) bytes, more than the \(frameMax)-byte frame negotiated with the broker")
    }
}

/// Message ids for mandatory publishes that came without one: unique per process run.
enum MessageIDs {
    private static let prefix = "w.\(String(UInt32.random(in: 0...UInt32.max), radix: 36)).\(ProcessInfo.processInfo.processIdentifier)."
    private static let counter = Atomic<UInt64>(0)

    static func next() -> String {
        prefix + String(counter.add(1, ordering: .relaxed).newValue, radix: 36)
    }
}

/// The outcome of a `Publisher.submit`, to await later.
public final class PublishReceipt: Sendable {
    private struct State {
        var result: Result<PublishOutcome, AMQPError>?
        var waiter: CheckedContinuation<Result<PublishOutcome, AMQPError>, Never>?
    }

    private let state = Mutex(State())

    func fulfil(_ result: Result<PublishOutcome, AMQPError>) {
        let waiter = state.withLock { state -> CheckedContinuation<Result<PublishOutcome, AMQPError>, Never>? in
            state.result = result
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: result)
    }

    public func outcome() async throws(AMQPError) -> PublishOutcome {
        let result: Result<PublishOutcome, AMQPError> = await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Result<PublishOutcome, AMQPError>? in
                if let result = state.result { return result }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
        return try result.get()
    }
}
