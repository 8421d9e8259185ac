/// Decides which `basic.ack` / `basic.nack` / `basic.reject` frames to send for one channel
/// incarnation, given the order in which its deliveries finished.
///
/// The broker's rules (notes §9, EXP-C): a tag may be settled once; `multiple=true` settles every
/// unsettled tag up to and including its tag, and its own tag must still be unsettled (else 406
/// closes the channel); tags already settled inside the range are fine. So the settler:
/// - walks up from the lowest unsettled tag while deliveries are finished, and sends each run of
///   equal dispositions as one frame with `multiple=true` (`coalesced` mode);
/// - holds finished deliveries above a gap (a slow message below them) for at most `holdBack`,
///   then settles them one by one, so one slow handler cannot stall the prefetch window;
/// - in `immediate` mode sends one frame per delivery as soon as it is flushed.
/// Pure: time is passed in as monotonic nanoseconds.
struct AckSettler {
    enum Mode: Sendable, Equatable {
        case coalesced(holdBackNanoseconds: UInt64)
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

    let mode: Mode
    /// Every tag below `floor` has been settled on the wire.
    private(set) var floor: UInt64 = 1
    private(set) var highestDelivered: UInt64 = 0
    /// Finished, not yet sent: disposition and the time it was recorded.
    private var finished: [UInt64: (disposition: Disposition, at: UInt64)] = [:]
    /// Tags at or above `floor` that were sent individually.
    private var sentAbove: Set<UInt64> = []

    init(mode: Mode) {
        self.mode = mode
    }

    /// Deliveries received and not yet settled on the wire.
    var unsettledCount: Int {
        Int(highestDelivered + 1 - floor) - sentAbove.count
    }

    /// Deliveries finished by their handlers whose settlement has not been sent yet.
    var finishedCount: Int { finished.count }

    mutating func delivered(_ tag: UInt64) {
        precondition(tag > highestDelivered, "AckSettler: delivery tag \(tag) is not above the last one \(highestDelivered)")
        highestDelivered = tag
    }

    mutating func record(_ tag: UInt64, _ disposition: Disposition, now: UInt64) -> RecordResult {
        guard tag >= 1, tag <= highestDelivered else { return .unknownTag }
        guard tag >= floor, finished[tag] == nil, !sentAbove.contains(tag) else { return .alreadySettled }
        finished[tag] = (disposition, now)
        return .accepted
    }

    /// The frames to send now, in order. Appends to `actions`.
    mutating func flush(now: UInt64, into actions: inout [Action]) {
        guard !finished.isEmpty else { return }
        walkContiguous(into: &actions)
        guard !finished.isEmpty else { return }
        // Above the gap: settle individually whatever has waited long enough.
        let holdBack: UInt64
        switch mode {
        case .immediate: holdBack = 0
        case .coalesced(let nanoseconds): holdBack = nanoseconds
        }
        // Usually nothing above the gap is due yet: check before allocating the list.
        guard finished.values.contains(where: { now &- $0.at >= holdBack }) else { return }
        let due = finished.filter { now &- $0.value.at >= holdBack }.keys.sorted()
        for tag in due {
            guard let entry = finished.removeValue(forKey: tag) else { continue }
            actions.append(Self.single(tag, entry.disposition))
            sentAbove.insert(tag)
        }
    }

    /// The earliest time at which `flush` would send something it holds back now.
    func nextDeadline() -> UInt64? {
        guard case .coalesced(let holdBack) = mode else { return finished.isEmpty ? nil : 0 }
        return finished.values.lazy.map(\.at).min().map { $0 &+ holdBack }
    }

    private mutating func walkContiguous(into actions: inout [Action]) {
        var tag = floor
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

        while tag <= highestDelivered {
            if let entry = finished.removeValue(forKey: tag) {
                let kind = RunKind(entry.disposition)
                if mode == .immediate || (runKind != nil && runKind != kind) {
                    emit(&actions)
                }
                runKind = kind
                runTop = tag
                runCount += 1
                runLast = entry.disposition
            } else if sentAbove.remove(tag) == nil {
                break  // the lowest delivery still being handled
            }
            tag += 1
        }
        emit(&actions)
        floor = tag
    }

    private static func single(_ tag: UInt64, _ disposition: Disposition) -> Action {
        switch disposition {
        case .ack: .ack(tag: tag, multiple: false)
        case .nack(let requeue): .nack(tag: tag, multiple: false, requeue: requeue)
        case .reject(let requeue): .reject(tag: tag, requeue: requeue)
        }
    }
}
