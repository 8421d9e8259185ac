import AMQP
import Foundation
import Logging

/// What warren does with one delivery once it knows how processing went: which copies to publish
/// (the handler's outputs and reply, a retry copy, a dead-letter copy, a reduced dead-letter
/// copy), and, from how each publish ended, how to settle the input. Pure: events in, actions
/// out; the engine (`DeliveryProcessor`) publishes, settles and logs.
///
/// The rule it keeps (docs/delivery.md, "When a publish fails"): nothing is acked before its
/// copies are confirmed, and no message can make warren loop. A publish that fails permanently
/// counts as a failure of the input's handling and goes through the ack policy (retry ladder,
/// then parked), never straight back to the queue. A transient failure puts the input back and
/// tells its queue to back off. When even the park copy is refused, a reduced copy is tried,
/// then the queue's broker dead-letter exchange, and as a last resort the delivery is held
/// unacked (the broker keeps it) with one error logged.
struct DeliveryDecision {
    /// What the decision needs to know about the queue and the delivery.
    struct Context {
        /// The queue's configuration, shared by every delivery of its consumer rather than
        /// copied (with a reference count per field) for each.
        let shared: Shared<QueueConfiguration>
        var queue: QueueConfiguration { shared.value }
        var delivery: Delivery
        var attempt: Int
        /// When the copies are stamped (`x-warren-failed-at`); nil reads the clock when a
        /// dead-letter copy is made, so a message that is simply handled costs no clock read.
        var now: Date? = nil
        /// The delivery's trace context, which its retry and dead-letter copies carry forward
        /// (docs/tracing.md); nil leaves the copies' headers as the input's.
        var trace: MessageTrace? = nil

        init(queue: Shared<QueueConfiguration>, delivery: Delivery, attempt: Int, now: Date? = nil, trace: MessageTrace? = nil) {
            (self.shared, self.delivery, self.attempt, self.now, self.trace) = (queue, delivery, attempt, now, trace)
        }

        init(queue: QueueConfiguration, delivery: Delivery, attempt: Int, now: Date? = nil, trace: MessageTrace? = nil) {
            self.init(queue: Shared(queue), delivery: delivery, attempt: attempt, now: now, trace: trace)
        }
    }

    /// What started the decision.
    enum Trigger {
        /// The body is above `max_body_size`: parked without running a handler. `bodyLost`: it
        /// could not be kept (the spool file failed), so no copy can carry it.
        case tooLarge(bodySize: Int, bodyLost: Bool = false)
        /// No route matched.
        case unrouted
        /// The handlers ran. `handler` names the one that decided a non-success outcome (or the
        /// only one); `outputs` are the reply and publishes a success produces.
        case handled(HandlerOutcome, handler: String?, outputs: [OutgoingMessage])
    }

    /// Why a batch of copies is published; the engine reports its result with `published`.
    enum Purpose: Sendable, Hashable {
        /// The reply and the handlers' outputs, before the input is acked.
        case outputs
        /// The outputs of an input `ack_first` already acked: a failure can only be logged.
        case outputsAfterAck
        /// The copy to a delay queue of the retry ladder.
        case retryCopy
        /// The copy to the dead-letter destination, with the forensic headers.
        case parkCopy
        /// The dead-letter copy again, with warren's own headers cut short.
        case reducedParkCopy
    }

    /// A log line the decision asks for: a constant message, data in metadata.
    struct Event: Sendable, Equatable {
        var level: Logger.Level
        var message: String
        var error: String?
        var reason: DeadLetterReason?
        var destination: String?
        /// The retry delay, for "message scheduled for retry".
        var retryIn: Duration?
    }

    enum Action {
        /// Publish these and report the result with `published(_:)`.
        case publish([OutgoingMessage], Purpose)
        /// Settle the input. `backOff`: the failure was transient, and the queue should stop
        /// taking deliveries until the publisher is healthy again.
        case settle(Disposition, MessageOutcome, Event, backOff: Bool = false)
        /// Nothing more to send: `ack_first` acked the input before its handler ran.
        case finished(Event)
        /// Keep the delivery unacked: no copy could be parked and no broker dead-letter exchange
        /// takes it. The broker redelivers it when the channel closes.
        case hold(Event)
    }

    /// Boxed: only a delivery whose decision publishes gets past `idle`, and the decision is
    /// copied into what a suspended delivery keeps.
    private indirect enum State {
        case idle
        /// Outputs are out; on confirm, ack with this event.
        case awaitingOutputs(success: Event, afterAck: Bool, outcome: HandlerOutcome, handler: String?)
        case awaitingRetryCopy(Event)
        case awaitingParkCopy(Park)
        case awaitingReducedParkCopy(Park)
        case done
    }

