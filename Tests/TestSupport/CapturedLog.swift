import Logging
import Synchronization

/// Log events kept in memory, for tests that check what an operator would read. Tests that need
/// a line to appear poll for it with a deadline: a log line has no event to await.
public final class CapturedLog: Sendable {
    public struct Entry: Sendable {
        public var level: Logger.Level
        public var message: String
        /// The logger's metadata merged with the event's, as text.
        public var metadata: [String: String]
    }

    private let entries = Mutex<[Entry]>([])

    public init() {}

    public var all: [Entry] { entries.withLock { $0 } }

    public func matching(_ message: String) -> [Entry] { all.filter { $0.message == message } }

    public func contains(_ message: String) -> Bool { all.contains { $0.message == message } }

    /// Polls every 10 ms until an entry satisfies `predicate`, for at most `timeout`.
    public func wait(for timeout: Duration = .seconds(30), until predicate: (Entry) -> Bool) async -> Entry? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let entry = all.first(where: predicate) { return entry }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return nil
    }

    /// Whether an entry with this message appears within `timeout`.
    public func wait(for message: String, timeout: Duration = .seconds(30)) async -> Bool {
        await wait(for: timeout) { $0.message == message } != nil
    }

    public func logger(label: String = "warren.tests", level: Logger.Level = .trace) -> Logger {
        var logger = Logger(label: label) { _ in Handler(log: self) }
        logger.logLevel = level
        return logger
    }

    struct Handler: LogHandler {
        let log: CapturedLog
        var logLevel: Logger.Level = .trace
        var metadata: Logger.Metadata = [:]

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            var merged = metadata
            if let extra = event.metadata { merged.merge(extra) { _, new in new } }
            log.entries.withLock {
                $0.append(Entry(level: event.level, message: event.message.description, metadata: merged.mapValues { "\($0)" }))
            }
        }
    }
}
