import Logging
import Subprocess
import Synchronization

/// A worker's stderr: each line becomes one warning in warren's log, and the last bytes are kept
/// for the failure of the requests in flight when the worker dies (a Python traceback,
/// typically), as the `x-warren-stderr-tail` header.
///
/// Logging is capped the way an `exec` run's is, per message: each request written to the
/// worker allows `maxLoggedLinesPerMessage` more lines (of at most `maxLineBytes` each; the rest
/// of a longer line is dropped and the entry says so). Lines past the allowance are counted,
/// and the count is logged once when the next message is sent or the worker's stderr ends. A
/// worker that writes without end therefore costs the log a bounded amount per message.
struct PipeStderr: Sendable {
    let handler: String
    let index: Int
    let pid: Int32
    let logger: Logger
    /// Shared by the stderr reader and the request writer, which run as separate tasks.
    private let budget: SharedBudget

    /// Longest line logged; the rest of a longer line is dropped (the entry says so).
    static let maxLineBytes = 4096
    /// How much of the end of stderr a failure carries.
    static let tailBytes = 2048
    /// Lines logged per message sent to the worker (and before the first), as for `exec`.
    static let maxLoggedLinesPerMessage = StderrCollector.maxLoggedLines

    /// How many stderr lines may still be logged, and what was left out. Pure.
    struct LineBudget: Equatable {
        let linesPerMessage: Int
        private(set) var remaining: Int
        private(set) var suppressedLines = 0
        private(set) var suppressedBytes = 0

        init(linesPerMessage: Int) {
            self.linesPerMessage = linesPerMessage
            self.remaining = linesPerMessage
        }

        /// Whether a line of `bytes` bytes may be logged; counts it as left out if not.
        mutating func admit(bytes: Int) -> Bool {
            if remaining > 0 {
                remaining -= 1
                return true
            }
            suppressedLines &+= 1
            suppressedBytes &+= bytes
            return false
        }

        /// A message was sent: the allowance starts over. Returns what was left out since the
        /// last time, to report, or nil if nothing was.
        mutating func messageSent() -> (lines: Int, bytes: Int)? {
            remaining = linesPerMessage
            return takeSuppressed()
        }

        /// What was left out and not yet reported.
        mutating func takeSuppressed() -> (lines: Int, bytes: Int)? {
            guard suppressedLines > 0 else { return nil }
            defer { (suppressedLines, suppressedBytes) = (0, 0) }
            return (suppressedLines, suppressedBytes)
        }
    }

    final class SharedBudget: Sendable {
        let state: Mutex<LineBudget>
        init(_ budget: LineBudget) { state = Mutex(budget) }
    }

    init(handler: String, index: Int, pid: Int32, logger: Logger, linesPerMessage: Int = Self.maxLoggedLinesPerMessage) {
        self.handler = handler
        self.index = index
        self.pid = pid
        self.logger = logger
        self.budget = SharedBudget(LineBudget(linesPerMessage: linesPerMessage))
    }

    /// Reads stderr to its end (or until the process has gone, or the task is cancelled) and
    /// returns its last `tailBytes` bytes.
    func drain(_ errors: SubprocessOutputSequence) async -> String {
        var lines = LineBuffer(limit: Self.maxLineBytes, mode: .truncating)
        var tail: [UInt8] = []
        do {
            for try await chunk in errors {
                chunk.withUnsafeBytes { bytes in
                    tail.append(contentsOf: bytes.suffix(Self.tailBytes))
                    if tail.count > Self.tailBytes { tail.removeFirst(tail.count - Self.tailBytes) }
                    for line in lines.append(bytes) { read(line) }
                }
            }
        } catch {
            // The stream ended with an error: what was read is all there is.
        }
        if let last = lines.finish() { read(last) }
        ended()
        return String(decoding: tail, as: UTF8.self)
    }

    /// One line read from stderr: logged if the allowance has room, else counted.
    func read(_ line: LineBuffer.Line) {
        guard !line.bytes.isEmpty || line.truncated else { return }
        guard budget.state.withLock({ $0.admit(bytes: line.bytes.count) }) else { return }
        var metadata = context
        metadata["line"] = "\(String(decoding: line.bytes, as: UTF8.self))"
        if line.truncated { metadata["truncated"] = "true" }
        logger.warning("pipe worker stderr", metadata: metadata)
    }

    /// A request was written to the worker: the allowance starts over, after reporting what
    /// the last one left out.
    func messageSent() {
        reportSuppressed(budget.state.withLock { $0.messageSent() })
    }

    /// Stderr ended: reports what was left out since the last message.
    func ended() {
        reportSuppressed(budget.state.withLock { $0.takeSuppressed() })
    }

    private func reportSuppressed(_ suppressed: (lines: Int, bytes: Int)?) {
        guard let suppressed else { return }
        var metadata = context
        metadata["suppressed_lines"] = "\(suppressed.lines)"
        metadata["suppressed_bytes"] = "\(suppressed.bytes)"
        logger.warning("pipe worker stderr suppressed", metadata: metadata)
    }

    private var context: Logger.Metadata {
        [LogKeys.handler: "\(handler)", LogKeys.worker: "\(index)", LogKeys.pid: "\(pid)"]
    }
}