    /// A dead-lettering in progress: what goes in the forensic headers.
    private struct Park {
        var reason: DeadLetterReason
        var error: String
        var handler: String?
        var failure: HandlerFailure?
        var exchange: String
        var routingKey: String
    }

    let context: Context
    private var state = State.idle

    init(_ context: Context) {
        self.context = context
    }

    private var queue: QueueConfiguration { context.queue }

    // MARK: events

    mutating func start(_ trigger: Trigger) -> Action {
        precondition(isIdle, "DeliveryDecision.start called in state \(state)")
        switch trigger {
        case .tooLarge(let size, let bodyLost):
            let error = "the body of \(size) bytes exceeds max_body_size (\(queue.maxBodySize))"
            if bodyLost, case .publish(let exchange, let routingKey) = queue.deadLetter {
                // A copy without the body would lose the message: the broker's own dead-lettering
                // (which has the body) or nothing.
                let park = Park(reason: .tooLarge, error: error, handler: nil, failure: nil, exchange: exchange, routingKey: routingKey)
                return parkingImpossible(park, PublishProblem(.permanent, "the body could not be spooled to a temporary file"))
            }
            return deadLetter(.tooLarge, error: error, handler: nil, failure: nil)
        case .unrouted:
            guard case .routes(_, let action) = queue.target else {
                return deadLetter(.unrouted, error: "no route matched", handler: nil, failure: nil)
            }
            switch action {
            case .deadLetter:
                return deadLetter(.unrouted, error: "no route matched", handler: nil, failure: nil)
            case .ack:
                return settle(.ack, .acked, Event(level: .warning, message: "unrouted message acked"))
            case .reject:
                return settle(.reject(requeue: false), .rejected, Event(level: .warning, message: "unrouted message rejected"))
            }
        case .handled(let outcome, let handler, let outputs):
            return handled(outcome, handler: handler, outputs: outputs)
        }
    }

    /// How the publish of the last `.publish` action ended: nil when every copy was confirmed.
    mutating func published(_ problem: PublishProblem?) -> Action {
        switch state {
        case .idle, .done:
            preconditionFailure("DeliveryDecision.published called in state \(state)")
        case .awaitingOutputs(let success, let afterAck, let outcome, let handler):
            guard let problem else {
                return afterAck ? finish(success) : settle(.ack, .acked, success)
            }
            if afterAck {
                return finish(Event(level: .error, message: "publish not confirmed after ack_first acked the message", error: problem.text))
            }
            guard problem.isPermanent else { return backOff(problem) }
            return outputsRefused(problem, outcome: outcome, handler: handler)
        case .awaitingRetryCopy(let scheduled):
            guard let problem else { return settle(.ack, .retried, scheduled) }
            guard problem.isPermanent else { return backOff(problem) }
            // The ladder itself cannot take the message (its delay queue is gone, say): park it
            // rather than put it back where it would fail the same way.
            return deadLetter(.publishFailed, error: "retry copy not published: \(problem.text)", handler: nil, failure: nil)
        case .awaitingParkCopy(let park):
            guard let problem else { return parked(park) }
            guard problem.isPermanent else { return backOff(problem) }
            state = .awaitingReducedParkCopy(park)
            return .publish([reducedParkCopy(park, refusal: problem.text)], .reducedParkCopy)
        case .awaitingReducedParkCopy(let park):
            guard let problem else { return parked(park) }
            guard problem.isPermanent else { return backOff(problem) }
            return parkingImpossible(park, problem)
        }
    }

    // MARK: the ack policy

    private var isIdle: Bool {
        if case .idle = state { true } else { false }
    }

    private mutating func handled(_ outcome: HandlerOutcome, handler: String?, outputs: [OutgoingMessage]) -> Action {
        if let action = Self.settlesAtOnce(outcome, outputs: outputs, policy: queue.ackPolicy) {
            state = .done
            return action
        }
        switch queue.ackPolicy.action(for: outcome) {
        case .alreadySettled:
            return publishOutputs(outputs, success: Self.handledEvent(outcome, afterAck: true), afterAck: true, outcome: outcome, handler: handler)
        case .ack:
            return publishOutputs(outputs, success: Self.handledEvent(outcome, afterAck: false), afterAck: false, outcome: outcome, handler: handler)
        case .requeue:
            return settle(.nack(requeue: true), .requeued, Self.requeuedEvent(outcome))
        case .retry(let delay):
            return retry(delay: delay, error: Self.errorText(outcome) ?? "retry verdict", handler: handler, failure: Self.details(outcome))
        case .deadLetter(let reason):
            return deadLetter(reason, error: Self.errorText(outcome) ?? reason.rawValue, handler: handler, failure: Self.details(outcome))
        }
    }

