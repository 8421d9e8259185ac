/// Splits a byte stream into lines without assuming anything about chunk boundaries: the pipe
/// delivers whatever the worker's writes and the kernel's buffering make of it.
///
/// A line longer than `limit` is either cut (`truncating`: the head is kept, the rest is
/// dropped up to the next newline; right for log lines) or reported once as an overflow
/// (`failing`: right for protocol lines, where a runaway worker must not eat warren's memory).
struct LineBuffer {
    enum Mode {
        case truncating
        case failing
    }

    /// One complete line, without its newline (and without a trailing carriage return).
    struct Line: Equatable {
        var bytes: [UInt8]
        /// Bytes beyond `limit` were dropped.
        var truncated = false
    }

    let limit: Int
    let mode: Mode
    /// The current line so far. Each chunk is searched for newlines once, as it arrives, so
    /// nothing here is ever scanned again.
    private var pending: [UInt8] = []
    /// In `truncating` mode: the current line passed `limit`; drop until the next newline.
    private var discarding = false
    /// In `failing` mode: a line passed `limit`; nothing more is returned.
    private(set) var overflowed = false

    init(limit: Int, mode: Mode) {
        precondition(limit > 0, "LineBuffer limit must be positive, got \(limit)")
        self.limit = limit
        self.mode = mode
    }

    /// Adds a chunk and returns the lines it completes.
    mutating func append(_ chunk: some Collection<UInt8>) -> [Line] {
        guard !overflowed else { return [] }
        var lines: [Line] = []
        var rest = chunk[...]
        while !rest.isEmpty {
            guard let newline = rest.firstIndex(of: 0x0A) else {
                take(rest)
                break
            }
            take(rest[..<newline])
            rest = rest[rest.index(after: newline)...]
            if overflowed { return lines }
            lines.append(finishLine())
        }
        return lines
    }

    /// What is left when the stream ends: a last line without a newline, if any.
    mutating func finish() -> Line? {
        guard !overflowed, !pending.isEmpty || discarding else { return nil }
        return finishLine()
    }

    private mutating func take(_ bytes: some Collection<UInt8>) {
        if discarding { return }
        let room = limit - pending.count
        if bytes.count <= room {
            pending.append(contentsOf: bytes)
            return
        }
        switch mode {
        case .truncating:
            pending.append(contentsOf: bytes.prefix(room))
            discarding = true
        case .failing:
            overflowed = true
            pending = []
        }
    }

    private mutating func finishLine() -> Line {
        var line = Line(bytes: pending, truncated: discarding)
        if line.bytes.last == 0x0D { line.bytes.removeLast() }
        pending = []
        discarding = false
        return line
    }
}
