import Foundation
import Logging
import Synchronization

/// One event per line on stderr, as `logfmt` (`ts=… level=… event="…" key=value`) or JSON,
/// with no colours: journald and `docker logs` keep lines as they are. The message is the
/// event name (constant strings); data goes in metadata.
public struct LineLogHandler: LogHandler {
    public enum Format: Sendable { case logfmt, json }

    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let format: Format
    private let output: LineOutput

    public init(label: String, level: Logger.Level, format: Format, output: LineOutput = .standardError) {
        self.label = label
        self.logLevel = level
        self.format = format
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let timestamp = Self.timestamp()
        let line: String
        switch format {
        case .logfmt:
            var fields = "ts=\(timestamp) level=\(event.level.rawValue) event=\(Self.logfmtValue(event.message.description))"
            for key in merged.keys.sorted() {
                fields += " \(Self.fieldName(key))=\(Self.logfmtValue(Self.text(merged[key])))"
            }
            line = fields
        case .json:
            var object: [String: Any] = ["ts": timestamp, "level": event.level.rawValue, "event": event.message.description]
            for (key, value) in merged { object[Self.fieldName(key)] = Self.text(value) }
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
            line = String(decoding: data, as: UTF8.self)
        }
        output.write(line)
    }

    /// A metadata key never replaces or duplicates the fields every line starts with.
    static func fieldName(_ key: String) -> String {
        key == "ts" || key == "level" || key == "event" ? "_" + key : key
    }

    static func text(_ value: Logger.Metadata.Value?) -> String {
        switch value {
        case .string(let s)?: s
        case .stringConvertible(let c)?: c.description
        case .array(let a)?: "[" + a.map { text($0) }.joined(separator: ",") + "]"
        case .dictionary(let d)?: "{" + d.keys.sorted().map { "\($0)=\(text(d[$0]))" }.joined(separator: ",") + "}"
        case nil: ""
        }
    }

    /// Bare when safe, else double-quoted with `"` `\` and control characters escaped, so one
    /// event always stays one line.
    static func logfmtValue(_ value: String) -> String {
        let needsQuotes = value.isEmpty || value.contains { $0 == " " || $0 == "=" || $0 == "\"" || $0 == "\\" || $0.isNewline || ($0.asciiValue.map { $0 < 0x20 } ?? false) }
        guard needsQuotes else { return value }
        var escaped = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": escaped += "\\\""
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            case "\r": escaped += "\\r"
            case "\t": escaped += "\\t"
            default:
                if scalar.value < 0x20 { escaped += String(format: "\\u%04x", scalar.value) } else { escaped.unicodeScalars.append(scalar) }
            }
        }
        return escaped + "\""
    }

    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var tm = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &tm)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
            tm.tm_sec, now.tv_nsec / 1_000_000)
    }
}

/// Where log lines go: whole lines, written under a lock so concurrent events never interleave.
public final class LineOutput: Sendable {
    private let lock = Mutex(())
    private let fd: Int32

    public init(fd: Int32) { self.fd = fd }

    public static let standardError = LineOutput(fd: 2)

    func write(_ line: String) {
        var bytes = Array(line.utf8)
        bytes.append(0x0A)
        lock.withLock { _ in
            bytes.withUnsafeBytes { buffer in
                var offset = 0
                while offset < buffer.count {
                    let written = Glibc.write(fd, buffer.baseAddress.map { $0 + offset }, buffer.count - offset)
                    if written <= 0 { break }
                    offset += written
                }
            }
        }
    }
}