    /// The whole decision for a handled delivery when it needs nothing of the delivery itself:
    /// nothing to publish first, no copy to make (an ack, a requeue, or nothing more after
    /// `ack_first`). `start(.handled(...))` returns the same action; this lets the engine skip
    /// making a decision (and copying the delivery into it) for most messages. Nil when the
    /// decision has more to do.
    static func settlesAtOnce(_ outcome: HandlerOutcome, outputs: [OutgoingMessage], policy: AckPolicy) -> Action? {
        switch policy.action(for: outcome) {
        case .alreadySettled:
            // A failure publishes nothing: its outputs are none.
            if case .failure = outcome { return .finished(handledEvent(outcome, afterAck: true)) }
            return outputs.isEmpty ? .finished(handledEvent(outcome, afterAck: true)) : nil
        case .ack:
            return outputs.isEmpty ? .settle(.ack, .acked, handledEvent(outcome, afterAck: false)) : nil
        case .requeue:
            return .settle(.nack(requeue: true), .requeued, requeuedEvent(outcome))
        case .retry, .deadLetter:
            return nil
        }
    }

    /// What is logged when the handling ends in an ack (or after `ack_first`'s ack).
    private static func handledEvent(_ outcome: HandlerOutcome, afterAck: Bool) -> Event {
        guard case .failure(let failure) = outcome else { return Event(level: .debug, message: "message handled") }
        if afterAck { return Event(level: .warning, message: "handler failed after ack_first acked the message", error: failure.error) }
        return Event(level: .warning, message: "handler failed; acked anyway (ack_policy = ack)", error: failure.error)
    }

    private static func requeuedEvent(_ outcome: HandlerOutcome) -> Event {
        Event(level: .warning, message: "message requeued", error: errorText(outcome) ?? "requeue verdict")
    }

    private mutating func publishOutputs(
        _ outputs: [OutgoingMessage], success: Event, afterAck: Bool, outcome: HandlerOutcome, handler: String?
    ) -> Action {
        guard !outputs.isEmpty else {
            return afterAck ? finish(success) : settle(.ack, .acked, success)
        }
        state = .awaitingOutputs(success: success, afterAck: afterAck, outcome: outcome, handler: handler)
        return .publish(outputs, afterAck ? .outputsAfterAck : .outputs)
    }

    /// A reply or output the broker will never take: a failure of the input's handling. It goes
    /// through the ladder (or is parked) under every policy that would otherwise requeue it;
    /// `ack_policy = "ack"` acks it, as it acks every failure.
    private mutating func outputsRefused(_ problem: PublishProblem, outcome: HandlerOutcome, handler: String?) -> Action {
        let error = "output not published: \(problem.text)"
        switch queue.ackPolicy {
        case .ack:
            return settle(.ack, .acked, Event(level: .warning, message: "output not published; acked anyway (ack_policy = ack)", error: error))
        case .rejectOnError:
            return deadLetter(.publishFailed, error: error, handler: handler, failure: nil)
        case .nackOnError, .manual, .ackFirst:
            // Without a ladder a retry would be a requeue, and the same reply would be refused
            // again on every redelivery: park it.
            guard queue.retry != nil else { return deadLetter(.publishFailed, error: error, handler: handler, failure: nil) }
            return retry(delay: nil, error: error, handler: handler, failure: nil)
        }
    }

    private mutating func retry(delay: Duration?, error: String, handler: String?, failure: HandlerFailure?) -> Action {
        switch RetryPlanner.step(queue: queue, attempt: context.attempt, requestedDelay: delay) {
        case .requeue:
            return settle(.nack(requeue: true), .requeued, Event(level: .warning, message: "message requeued (retry = false)", error: error))
        case .deadLetter(let reason):
            return deadLetter(reason, error: error, handler: handler, failure: failure)
        case .delay(let delayQueue, let step, let nextAttempt):
            let copy = traced(RetryPlanner.retryCopy(of: context.delivery, delayQueue: delayQueue, nextAttempt: nextAttempt))
            state = .awaitingRetryCopy(Event(level: .warning, message: "message scheduled for retry", error: error, retryIn: step))
            return .publish([copy], .retryCopy)
        }
    }

    // MARK: dead-lettering

