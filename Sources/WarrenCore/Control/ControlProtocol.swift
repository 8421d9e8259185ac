/// The line protocol of the control socket (docs/cli.md, "warren ctl"), without any I/O: the
/// client sends one `\n`-terminated line, the server answers with lines and closes. The first
/// answer line is `ok` or `ok <text>` on success, `error: <reason>` otherwise.
public enum ControlProtocol {
    /// The longest request line, its line end included.
    public static let maxRequestBytes = 1024

    /// What a client may ask.
    public enum Request: Sendable, Equatable {
        case pause(queue: String)
        case resume(queue: String)
        case status

        /// The line a client sends for it, line end included.
        public var line: String {
            switch self {
            case .pause(let queue): "pause \(queue)\n"
            case .resume(let queue): "resume \(queue)\n"
            case .status: "status\n"
            }
        }
    }

    /// Why a request was not understood; its description is the reason after `error: `.
    public enum RequestProblem: Error, Sendable, Equatable, CustomStringConvertible {
        case empty
        case unterminated
        case tooLong
        case notUTF8
        case unknownCommand(String)
        case missingQueue(command: String)
        case unexpectedArgument(command: String)
        case timeout(Duration)

        public var description: String {
            switch self {
            case .empty:
                "empty request: \(Self.usage)"
            case .unterminated:
                "the request must end with a line feed (\\n)"
            case .tooLong:
                "request line too long: at most \(maxRequestBytes) bytes, the line end included"
            case .notUTF8:
                "the request is not valid UTF-8"
            case .unknownCommand(let command):
                "unknown command \(ControlProtocol.quoted(command)): \(Self.usage)"
            case .missingQueue(let command):
                "no queue name: \(command) QUEUE"
            case .unexpectedArgument(let command):
                "\(command) takes no argument"
            case .timeout(let limit):
                "no complete request within \(limit.configText) of connecting"
            }
        }

        private static let usage = "expected pause QUEUE, resume QUEUE or status"
    }

    /// The request in `line`: the bytes before the line feed (which is not included). A
    /// trailing carriage return is dropped; the queue name is every byte after the first space.
    public static func parse(_ line: some Collection<UInt8>) -> Result<Request, RequestProblem> {
        var bytes = Array(line)
        if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        guard !bytes.isEmpty else { return .failure(.empty) }
        guard let text = String(validating: bytes, as: UTF8.self) else { return .failure(.notUTF8) }
        let command: Substring
        let argument: Substring?
        if let space = text.firstIndex(of: " ") {
            command = text[..<space]
            argument = text[text.index(after: space)...]
        } else {
            command = text[...]
            argument = nil
        }
        switch command {
        case "pause", "resume":
            guard let argument, !argument.isEmpty else { return .failure(.missingQueue(command: String(command))) }
            return .success(command == "pause" ? .pause(queue: String(argument)) : .resume(queue: String(argument)))
        case "status":
            guard argument == nil else { return .failure(.unexpectedArgument(command: "status")) }
            return .success(.status)
        default:
            return .failure(.unknownCommand(String(command)))
        }
    }

    // MARK: answers

    /// The `error:` line for `reason`.
    public static func errorLine(_ reason: String) -> String {
        "error: \(reason)"
    }

    /// `queue=orders state=consuming in_flight=2 handled=130 failed=4`, with `held_by=` after
    /// the state when something holds the queue back. Values are quoted as in the logs.
    public static func statusLine(_ report: QueueControls.QueueReport) -> String {
        var fields = ["queue=\(LineLogHandler.logfmtValue(report.name))", "state=\(state(of: report))"]
        if let heldBy = report.heldBy { fields.append("held_by=\(heldBy.rawValue)") }
        fields.append("in_flight=\(report.inFlight)")
        fields.append("handled=\(report.handled)")
        fields.append("failed=\(report.failed)")
        return fields.joined(separator: " ")
    }

    /// `consuming`; `paused` (by an operator); `circuit_open` or `circuit_probing` (the breaker
    /// holds it); `waiting`: nothing holds it, but it has no consumer yet (connecting, or the
    /// broker refused the consumer for now).
    public static func state(of report: QueueControls.QueueReport) -> String {
        switch report.heldBy {
        case .operator: "paused"
        case .breaker: report.probing ? "circuit_probing" : "circuit_open"
        case nil: report.consuming ? "consuming" : "waiting"
        }
    }

    /// A name as it appears inside an answer: double-quoted, with quotes, backslashes and
    /// control characters escaped, so the answer stays one line whatever the client sent.
    static func quoted(_ text: String) -> String {
        let value = LineLogHandler.logfmtValue(text)
        return value.hasPrefix("\"") ? value : "\"\(value)\""
    }
}

extension ControlProtocol {
    /// Collects a request line from the bytes as they arrive.
    public struct LineReader: Sendable {
        public enum Progress: Sendable, Equatable {
            /// No line feed yet.
            case needMore
            /// The bytes before the first line feed (anything after it is ignored).
            case line([UInt8])
            /// More than `maxRequestBytes` without a line feed among them.
            case tooLong
        }

        private var buffered: [UInt8] = []
        public let limit: Int

        public init(limit: Int = ControlProtocol.maxRequestBytes) {
            self.limit = limit
        }

        /// Nothing arrived yet.
        public var isEmpty: Bool { buffered.isEmpty }

        public mutating func append(_ bytes: some Collection<UInt8>) -> Progress {
            let room = limit - buffered.count
            let newline = bytes.firstIndex(of: UInt8(ascii: "\n"))
            let upTo = newline.map { bytes.distance(from: bytes.startIndex, to: $0) + 1 } ?? bytes.count
            guard upTo <= room else { return .tooLong }
            if let newline {
                buffered.append(contentsOf: bytes[..<newline])
                return .line(buffered)
            }
            buffered.append(contentsOf: bytes)
            return buffered.count >= limit ? .tooLong : .needMore
        }
    }
}
