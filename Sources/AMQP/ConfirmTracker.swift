import DequeModule

/// Tracks the publishes of one confirm-mode channel, from submission to outcome.
///
/// - Publishes wait in `unsent` while the window of unconfirmed publishes is full (or the
///   connection is blocked); the window bounds what the broker holds for us unconfirmed.
/// - Sequence numbers start at 1 on each channel incarnation and count every `basic.publish`;
///   `basic.ack`/`basic.nack` with `multiple` resolve every sequence number up to their tag.
/// - `basic.return` carries no sequence number, so returns are matched by `message_id` to the
///   oldest in-flight publish with that id; a return always precedes its publish's ack.
/// - Every publish has a deadline from submission. Past it, the outcome is `timedOut`, whether it
///   was sent or still waiting; a late confirm for it is ignored.
/// Pure: time is passed in as monotonic nanoseconds; `Message` is what gets sent, `Waiter` what
/// gets the outcome.
struct ConfirmTracker<Message, Waiter> {
    struct Resolution {
        var waiter: Waiter
        var result: Result<PublishOutcome, AMQPError>
    }

    private struct Entry {
        var waiter: Waiter
        var messageID: AMQPString?
        var deadline: UInt64
        var sequence: UInt64?
        var returned: (code: UInt16, text: String)?
    }

    private struct Deadline {
        var at: UInt64
        var ticket: UInt64
    }

    let maxInFlight: Int
    private var nextTicket: UInt64 = 1
    private(set) var nextSequence: UInt64 = 1
    private var entries: [UInt64: Entry] = [:]
    private var unsent: Deque<(ticket: UInt64, message: Message)> = []
    /// Sequence numbers in flight, ascending; entries whose ticket is gone are skipped.
    private var inFlight: Deque<UInt64> = []
    private var ticketBySequence: [UInt64: UInt64] = [:]
    private var awaitingReturn: [AMQPString: Deque<UInt64>] = [:]
    /// Ascending by deadline; resolved tickets are skipped.
    private var deadlines: Deque<Deadline> = []

    init(maxInFlight: Int) {
        precondition(maxInFlight >= 1, "ConfirmTracker: maxInFlight must be at least 1, got \(maxInFlight)")
        self.maxInFlight = maxInFlight
    }

    var inFlightCount: Int { ticketBySequence.count }
    var unsentCount: Int { unsent.count }
    var isEmpty: Bool { entries.isEmpty }

    /// Queue a publish. `messageID` must be set for mandatory publishes so a return can be matched.
    mutating func enqueue(_ message: Message, waiter: Waiter, messageID: AMQPString?, deadline: UInt64) {
        let ticket = nextTicket
        nextTicket += 1
        entries[ticket] = Entry(waiter: waiter, messageID: messageID, deadline: deadline)
        unsent.append((ticket, message))
        insertDeadline(Deadline(at: deadline, ticket: ticket))
    }

    /// The next message to send, if the window has room. Call `sent` right after sending it.
    mutating func nextToSend() -> (ticket: UInt64, message: Message)? {
        guard ticketBySequence.count < maxInFlight else { return nil }
        while let next = unsent.popFirst() {
            if entries[next.ticket] != nil { return next }
        }
        return nil
    }

    /// Put a message taken with `nextToSend` back at the head (it could not be sent).
    mutating func putBack(_ ticket: UInt64, _ message: Message) {
        guard entries[ticket] != nil else { return }
        unsent.prepend((ticket, message))
    }

    /// Give up on a message taken with `nextToSend` that could not be sent; returns its waiter.
    mutating func abandon(_ ticket: UInt64) -> Waiter? {
        remove(ticket: ticket)?.waiter
    }

    /// The message taken with `nextToSend` went out as the channel's next `basic.publish`.
    mutating func sent(_ ticket: UInt64) {
        let sequence = nextSequence
        nextSequence += 1
        guard var entry = entries[ticket] else { return }
        entry.sequence = sequence
        entries[ticket] = entry
        inFlight.append(sequence)
        ticketBySequence[sequence] = ticket
        if let id = entry.messageID {
            awaitingReturn[id, default: []].append(ticket)
        }
    }

