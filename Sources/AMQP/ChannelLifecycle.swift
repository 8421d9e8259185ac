/// One channel's protocol state, as the I/O loop sees it: whether it is open, which incarnation
/// (epoch) it is, and for a consumer channel whether its subscription still delivers. Pure: each
/// event returns what the loop must do, and the loop does it (sends the frames, ends the
/// deliveries stream, forgets the channel). Every odd ordering of events (a broker cancel during
/// ours, a close after a close, a settlement for an earlier incarnation) is decided here and
/// tested without a socket (`ChannelLifecycleTests`).
///
/// - open: frames are processed and settlements of the current epoch accepted.
/// - closing: we are closing it (channel.close sent, close-ok awaited): settlements already
///   recorded still go out first; nothing new is accepted and its frames are dropped.
/// - closed: by the broker (channel.close, answered with close-ok) or by us (close-ok received).
///   Nothing on it is processed any more. A publisher channel stays in the table, closed, and is
///   reopened with a new epoch by its next publish; the other kinds are forgotten.
///
/// A consumer's subscription is `active` until the first of: our basic.cancel completed, the
/// broker's basic.cancel, the channel's close. Its deliveries stream ends exactly once, then.
struct ChannelLifecycle: Sendable, Equatable {
    enum Kind: Sendable, Equatable {
        case control
        case consumer
        case publisher
        case getter
    }

    enum State: Sendable, Equatable {
        case open
        case closing
        case closed
    }

    enum Subscription: Sendable, Equatable {
        /// Not a consumer channel.
        case none
        case active
        case ended
    }

    /// What the loop must do after an event, in order.
    enum Action: Sendable, Equatable {
        /// Answer the broker's basic.cancel (it did not set no-wait).
        case sendCancelOk
        /// Send basic.cancel (an RPC); report back with `cancelSent()`.
        case sendCancel
        /// Send what is settled, then channel.close (an RPC); report back with `closeSent()`.
        case flushAndSendClose
        /// Drop settlements recorded and not yet sent (the broker requeues those deliveries),
        /// and any half-assembled content.
        case discardUnsent
        /// End the consumer's deliveries stream: after what it already received, with the
        /// error that ended it (nil: ended on request).
        case endDeliveries(Ending)
        /// Tell the publisher's in-flight publishes their channel is gone.
        case failInFlightPublishes
        /// Fail the get channel's pending request.
        case failGet
        /// Remove the channel from the table (its id may be reused).
        case forget
        /// Report a consumer cancelled by the broker (`ConnectionEvent.consumerCancelled`).
        case reportCancelled
        /// Report a channel the broker closed unasked (`ConnectionEvent.channelClosed`).
        case reportClosed
    }

    enum Ending: Sendable, Equatable {
        case requested
        case cancelledByBroker
        case channelClosed
    }

    let kind: Kind
    private(set) var state = State.open
    private(set) var epoch: UInt64
    private(set) var subscription: Subscription

    init(kind: Kind, epoch: UInt64) {
        self.kind = kind
        self.epoch = epoch
        subscription = kind == .consumer ? .active : .none
    }

    /// Whether frames on the channel (content, acks, returns) are processed.
    var isOpen: Bool { state == .open }

    /// Whether settlements recorded on it may still be sent: until our close goes out.
    var sendsSettlements: Bool { state != .closed }

    /// Whether a settlement made for incarnation `epoch` may be recorded: only on the open
    /// incarnation it came from. A settlement for another is moot: its delivery went back to the
    /// queue when that incarnation closed, and its tag means nothing (or something else) now.
    func accepts(settlementOf epoch: UInt64) -> Bool {
        state == .open && epoch == self.epoch
    }

    /// Whether a request made for incarnation `epoch` (cancel, close, get) is for this one.
    func isIncarnation(_ epoch: UInt64) -> Bool { epoch == self.epoch }

