internal import WarrenPlugin

/// What `handle` left in its `warren_result`, copied out before the pool thread runs anything
/// else (the plugin's `error` and `reply` buffers are valid only until its next call there).
struct PluginReturn: Sendable, Hashable {
    var verdict: UInt32
    var delayMS: UInt64
    var error: String?
    /// `nil`: no reply (`reply.data` was NULL).
    var reply: [UInt8]?

    init(verdict: UInt32, delayMS: UInt64 = 0, error: String? = nil, reply: [UInt8]? = nil) {
        self.verdict = verdict
        self.delayMS = delayMS
        self.error = error
        self.reply = reply
    }

    init(copying result: warren_result) {
        self.init(
            verdict: result.verdict.rawValue, delayMS: result.delay_ms, error: result.error.map { String(cString: $0) },
            reply: result.reply.data.map { Array(UnsafeBufferPointer(start: $0, count: result.reply.len)) })
    }

    /// The verdict mapped onto Warren's outcomes (docs/delivery.md). The reply goes with an ack only: the
    /// engine publishes no output for the other verdicts.
    var outcome: HandlerOutcome {
        switch verdict {
        case WARREN_VERDICT_ACK.rawValue:
            return .success(HandlerOutput(reply: reply))
        case WARREN_VERDICT_REJECT.rawValue:
            return .verdict(.reject, error: error, output: .none)
        case WARREN_VERDICT_REQUEUE.rawValue:
            return .verdict(.requeue, error: error, output: .none)
        case WARREN_VERDICT_RETRY.rawValue:
            // 0 asks for the queue's own ladder; anything else is rounded up to a ladder step
            // and capped at max_delay by the retry planner.
            let delay = delayMS == 0 ? nil : Duration.milliseconds(Int64(clamping: delayMS))
            return .verdict(.retry(delay: delay), error: error, output: .none)
        case WARREN_VERDICT_ERROR.rawValue:
            return .failure(HandlerFailure(error ?? "plugin error"))
        default:
            return .failure(HandlerFailure(
                "the plugin returned verdict \(verdict), which is not a warren_verdict (0 ack, 1 reject, 2 requeue, 3 retry, 4 error)"))
        }
    }
}
