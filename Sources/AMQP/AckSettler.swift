import DequeModule

/// Decides which `basic.ack` / `basic.nack` / `basic.reject` frames to send for one channel
/// incarnation, given the order in which its deliveries finished.
///
/// The broker's rules: a tag may be settled once; `multiple=true` settles every
/// unsettled tag up to and including its tag, and its own tag must still be unsettled (else 406
/// closes the channel); tags already settled inside the range are fine. So the settler:
/// - walks up from the lowest unsettled tag while deliveries are finished, and sends each run of
///   equal dispositions as one frame with `multiple=true` (`coalesced` mode);
/// - holds finished deliveries above a gap (a slow message below them) for at most `holdBack`,
///   then settles them one by one, so one slow handler cannot stall the prefetch window;
/// - holds a contiguous run shorter than half the prefetch `window` while the broker may still
///   send more (fewer than `window` unsettled), for at most `holdBack`: the broker is not
///   waiting for it, and each frame costs a send and the broker's work. Once half the window
///   is finished, or the window is full, it goes out at once;
/// - in `immediate` mode sends one frame per delivery as soon as it is flushed.
/// Pure: time is passed in as monotonic nanoseconds.
struct AckSettler {
    enum Mode: Sendable, Equatable {
        /// `window`: the consumer's prefetch count, 0 for none (nothing contiguous is held).
        case coalesced(holdBackNanoseconds: UInt64, window: Int = 0)
        case immediate
    }

    enum Action: Sendable, Equatable {
        case ack(tag: UInt64, multiple: Bool)
        case nack(tag: UInt64, multiple: Bool, requeue: Bool)
        case reject(tag: UInt64, requeue: Bool)
    }

    enum RecordResult: Sendable, Equatable {
        case accepted
        /// Never delivered on this channel incarnation.
        case unknownTag
        /// Settled (or recorded for settling) before; a second settlement would be a 406.
        case alreadySettled
    }

    /// A run of dispositions that one `multiple=true` frame can carry.
    private enum RunKind: Equatable {
        case ack
        case nack(requeue: Bool)

        init(_ disposition: Disposition) {
            switch disposition {
            case .ack: self = .ack
            case .nack(let requeue), .reject(let requeue): self = .nack(requeue: requeue)
            }
        }
    }

    /// What is known of a tag between `floor` and `highestDelivered`.
    private enum Slot {
        /// Delivered, its handler not finished.
        case handling
        /// Finished, not yet sent: the disposition and when it was recorded.
        case finished(Disposition, at: UInt64)
        /// Sent individually, above a gap.
        case sent
    }

    let mode: Mode
    /// Every tag below `floor` has been settled on the wire.
    private(set) var floor: UInt64 = 1
    private(set) var highestDelivered: UInt64 = 0
    /// One slot per tag from `floor` up to `highestDelivered` (`slots[i]` is tag `floor + i`):
    /// tags arrive in order, so a ring indexed by offset replaces a hash table per tag.
    private var slots: Deque<Slot> = []
    /// Deliveries finished by their handlers whose settlement has not been sent yet.
    private(set) var finishedCount = 0
    private var sentCount = 0

    init(mode: Mode) {
        self.mode = mode
    }

    /// The settler of a consumer opened with `settlement` and `prefetch`.
    init(_ settlement: SettlementMode, prefetch: UInt16) {
        switch settlement {
        case .immediate:
            self.init(mode: .immediate)
        case .coalesced(let holdBack, let holdingRuns):
            self.init(mode: .coalesced(holdBackNanoseconds: holdBack.nanoseconds, window: holdingRuns ? Int(prefetch) : 0))
        }
    }

    /// Deliveries received and not yet settled on the wire.
    var unsettledCount: Int { slots.count - sentCount }

    mutating func delivered(_ tag: UInt64) {
        precondition(tag > highestDelivered, "AckSettler: delivery tag \(tag) is not above the last one \(highestDelivered)")
        // Tags are consecutive on a channel; one never seen stays `handling` and holds the floor,
        // as an unsettled delivery would.
        while highestDelivered < tag {
            slots.append(.handling)
            highestDelivered += 1
        }
    }

