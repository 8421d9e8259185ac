import AMQP
import Foundation
import Glibc
import TestSupport
import Testing
import WarrenCore

/// Warren's logs (docs/operations.md, "Logs"), read from the real binary's stderr as journald or `docker logs` would get
/// them: one event per line that a logfmt or JSON parser accepts, with `ts`, `level`, `event`
/// and the message context keys, no colours, and never a password.
@Suite("Log lines of warren run", .requiresBroker, .timeLimit(.minutes(1)))
struct LogFormatTests {
    static let messageKeys = ["queue", "handler", "message_id", "delivery_tag", "attempt", "outcome", "duration_ms"]
    static let levels: Set<String> = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    /// Runs warren at debug level (from the file, or from `--log-level` over a quieter file) until
    /// one message was handled, then stops it; returns every line it logged.
    static func logLines(format: String, url: String = TestBroker.url, levelFlag: Bool = false) async throws -> [String] {
        let queue = TestBroker.uniqueName("log-\(format)")
        let source = """
            [broker]
            urls = ["\(url)"]
            connection_name = "warren-log-tests"

            [log]
            level = "\(levelFlag ? "error" : "debug")"
            format = "\(format)"

            [[queues]]
            name = "\(queue)"
            durable = false
            handler = "sink"

            [handlers.sink]
            kind = "noop"
            """
        let config = try WarrenProcess.ConfigFile(source)
        defer { config.remove() }
        let plan = TopologyPlan(try ConfigurationLoader.parse(source: source, file: config.path))
        let warren = try RunningWarren(config: config.path, arguments: levelFlag ? ["--log-level", "debug"] : [])
        let readyEvent = format == "json" ? "\"event\":\"ready\"" : "event=ready"
        #expect(await warren.waitForLog(readyEvent), "never ready; log:\n\(warren.output)")
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        _ = try await publisher.publish(routingKey: queue, body: Array("x".utf8), properties: BasicProperties(messageID: "m-1"))
        #expect(await warren.waitForLog("message handled"), "the message was not handled; log:\n\(warren.output)")
        warren.signal(SIGTERM)
        #expect(await warren.waitForExit(timeout: .seconds(20)) == 0)
        await connection.close()
        for name in plan.queues.map(\.declaration.name) { try? await TestBroker.deleteQueue(name) }
        return warren.output.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
    }

    /// Checks what every event must carry, and the context keys of the per-message event.
    static func checkEvents(_ events: [[String: String]], lines: [String]) {
        #expect(events.count == lines.count, "some lines did not parse")
        for event in events {
            #expect(event["ts"].map { $0.hasSuffix("Z") && $0.count == 24 } == true, "ts: \(event)")
            #expect(event["level"].map(levels.contains) == true, "level: \(event)")
            #expect(event["event"].map { !$0.isEmpty } == true, "event: \(event)")
        }
        let handled = events.first { $0["event"] == "message handled" }
        #expect(handled?["level"] == "debug")
        for key in messageKeys { #expect(handled?[key] != nil, "message handled lacks \(key)") }
        #expect(handled?["message_id"] == "m-1")
        // The trace warren started for the message (it carried no traceparent): docs/tracing.md.
        let hex = Set("0123456789abcdef")
        #expect(handled?["trace_id"].map { $0.count == 32 && $0.allSatisfy(hex.contains) } == true, "trace_id: \(handled ?? [:])")
        #expect(handled?["span_id"].map { $0.count == 16 && $0.allSatisfy(hex.contains) } == true, "span_id: \(handled ?? [:])")
        for lifecycle in ["starting", "connected", "consumer up", "ready", "shutdown requested", "stopped"] {
            #expect(events.contains { $0["event"] == lifecycle && $0["level"] == "info" }, "\(lifecycle) is not logged at info")
        }
        #expect(!lines.contains { $0.contains("\u{1B}") }, "an ANSI escape reached the log")
    }

    /// Also: `--log-level debug` overrides the file's `level = "error"`.
    @Test func everyLineIsOneLogfmtEventWithTheSpecKeys() async throws {
        let lines = try await Self.logLines(format: "logfmt", levelFlag: true)
        let events = lines.compactMap(Logfmt.parse)
        Self.checkEvents(events, lines: lines)
        for line in lines where Logfmt.parse(line) == nil { Issue.record("not logfmt: \(line)") }
    }

    @Test func everyLineIsOneJSONObjectWithTheSpecKeys() async throws {
        let lines = try await Self.logLines(format: "json")
        let events = lines.compactMap { line -> [String: String]? in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                Issue.record("not a JSON object: \(line)")
                return nil
            }
            return object.compactMapValues { $0 as? String }
        }
        Self.checkEvents(events, lines: lines)
    }