    private mutating func deadLetter(_ reason: DeadLetterReason, error: String, handler: String?, failure: HandlerFailure?) -> Action {
        switch queue.deadLetter {
        case .publish(let exchange, let routingKey):
            let park = Park(reason: reason, error: error, handler: handler, failure: failure, exchange: exchange, routingKey: routingKey)
            state = .awaitingParkCopy(park)
            return .publish([parkCopy(park)], .parkCopy)
        case .broker:
            return settle(.reject(requeue: false), .rejected, Event(
                level: .warning, message: "message rejected to the broker's dead-letter exchange", error: error, reason: reason))
        case .drop:
            return settle(.ack, .dropped, Event(level: .warning, message: "message dropped (dead_letter = drop)", error: error, reason: reason))
        }
    }

    /// A copy of the input with the delivery's trace context, replacing whatever `traceparent`
    /// the input had (it may be invalid: this trace then replaced it).
    private func traced(_ copy: OutgoingMessage) -> OutgoingMessage {
        context.trace?.stamped(copy, replacing: true) ?? copy
    }

    private func parkCopy(_ park: Park) -> OutgoingMessage {
        traced(RetryPlanner.deadLetterCopy(
            of: context.delivery, exchange: park.exchange, routingKey: park.routingKey, reason: park.reason, error: park.error,
            handler: park.handler, attempts: context.attempt, failure: park.failure, now: context.now ?? Date()))
    }

    /// The park copy with warren's own headers cut to what fits anywhere: the producer's headers
    /// and body stay whole.
    private func reducedParkCopy(_ park: Park, refusal: String) -> OutgoingMessage {
        traced(RetryPlanner.deadLetterCopy(
            of: context.delivery, exchange: park.exchange, routingKey: park.routingKey, reason: park.reason,
            error: RetryPlanner.shortened(park.error, to: RetryPlanner.reducedErrorLimit), handler: park.handler.map { RetryPlanner.shortened($0, to: 64) },
            attempts: context.attempt, failure: park.failure.map(RetryPlanner.reduced), now: context.now ?? Date()))
    }

    private mutating func parked(_ park: Park) -> Action {
        settle(.ack, .deadLettered, Event(
            level: .warning, message: "message dead-lettered", error: park.error, reason: park.reason,
            destination: EnginePublisher.destination(exchange: park.exchange, routingKey: AMQPString(park.routingKey))))
    }

    /// Neither copy could be parked. The broker's own dead-lettering still keeps the message if
    /// the queue has a dead-letter exchange; otherwise the delivery stays unacked.
    private mutating func parkingImpossible(_ park: Park, _ problem: PublishProblem) -> Action {
        let error = "dead-letter copy not published: \(problem.text) (after: \(park.error))"
        if queue.hasBrokerDeadLetterExchange {
            return settle(.reject(requeue: false), .rejected, Event(
                level: .error, message: "message rejected to the queue's dead-letter exchange: no copy could be parked", error: error,
                reason: park.reason))
        }
        state = .done
        return .hold(Event(level: .error, message: "message held unacked: no copy could be parked and the queue has no dead-letter exchange",
                           error: error, reason: park.reason))
    }

    // MARK: endings

    private mutating func settle(_ disposition: Disposition, _ outcome: MessageOutcome, _ event: Event) -> Action {
        state = .done
        return .settle(disposition, outcome, event)
    }

    private mutating func finish(_ event: Event) -> Action {
        state = .done
        return .finished(event)
    }

    /// A transient publish failure: the input goes back, and its queue waits for the publisher.
    private mutating func backOff(_ problem: PublishProblem) -> Action {
        state = .done
        return .settle(.nack(requeue: true), .requeued, Event(
            level: .error, message: "publish not confirmed; message requeued and queue backing off", error: problem.text), backOff: true)
    }

    static func errorText(_ outcome: HandlerOutcome) -> String? {
        switch outcome {
        case .success: nil
        case .failure(let failure): failure.error
        case .verdict(_, let error, _, _): error
        }
    }

    /// What the run left for the forensic headers, for failures and verdicts alike.
    static func details(_ outcome: HandlerOutcome) -> HandlerFailure? {
        switch outcome {
        case .success: nil
        case .failure(let failure): failure
        case .verdict(_, _, _, let details): details
        }
    }
}

extension QueueConfiguration {
    /// Whether the queue is declared with a dead-letter exchange of its own (an argument in the
    /// configuration; a policy set on the broker is not visible from here).
    var hasBrokerDeadLetterExchange: Bool {
        if case .broker = deadLetter { return true }
        return arguments["x-dead-letter-exchange"] != nil
    }
}

/// An immutable value shared by reference: what every delivery of a consumer reads (its queue's
/// configuration, its log context) without copying it per message.
final class Shared<Value: Sendable>: Sendable {
    let value: Value

    init(_ value: Value) {
        self.value = value
    }
}