    /// Where a delivery completed on the channel goes.
    enum DeliveryRoute: Sendable, Equatable {
        /// To the consumer's reader.
        case reader
        /// Back to the queue at once (nack with requeue): its subscription ended, nobody will
        /// read it, and holding it until the channel closes would keep it from other consumers.
        case giveBack
        /// Nowhere: the channel is not open, the broker already requeued it (or will).
        case drop
    }

    // MARK: events from the broker

    /// A basic.deliver's content is complete.
    func routeDelivery() -> DeliveryRoute {
        guard state == .open, kind == .consumer else { return .drop }
        return subscription == .active ? .reader : .giveBack
    }

    /// basic.cancel from the broker (its queue was deleted, or its node failed over).
    mutating func brokerCancelled(noWait: Bool) -> [Action] {
        var actions: [Action] = noWait ? [] : [.sendCancelOk]
        if subscription == .active {
            subscription = .ended
            actions += [.endDeliveries(.cancelledByBroker), .reportCancelled]
        }
        return actions
    }

    /// channel.close from the broker (close-ok is sent by the loop first, whatever the state,
    /// so that the id can be opened again). `answeringRPC`: the close was the reply to a request
    /// whose caller gets the error, so nobody else needs to hear of it.
    mutating func brokerClosed(answeringRPC: Bool) -> [Action] {
        // While closing, the broker's close crossed ours: it ends the channel all the same.
        guard state != .closed else { return [] }
        state = .closed
        var actions: [Action] = [.discardUnsent]
        switch kind {
        case .consumer:
            if subscription == .active {
                subscription = .ended
                actions.append(.endDeliveries(.channelClosed))
            }
            actions.append(.forget)
        case .publisher:
            // The id stays reserved for this publisher; its next publish reopens it.
            actions.append(.failInFlightPublishes)
        case .getter:
            actions += [.failGet, .forget]
        case .control:
            actions.append(.forget)
        }
        if !answeringRPC { actions.append(.reportClosed) }
        return actions
    }

    // MARK: requests from this process

    /// basic.cancel asked for incarnation `epoch`: sent only while that incarnation is open and
    /// still subscribed (a cancel after the broker's, or after a close, does nothing).
    func cancel(epoch: UInt64) -> [Action] {
        guard kind == .consumer, epoch == self.epoch, state == .open, subscription == .active else { return [] }
        return [.sendCancel]
    }

    /// Our basic.cancel got its cancel-ok: no new deliveries; those received stay valid and can
    /// be settled while the channel is open.
    mutating func cancelSent() -> [Action] {
        guard subscription == .active else { return [] }
        subscription = .ended
        return [.endDeliveries(.requested)]
    }

    /// channel.close asked for incarnation `epoch`. An open channel sends what is settled and
    /// closes (then `closeSent()`); one the broker already closed is only forgotten, and a
    /// subscription still active ends (on request). A second close while closing does nothing.
    mutating func close(epoch: UInt64) -> [Action] {
        guard epoch == self.epoch else { return [] }
        switch state {
        case .open:
            state = .closing
            return [.flushAndSendClose]
        case .closing:
            return []
        case .closed:
            return ended()
        }
    }

    /// Our channel.close got its close-ok, or could not be completed (the connection failed):
    /// the channel is done. Nothing when the broker's close came first (it ended it already).
    mutating func closeSent() -> [Action] {
        guard state == .closing else { return [] }
        state = .closed
        return ended()
    }

    private mutating func ended() -> [Action] {
        var actions: [Action] = [.forget]
        if subscription == .active {
            subscription = .ended
            actions.append(.endDeliveries(.requested))
        }
        return actions
    }

    /// A closed publisher channel was opened again (channel.open, confirm.select): a new
    /// incarnation, whose confirms and settlements never match the old one's.
    mutating func reopened(epoch: UInt64) {
        guard kind == .publisher, state == .closed else { return }
        state = .open
        self.epoch = epoch
    }
}