    /// A broker user with a password of its own, so that the password is a string no other
    /// log text could contain by chance.
    @Test(.enabled(if: BrokerControl.isAvailable, "needs rabbitmqctl to add a user"))
    func thePasswordOfABrokerURLNeverAppearsInTheLogOrOutput() async throws {
        let user = TestBroker.uniqueName("log-user")
        let secret = "Pw\(UUID().uuidString.prefix(12))Secret"
        let wrong = "Wrong\(UUID().uuidString.prefix(12))Secret"
        _ = await offPool {
            _ = BrokerControl.rabbitmqctl(["add_user", user, secret])
            return BrokerControl.rabbitmqctl(["set_permissions", "-p", "/", user, ".*", ".*", ".*"])
        }
        do {
            try await Self.checkPasswordsStayOut(user: user, secret: secret, wrong: wrong)
        } catch {
            _ = await offPool { BrokerControl.rabbitmqctl(["delete_user", user]) }
            throw error
        }
        _ = await offPool { BrokerControl.rabbitmqctl(["delete_user", user]) }
    }

    static func checkPasswordsStayOut(user: String, secret: String, wrong: String) async throws {
        let endpoint = TestBroker.endpoint
        let url = { (password: String) in "amqp://\(user):\(password)@\(endpoint.host):\(endpoint.port)/" }

        // Connected and consuming: debug logging of connections, consumers and messages.
        let lines = try await logLines(format: "logfmt", url: url(secret))
        #expect(lines.contains { $0.contains("event=connected") }, "the user could not connect")
        #expect(!lines.contains { $0.contains(secret) }, "the password reached the log")

        // Refused: the login error, retried with back-off.
        let config = try WarrenProcess.ConfigFile(WarrenProcess.config(queue: TestBroker.uniqueName("log-refused"))
            .replacingOccurrences(of: TestBroker.url, with: url(wrong)) + "\n[log]\nlevel = \"debug\"\n")
        defer { config.remove() }
        let refused = try RunningWarren(config: config.path)
        #expect(await refused.waitForLog("broker unreachable, reconnecting"), "no reconnect warning; log:\n\(refused.output)")
        refused.signal(SIGTERM)
        _ = await refused.waitForExit(timeout: .seconds(20))
        #expect(!refused.output.contains(wrong), "the password reached the log")
        let check = try await WarrenProcess.run(["check", "--connect", "--config", config.path])
        #expect(check.status != 0)
        #expect(!(check.stdout + check.stderr).contains(wrong), "warren check printed the password")
    }
}

/// A strict logfmt reader: `key=value` pairs separated by single spaces, values bare or
/// double-quoted with `\"`, `\\`, `\n`, `\r`, `\t` and `\uXXXX` escapes. Nil for anything else.
enum Logfmt {
    static func parse(_ line: String) -> [String: String]? {
        var fields: [String: String] = [:]
        var rest = Substring(line)
        while !rest.isEmpty {
            guard let equals = rest.firstIndex(of: "="), equals != rest.startIndex else { return nil }
            let key = String(rest[..<equals])
            guard key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == "." }), fields[key] == nil else { return nil }
            rest = rest[rest.index(after: equals)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                var closed = false
                while let character = rest.first {
                    rest = rest.dropFirst()
                    if character == "\"" {
                        closed = true
                        break
                    }
                    guard character == "\\" else {
                        value.append(character)
                        continue
                    }
                    guard let escaped = rest.first else { return nil }
                    rest = rest.dropFirst()
                    switch escaped {
                    case "\"", "\\": value.append(escaped)
                    case "n": value.append("\n")
                    case "r": value.append("\r")
                    case "t": value.append("\t")
                    case "u":
                        guard let code = UInt32(rest.prefix(4), radix: 16), let scalar = Unicode.Scalar(code) else { return nil }
                        value.unicodeScalars.append(scalar)
                        rest = rest.dropFirst(4)
                    default: return nil
                    }
                }
                guard closed else { return nil }
            } else {
                let end = rest.firstIndex(of: " ") ?? rest.endIndex
                value = String(rest[..<end])
                guard !value.isEmpty, !value.contains("\""), !value.contains("=") else { return nil }
                rest = rest[end...]
            }
            fields[key] = value
            if rest.first == " " {
                rest = rest.dropFirst()
                guard !rest.isEmpty else { return nil }
            } else if !rest.isEmpty {
                return nil
            }
        }
        return fields
    }
}
