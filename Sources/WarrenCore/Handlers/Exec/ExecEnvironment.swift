import AMQP
import Foundation

/// The environment of an `exec` handler's process: warren's own environment, then
/// the handler's configured `env` on top, then the message's `WARREN_*` variables on top of both,
/// so neither an inherited nor a configured variable can impersonate message metadata.
///
/// The fixed part is merged and laid out as C strings once, when the handler is built; a run
/// only appends the per-message variables to a copy.
struct ExecEnvironment: Sendable {
    struct InvalidName: Error, CustomStringConvertible {
        var name: String
        var description: String { "env: \"\(name)\" is not a valid environment variable name (empty, contains '=' or NUL, or starts with a digit)" }
    }

    /// The variables every message sets, whatever the inherited or configured environment says.
    static let messageVariables: Set<String> = [
        "WARREN_QUEUE", "WARREN_EXCHANGE", "WARREN_ROUTING_KEY", "WARREN_MESSAGE_ID", "WARREN_CORRELATION_ID",
        "WARREN_REPLY_TO", "WARREN_CONTENT_TYPE", "WARREN_TYPE", "WARREN_REDELIVERED", "WARREN_ATTEMPT", "WARREN_HEADERS",
        "WARREN_HEADERS_OMITTED",
    ]

    /// Warren's environment merged with the configured `env`.
    let base: [String: String]
    /// `base` without the message variables, as `NAME=value` strings.
    private let fixed: CStringBlock

    init(inherited: [String: String] = ProcessInfo.processInfo.environment, configured: [String: String]) throws(InvalidName) {
        var base: [String: String] = [:]
        base.reserveCapacity(inherited.count + configured.count)
        // An odd inherited name cannot come from the operator's config; skip it rather than
        // fail every run.
        for (name, value) in inherited where Self.isValidName(name) {
            base[name] = Self.clean(value)
        }
        for (name, value) in configured {
            guard Self.isValidName(name) else { throw InvalidName(name: name) }
            base[name] = Self.clean(value)
        }
        self.base = base
        var fixed = CStringBlock()
        for (name, value) in base.sorted(by: { $0.key < $1.key }) where !Self.messageVariables.contains(name) {
            fixed.append(name: name, value: value)
        }
        self.fixed = fixed
    }

    /// The `PATH` a bare program name is looked up on: the one the process will run with.
    var searchPath: String { base["PATH"] ?? "/usr/local/bin:/usr/bin:/bin" }

    /// The full environment for one message, as `envp` strings. Absent properties are empty
    /// strings, so a program can rely on every variable being set.
    func environment(for input: HandlerInput) -> CStringBlock {
        let p = input.properties
        var values = fixed
        values.append(name: "WARREN_QUEUE", value: Self.clean(input.queue))
        values.append(name: "WARREN_EXCHANGE", value: Self.clean(input.exchange))
        values.append(name: "WARREN_ROUTING_KEY", value: Self.clean(input.routingKey))
        values.append(name: "WARREN_MESSAGE_ID", value: Self.clean(p.messageID ?? ""))
        values.append(name: "WARREN_CORRELATION_ID", value: Self.clean(p.correlationID ?? ""))
        values.append(name: "WARREN_REPLY_TO", value: Self.clean(p.replyTo ?? ""))
        values.append(name: "WARREN_CONTENT_TYPE", value: Self.clean(p.contentType ?? ""))
        values.append(name: "WARREN_TYPE", value: Self.clean(p.type ?? ""))
        values.append(name: "WARREN_REDELIVERED", value: input.redelivered ? "1" : "0")
        values.append(name: "WARREN_ATTEMPT", value: String(input.attempt))
        // The same JSON shape every handler kind sees (`MessageJSON`), capped so that no message
        // can push the environment past what exec accepts: whatever room the rest leaves under
        // the environment budget, at most `HeadersVariable.maxBytes`.
        let reserved = "WARREN_HEADERS=".utf8.count + 1 + "WARREN_HEADERS_OMITTED=".utf8.count + 21
        let room = HeadersVariable.maxEnvironmentBytes - values.bytes.count - reserved
        let (headers, omitted) = HeadersVariable.json(p.headers, limit: min(HeadersVariable.maxBytes, max(room, 2)))
        values.append(name: "WARREN_HEADERS", value: String(decoding: headers, as: UTF8.self))
        values.append(name: "WARREN_HEADERS_OMITTED", value: String(omitted))
        return values
    }

    /// POSIX names: no `=`, no NUL, not empty, no leading digit.
    static func isValidName(_ name: String) -> Bool {
        guard let first = name.utf8.first, !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else { return false }
        return !name.utf8.contains(UInt8(ascii: "=")) && !name.utf8.contains(0)
    }

    /// A C environment string ends at its first NUL. AMQP short strings may contain NUL, so it
    /// is dropped: a hostile property must not cut or reshape the environment.
    static func clean(_ value: String) -> String {
        guard value.utf8.contains(0) else { return value }
        return String(String.UnicodeScalarView(value.unicodeScalars.filter { $0 != "\0" }))
    }
}
