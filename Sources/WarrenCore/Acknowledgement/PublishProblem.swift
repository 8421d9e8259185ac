import AMQP

/// Why a publish made while processing an input (a reply, a handler's output, a retry or
/// dead-letter copy) did not end confirmed, and whether trying the same publish again could
/// succeed. The per-delivery decision (`DeliveryDecision`) reads only the class: a permanent
/// problem is a failure of the input's handling and goes through the ack policy; a transient one
/// puts the input back and makes its queue back off.
public struct PublishProblem: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        /// The broker refused this message, or would refuse every copy of it: returned as
        /// unroutable, nacked, a channel error naming its exchange (404 no such exchange, 403),
        /// a 406 about the message, or refused before sending (a field or the header frame too
        /// large). Publishing it again gives the same answer.
        case permanent
        /// The path to the broker is not there right now: no publisher connection, the
        /// connection blocked by a resource alarm (the confirm then times out), a confirm that
        /// never came, a connection lost mid-publish, or a channel closed because of another
        /// message's publish.
        case transient
    }

    public var kind: Kind
    /// A sentence for the log and the `x-warren-error` header: where it went and what happened.
    public var text: String

    public init(_ kind: Kind, _ text: String) {
        self.kind = kind
        self.text = text
    }

    public var isPermanent: Bool { kind == .permanent }
    public var description: String { text }

    /// The class of a broker's answer to a publish; nil when it was confirmed.
    public static func classify(_ outcome: PublishOutcome) -> Kind? {
        switch outcome {
        case .confirmed: nil
        case .returned, .nacked: .permanent
        case .timedOut: .transient
        }
    }

    /// The class of an error thrown by a publish to `exchange`. A channel closed by the broker is
    /// this message's fault when the reply names its exchange or when the broker refused the
    /// message itself (406); every other publish pending on that channel when it closed was only
    /// caught in the close, and is transient.
    public static func classify(_ error: AMQPError, exchange: String) -> Kind {
        switch error.code {
        case .invalidArgument:
            return .permanent
        case .channelClosed:
            if error.replyCode == 406 { return .permanent }
            if !exchange.isEmpty, (error.replyText ?? error.message).contains("'\(exchange)'") {
                return .permanent
            }
            return .transient
        default:
            return .transient
        }
    }
}
