import AMQP
import Logging

/// A process's stderr for one run: each line goes to the log with the message's context, so an
/// operator sees why a handler failed next to the message it failed on; the last 2 KiB are kept
/// for the failure (`x-warren-stderr-tail`). Logging is capped per run (lines and bytes per
/// line), so a chatty or broken handler cannot flood the log: what is left out is counted and
/// reported in one closing line.
struct StderrCollector: Sendable {
    /// `x-warren-stderr-tail` (on a dead letter) is the last 2 KiB of stderr.
    static let tailLimit = 2048
    static let maxLoggedLines = 50
    static let maxLineBytes = 1024

    /// Who the lines belong to; turned into log metadata only when there is something to log.
    struct Context: Sendable {
        var queue: String
        var handler: String
        var messageID: AMQPString?
        var deliveryTag: UInt64
        var attempt: Int

        init(handler: String, input: HandlerInput) {
            self.queue = input.queue
            self.handler = handler
            self.messageID = input.properties.messageID
            self.deliveryTag = input.deliveryTag
            self.attempt = input.attempt
        }

        var metadata: Logger.Metadata {
            var metadata: Logger.Metadata = [
                LogKeys.queue: "\(queue)", LogKeys.handler: "\(handler)", LogKeys.deliveryTag: "\(deliveryTag)",
                LogKeys.attempt: "\(attempt)",
            ]
            if let messageID { metadata[LogKeys.messageID] = "\(messageID)" }
            return metadata
        }
    }

    static let lineKey = "line"

    let logger: Logger
    let context: Context
    private var metadata: Logger.Metadata?
    /// The last `tailLimit` bytes (at most twice that between trims).
    private var tailBytes: [UInt8] = []
    /// The line being read, cut at `maxLineBytes`; `lineLength` counts all of it.
    private var line: [UInt8] = []
    private var lineLength = 0
    private(set) var loggedLines = 0
    private(set) var suppressedLines = 0
    private(set) var suppressedBytes = 0

    init(logger: Logger, context: Context) {
        self.logger = logger
        self.context = context
    }

    mutating func append(_ chunk: UnsafeRawBufferPointer) {
        guard !chunk.isEmpty else { return }
        tailBytes.append(contentsOf: chunk.suffix(Self.tailLimit))
        if tailBytes.count > 2 * Self.tailLimit { tailBytes.removeFirst(tailBytes.count - Self.tailLimit) }

        var rest = chunk[...]
        while let newline = rest.firstIndex(of: UInt8(ascii: "\n")) {
            take(rest[rest.startIndex..<newline])
            endLine()
            rest = rest[(newline + 1)...]
        }
        take(rest)
    }

    /// Logs a last line without a newline, then how much was left out.
    mutating func finish() {
        if lineLength > 0 { endLine() }
        if suppressedLines > 0 {
            var metadata = contextMetadata()
            metadata["suppressed_lines"] = "\(suppressedLines)"
            metadata["suppressed_bytes"] = "\(suppressedBytes)"
            logger.warning("handler stderr suppressed", metadata: metadata)
        }
    }

    /// The last 2 KiB, or nil when the process wrote nothing to stderr. A multi-byte character
    /// cut at the front is dropped rather than shown as garbage.
    var tail: String? {
        guard !tailBytes.isEmpty else { return nil }
        var bytes = tailBytes.suffix(Self.tailLimit)
        while let first = bytes.first, first & 0xC0 == 0x80 { bytes = bytes.dropFirst() }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The last non-empty line (at most 256 bytes): the handler's own words for a verdict.
    var lastLine: String? {
        let lines = tailBytes.split(separator: UInt8(ascii: "\n"))
        guard let last = lines.last(where: { !$0.allSatisfy { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") } }) else { return nil }
        var text = String(decoding: last.prefix(256), as: UTF8.self)
        while text.last?.isWhitespace == true { text.removeLast() }
        return text
    }

    private mutating func take(_ bytes: UnsafeRawBufferPointer.SubSequence) {
        lineLength += bytes.count
        let room = Self.maxLineBytes - line.count
        if room > 0 { line.append(contentsOf: bytes.prefix(room)) }
    }

    private mutating func endLine() {
        defer {
            line.removeAll(keepingCapacity: true)
            lineLength = 0
        }
        if line.last == UInt8(ascii: "\r") { line.removeLast() }
        guard !line.isEmpty else { return }
        guard loggedLines < Self.maxLoggedLines else {
            suppressedLines += 1
            suppressedBytes += lineLength
            return
        }
        loggedLines += 1
        var text = String(decoding: line, as: UTF8.self)
        if lineLength > Self.maxLineBytes { text += "…" }
        var metadata = contextMetadata()
        metadata[Self.lineKey] = "\(text)"
        logger.warning("handler stderr", metadata: metadata)
    }

    private mutating func contextMetadata() -> Logger.Metadata {
        if let metadata { return metadata }
        let built = context.metadata
        metadata = built
        return built
    }
}
