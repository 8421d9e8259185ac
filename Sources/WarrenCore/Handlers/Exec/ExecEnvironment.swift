import AMQP
import Foundation
import Subprocess

/// The environment of an `exec` handler's process (SPEC 5.1): warren's own environment, then
/// the handler's configured `env` on top, then the message's `WARREN_*` variables on top of both,
/// so neither an inherited nor a configured variable can impersonate message metadata.
///
/// The fixed part is merged once, when the handler is built; a run only adds the per-message
/// variables to a copy.
struct ExecEnvironment: Sendable {
    struct InvalidName: Error, CustomStringConvertible {
        var name: String
        var description: String { "env: \"\(name)\" is not a valid environment variable name (empty, contains '=' or NUL, or starts with a digit)" }
    }

    /// Warren's environment merged with the configured `env`.
    let base: [Environment.Key: String]

    init(inherited: [String: String] = ProcessInfo.processInfo.environment, configured: [String: String]) throws(InvalidName) {
        var base: [Environment.Key: String] = [:]
        base.reserveCapacity(inherited.count + configured.count + 11)
        // An odd inherited name cannot come from the operator's config; skip it rather than
        // fail every run (the process library refuses the whole environment otherwise).
        for (name, value) in inherited where Self.isValidName(name) {
            base[Self.key(name)] = Self.clean(value)
        }
        for (name, value) in configured {
            guard Self.isValidName(name) else { throw InvalidName(name: name) }
            base[Self.key(name)] = Self.clean(value)
        }
        self.base = base
    }

    /// The `PATH` a bare program name is looked up on: the one the process will run with.
    var searchPath: String { base["PATH"] ?? "/usr/local/bin:/usr/bin:/bin" }

    /// The full environment for one message. Absent properties are empty strings, so a
    /// program can rely on every variable being set.
    func environment(for input: HandlerInput) -> Environment {
        let p = input.properties
        var values = base
        values["WARREN_QUEUE"] = Self.clean(input.queue)
        values["WARREN_EXCHANGE"] = Self.clean(input.exchange)
        values["WARREN_ROUTING_KEY"] = Self.clean(input.routingKey)
        values["WARREN_MESSAGE_ID"] = Self.clean(p.messageID ?? "")
        values["WARREN_CORRELATION_ID"] = Self.clean(p.correlationID ?? "")
        values["WARREN_REPLY_TO"] = Self.clean(p.replyTo ?? "")
        values["WARREN_CONTENT_TYPE"] = Self.clean(p.contentType ?? "")
        values["WARREN_TYPE"] = Self.clean(p.type ?? "")
        values["WARREN_REDELIVERED"] = input.redelivered ? "1" : "0"
        values["WARREN_ATTEMPT"] = String(input.attempt)
        // The same JSON shape every handler kind sees (`MessageJSON`).
        values["WARREN_HEADERS"] = String(decoding: MessageJSON.headersJSON(p.headers), as: UTF8.self)
        return .custom(values)
    }

    /// POSIX names: no `=`, no NUL, not empty, no leading digit.
    static func isValidName(_ name: String) -> Bool {
        guard let first = name.utf8.first, !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else { return false }
        return !name.utf8.contains(UInt8(ascii: "=")) && !name.utf8.contains(0)
    }

    /// A C environment string ends at its first NUL, and the process library refuses such a
    /// value (failing the run). AMQP short strings may contain NUL, so it is dropped: a hostile
    /// property must not decide the message's fate.
    static func clean(_ value: String) -> String {
        guard value.utf8.contains(0) else { return value }
        return String(String.UnicodeScalarView(value.unicodeScalars.filter { $0 != "\0" }))
    }

    private static func key(_ name: String) -> Environment.Key {
        // `init?(rawValue:)` never fails; the optional is an artefact of RawRepresentable.
        Environment.Key(rawValue: name) ?? "WARREN_INVALID"
    }
}