    mutating func record(_ tag: UInt64, _ disposition: Disposition, now: UInt64) -> RecordResult {
        guard tag >= 1, tag <= highestDelivered else { return .unknownTag }
        guard tag >= floor else { return .alreadySettled }
        let index = Int(tag - floor)
        guard case .handling = slots[index] else { return .alreadySettled }
        slots[index] = .finished(disposition, at: now)
        finishedCount += 1
        return .accepted
    }

    /// The frames to send now, in order. Appends to `actions`.
    mutating func flush(now: UInt64, into actions: inout [Action]) {
        guard finishedCount > 0 else { return }
        let holdBack: UInt64
        switch mode {
        case .immediate: holdBack = 0
        case .coalesced(let nanoseconds, let window):
            holdBack = nanoseconds
            if window > 1 && unsettledCount < window && holdsContiguousRun(below: window / 2, now: now, holdBack: nanoseconds) {
                return
            }
        }
        walkContiguous(into: &actions)
        guard finishedCount > 0 else { return }
        // Above the gap: settle individually, in tag order, whatever has waited long enough.
        for index in slots.indices {
            guard case .finished(let disposition, let at) = slots[index], now &- at >= holdBack else { continue }
            actions.append(Self.single(floor + UInt64(index), disposition))
            slots[index] = .sent
            finishedCount -= 1
            sentCount += 1
            if finishedCount == 0 { return }
        }
    }

    /// Whether the finished run at the floor is shorter than `limit` and nothing finished (in the
    /// run or above a gap) has waited `holdBack`: then nothing need go out yet. Called only with
    /// fewer than a window of unsettled tags, so the scan is bounded by the window.
    private func holdsContiguousRun(below limit: Int, now: UInt64, holdBack: UInt64) -> Bool {
        var run = 0
        var inRun = true
        for slot in slots {
            switch slot {
            case .handling:
                inRun = false
            case .finished(_, let at):
                if now &- at >= holdBack { return false }
                if inRun {
                    run += 1
                    if run >= limit { return false }
                }
            case .sent:
                continue
            }
        }
        return true
    }

    /// Whether `tag`, just delivered, makes the deliveries from the floor up half the window:
    /// the run `flush` sends at once when it is finished. True for one tag per floor, so a
    /// floor held by a slow handler does not make every later delivery answer true.
    func completesHalfWindow(at tag: UInt64) -> Bool {
        guard case .coalesced(_, let window) = mode, window > 1 else { return false }
        return tag &- floor &+ 1 == UInt64(window / 2)
    }

    /// The earliest time at which `flush` would send something it holds back now.
    func nextDeadline() -> UInt64? {
        guard finishedCount > 0 else { return nil }
        guard case .coalesced(let holdBack, _) = mode else { return 0 }
        var earliest = UInt64.max
        for slot in slots {
            if case .finished(_, let at) = slot, at < earliest { earliest = at }
        }
        return earliest &+ holdBack
    }

    private mutating func walkContiguous(into actions: inout [Action]) {
        var runKind: RunKind?
        var runTop: UInt64 = 0
        var runCount = 0
        var runLast: Disposition = .ack

        func emit(_ actions: inout [Action]) {
            guard let kind = runKind else { return }
            if runCount == 1 {
                actions.append(Self.single(runTop, runLast))
            } else {
                switch kind {
                case .ack: actions.append(.ack(tag: runTop, multiple: true))
                case .nack(let requeue): actions.append(.nack(tag: runTop, multiple: true, requeue: requeue))
                }
            }
            runKind = nil
            runCount = 0
        }

        walk: while let slot = slots.first {
            switch slot {
            case .handling:
                break walk  // the lowest delivery still being handled
            case .finished(let disposition, _):
                let kind = RunKind(disposition)
                if mode == .immediate || (runKind != nil && runKind != kind) {
                    emit(&actions)
                }
                runKind = kind
                runTop = floor
                runCount += 1
                runLast = disposition
                finishedCount -= 1
            case .sent:
                sentCount -= 1
            }
            slots.removeFirst()
            floor += 1
        }
        emit(&actions)
    }

    private static func single(_ tag: UInt64, _ disposition: Disposition) -> Action {
        switch disposition {
        case .ack: .ack(tag: tag, multiple: false)
        case .nack(let requeue): .nack(tag: tag, multiple: false, requeue: requeue)
        case .reject(let requeue): .reject(tag: tag, requeue: requeue)
        }
    }
}
