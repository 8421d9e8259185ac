import Foundation
import Glibc
import Logging
import Testing

@testable import WarrenCore

/// The line format itself, written to a pipe: one event per line whatever the data holds.
@Suite("Log line format")
struct LineLogHandlerTests {
    /// Logs through a handler writing into a pipe; returns the lines written.
    static func lines(_ format: LineLogHandler.Format, _ body: (Logger) -> Void) -> [String] {
        var fds: [Int32] = [0, 0]
        pipe(&fds)
        let handler = LineLogHandler(label: "test", level: .debug, format: format, output: LineOutput(fd: fds[1]))
        body(Logger(label: "test") { _ in handler })
        close(fds[1])
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(fds[0], &buffer, buffer.count)
            if count <= 0 { break }
            data.append(contentsOf: buffer.prefix(count))
        }
        close(fds[0])
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    @Test func logfmtQuotesAndEscapesSoThatAnEventStaysOneLine() throws {
        let lines = Self.lines(.logfmt) { logger in
            logger.warning("handler failed", metadata: ["error": "line one\nline \"two\"", "queue": "orders", "event": "spoofed"])
        }
        #expect(lines.count == 1)
        let line = try #require(lines.first)
        #expect(line.hasPrefix("ts="))
        #expect(line.contains(" level=warning event=\"handler failed\" "))
        #expect(line.contains(#"error="line one\nline \"two\"""#))
        #expect(line.contains(" queue=orders"))
        // A metadata key named like a fixed field is renamed, never a second `event=`.
        #expect(line.contains(" _event=spoofed"))
        #expect(line.components(separatedBy: " event=").count == 2)
    }

    @Test func jsonIsOneObjectPerLineWithTheFixedFields() throws {
        let lines = Self.lines(.json) { logger in
            logger.info("consumer up", metadata: ["queue": "orders", "level": "x"])
            logger.debug("message handled", metadata: ["duration_ms": "3"])
        }
        #expect(lines.count == 2)
        let first = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: String])
        #expect(first["event"] == "consumer up")
        #expect(first["level"] == "info")
        #expect(first["_level"] == "x")
        #expect(first["queue"] == "orders")
        #expect(first["ts"]?.hasSuffix("Z") == true)
    }
}
