/// What the broker said about one publish made in confirm mode.
public enum PublishOutcome: Sendable, Hashable, CustomStringConvertible {
    /// `basic.ack`: the broker took responsibility for the message.
    case confirmed
    /// `basic.return` then `basic.ack`: a mandatory publish that no queue was bound to receive.
    case returned(replyCode: UInt16, replyText: String)
    /// `basic.nack`: the broker could not take the message (an internal error, a queue limit
    /// with `reject-publish`).
    case nacked
    /// No confirm within the publish's deadline. The message may or may not have been routed.
    case timedOut

    public var description: String {
        switch self {
        case .confirmed: "confirmed"
        case .returned(let code, let text): "returned (\(code) \(text))"
        case .nacked: "nacked"
        case .timedOut: "timed out"
        }
    }
}
