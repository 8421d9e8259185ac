/// What the ack policy says to do with a delivery after its handler ran (the table in docs/delivery.md).
/// Pure: the engine turns the action into publishes and a settlement.
public enum DeliveryAction: Sendable, Hashable {
    case ack
    /// `basic.nack` with requeue.
    case requeue
    /// Through the retry ladder (or dead-letter once attempts are exhausted).
    case retry(delay: Duration?)
    case deadLetter(DeadLetterReason)
    /// `ack_first`: the delivery was acked before the handler ran; nothing is left to do.
    case alreadySettled
}

public enum DeadLetterReason: String, Sendable, Hashable {
    case rejected
    case failed
    case attemptsExhausted = "attempts_exhausted"
    case unrouted
    case tooLarge = "too_large"
    /// A copy made while processing the message (its reply, an output, its retry copy) was
    /// refused by the broker for good: returned, nacked, or refused before sending.
    case publishFailed = "publish_failed"
}

extension AckPolicy {
    /// Whether the delivery is acked before the handler runs.
    public var acksBeforeHandling: Bool { self == .ackFirst }

    public func action(for outcome: HandlerOutcome) -> DeliveryAction {
        switch (self, outcome) {
        case (.ackFirst, _):
            return .alreadySettled
        case (_, .success):
            return .ack
        case (_, .verdict(let verdict, _, _, _)):
            switch verdict {
            case .ack: return .ack
            case .reject: return .deadLetter(.rejected)
            case .requeue: return .requeue
            case .retry(let delay): return .retry(delay: delay)
            }
        case (.ack, .failure):
            return .ack
        case (.rejectOnError, .failure):
            return .deadLetter(.failed)
        case (.nackOnError, .failure):
            return .retry(delay: nil)
        case (.manual, .failure):
            return .requeue
        }
    }
}