    /// `basic.return` (with its content's message id). Returns false if nothing matched.
    @discardableResult
    mutating func returned(messageID: AMQPString?, replyCode: UInt16, replyText: String) -> Bool {
        guard let messageID, var tickets = awaitingReturn[messageID] else { return false }
        defer { awaitingReturn[messageID] = tickets.isEmpty ? nil : tickets }
        while let ticket = tickets.first {
            if var entry = entries[ticket], entry.returned == nil {
                entry.returned = (replyCode, replyText)
                entries[ticket] = entry
                tickets.removeFirst()
                return true
            }
            tickets.removeFirst()
        }
        return false
    }

    /// `basic.ack` (`positive`) or `basic.nack` for `tag`, and with `multiple` every tag below it.
    mutating func confirm(tag: UInt64, multiple: Bool, positive: Bool, into resolutions: inout [Resolution]) {
        if multiple {
            while let sequence = inFlight.first, sequence <= tag {
                inFlight.removeFirst()
                resolve(sequence: sequence, positive: positive, into: &resolutions)
            }
        } else {
            resolve(sequence: tag, positive: positive, into: &resolutions)
            while let sequence = inFlight.first, ticketBySequence[sequence] == nil {
                inFlight.removeFirst()
            }
        }
    }

    /// Resolve every publish whose deadline has passed as `timedOut`.
    mutating func expire(now: UInt64, into resolutions: inout [Resolution]) {
        while let first = deadlines.first, first.at <= now {
            deadlines.removeFirst()
            guard let entry = remove(ticket: first.ticket) else { continue }
            resolutions.append(Resolution(waiter: entry.waiter, result: .success(.timedOut)))
        }
    }

    var nextDeadline: UInt64? {
        mutating get {
            while let first = deadlines.first, entries[first.ticket] == nil {
                deadlines.removeFirst()
            }
            return deadlines.first?.at
        }
    }

    /// The channel is gone: every sent, unconfirmed publish fails with `error` (its fate is
    /// unknown). Unsent publishes stay queued for the next channel incarnation, whose sequence
    /// numbers start again at 1.
    mutating func channelLost(_ error: AMQPError, into resolutions: inout [Resolution]) {
        for sequence in inFlight {
            guard let ticket = ticketBySequence[sequence], let entry = remove(ticket: ticket) else { continue }
            resolutions.append(Resolution(waiter: entry.waiter, result: .failure(error)))
        }
        inFlight.removeAll()
        ticketBySequence.removeAll()
        awaitingReturn.removeAll()
        nextSequence = 1
    }

    /// Everything fails with `error`: sent and unsent alike.
    mutating func failAll(_ error: AMQPError, into resolutions: inout [Resolution]) {
        channelLost(error, into: &resolutions)
        for (ticket, _) in unsent {
            guard let entry = remove(ticket: ticket) else { continue }
            resolutions.append(Resolution(waiter: entry.waiter, result: .failure(error)))
        }
        unsent.removeAll()
        deadlines.removeAll()
    }

    private mutating func resolve(sequence: UInt64, positive: Bool, into resolutions: inout [Resolution]) {
        guard let ticket = ticketBySequence[sequence], let entry = remove(ticket: ticket) else { return }
        let outcome: PublishOutcome
        if !positive {
            outcome = .nacked
        } else if let returned = entry.returned {
            outcome = .returned(replyCode: returned.code, replyText: returned.text)
        } else {
            outcome = .confirmed
        }
        resolutions.append(Resolution(waiter: entry.waiter, result: .success(outcome)))
    }

    private mutating func remove(ticket: UInt64) -> Entry? {
        guard let entry = entries.removeValue(forKey: ticket) else { return nil }
        if let sequence = entry.sequence {
            ticketBySequence[sequence] = nil
        }
        if let id = entry.messageID, entry.returned == nil, var tickets = awaitingReturn[id] {
            if tickets.first == ticket {
                tickets.removeFirst()
            } else if let index = tickets.firstIndex(of: ticket) {
                tickets.remove(at: index)
            }
            awaitingReturn[id] = tickets.isEmpty ? nil : tickets
        }
        return entry
    }

    private mutating func insertDeadline(_ deadline: Deadline) {
        // Publishes with the same timeout arrive in deadline order, so this is an append; a
        // shorter timeout after a longer one is placed by binary search.
        guard let last = deadlines.last, last.at > deadline.at else {
            deadlines.append(deadline)
            return
        }
        var low = 0
        var high = deadlines.count
        while low < high {
            let mid = (low + high) / 2
            if deadlines[mid].at <= deadline.at { low = mid + 1 } else { high = mid }
        }
        deadlines.insert(deadline, at: low)
    }
}
