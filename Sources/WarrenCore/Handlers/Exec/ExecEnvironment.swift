import AMQP
import Foundation

/// The environment of an `exec` handler's process: the part of warren's own environment that
/// `inherit_env` lets through (`InheritedEnvironment`), then the handler's configured `env` on
/// top, then the message's `WARREN_*` variables on top of both, so neither an inherited nor a
/// configured variable can impersonate message metadata.
///
/// The fixed part is merged and laid out as C strings once, when the handler is built; a run
/// only appends the per-message variables to a copy.
struct ExecEnvironment: Sendable {
    struct InvalidName: Error, CustomStringConvertible {
        var name: String
        var description: String { "env: \"\(name)\" is not a valid environment variable name (empty, contains '=' or NUL, or starts with a digit)" }
    }

    /// The variables that carry a short string of the message; each has a `_BASE64` twin, set
    /// instead of it when the value is not UTF-8 or holds a NUL (`SinkText`).
    static let shortStringVariables = [
        "WARREN_EXCHANGE", "WARREN_ROUTING_KEY", "WARREN_MESSAGE_ID", "WARREN_CORRELATION_ID", "WARREN_REPLY_TO",
        "WARREN_CONTENT_TYPE", "WARREN_TYPE",
    ]

    /// The variables a message may set, whatever the inherited or configured environment says:
    /// none of them is inherited, so a variable that is absent for this message is absent.
    static let messageVariables: Set<String> = Set(
        ["WARREN_QUEUE", "WARREN_REDELIVERED", "WARREN_ATTEMPT", "WARREN_STREAM_OFFSET", "WARREN_HEADERS", "WARREN_HEADERS_BASE64", "WARREN_HEADERS_OMITTED",
         "TRACEPARENT", "TRACESTATE"]
            + shortStringVariables + shortStringVariables.map { "\($0)_BASE64" })

    /// Warren's environment merged with the configured `env`.
    let base: [String: String]
    /// `base` without the message variables, as `NAME=value` strings.
    private let fixed: CStringBlock

    /// Where a bare program name is looked up when the process gets no `PATH`: warren's own.
    private let fallbackSearchPath: String?

    /// - Parameter inherited: what the process inherits, already filtered by `inherit_env`.
    init(
        inherited: [String: String] = ProcessInfo.processInfo.environment, configured: [String: String], fallbackSearchPath: String? = nil
    ) throws(InvalidName) {
        self.fallbackSearchPath = fallbackSearchPath
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

    /// The `PATH` a bare program name is looked up on: the one the process will run with, else
    /// warren's own (the way a `pipe` worker's program is found), else the usual directories.
    var searchPath: String { base["PATH"] ?? fallbackSearchPath ?? "/usr/local/bin:/usr/bin:/bin" }

    /// The full environment for one message, as `envp` strings. Absent properties are empty
    /// strings, so a program can rely on each variable being set, or else its `_BASE64` twin
    /// holding the exact bytes of a value an environment string cannot carry.
    func environment(for input: HandlerInput) -> CStringBlock {
        let p = input.properties
        var values = fixed
        func put(_ name: String, _ value: AMQPString?) {
            switch SinkText.environment(value ?? "") {
            case .plain(let text): values.append(name: name, value: text)
            case .base64(let encoded): values.append(name: "\(name)_BASE64", value: encoded)
            }
        }
        values.append(name: "WARREN_QUEUE", value: Self.clean(input.queue))
        put("WARREN_EXCHANGE", input.exchange)
        put("WARREN_ROUTING_KEY", input.routingKey)
        put("WARREN_MESSAGE_ID", p.messageID)
        put("WARREN_CORRELATION_ID", p.correlationID)
        put("WARREN_REPLY_TO", p.replyTo)
        put("WARREN_CONTENT_TYPE", p.contentType)
        put("WARREN_TYPE", p.type)
        values.append(name: "WARREN_REDELIVERED", value: input.redelivered ? "1" : "0")
        values.append(name: "WARREN_ATTEMPT", value: String(input.attempt))
        if let offset = input.streamOffset { values.append(name: "WARREN_STREAM_OFFSET", value: String(offset)) }
        // The run's trace context, under the names OpenTelemetry's environment carrier uses
        // (docs/tracing.md); never inherited, so a TRACEPARENT of warren's own cannot leak in.
        values.append(name: "TRACEPARENT", value: input.trace.traceparent)
        if let state = input.trace.state { values.append(name: "TRACESTATE", value: state) }
        // The same JSON shape every handler kind sees (`MessageJSON`), capped so that no message
        // can push the environment past what exec accepts: whatever room the rest leaves under
        // the environment budget, at most `HeadersVariable.maxBytes`. The exact table, when the
        // JSON had to leave a binary entry out, only if it fits the same budget.
        let reserved = "WARREN_HEADERS=".utf8.count + 1 + "WARREN_HEADERS_OMITTED=".utf8.count + 21
        let room = HeadersVariable.maxEnvironmentBytes - values.bytes.count - reserved
        let limit = min(HeadersVariable.maxBytes, max(room, 2))
        var lossy = false
        let (headers, omitted) = HeadersVariable.json(p.headers, limit: limit, lossy: &lossy)
        values.append(name: "WARREN_HEADERS", value: String(decoding: headers, as: UTF8.self))
        values.append(name: "WARREN_HEADERS_OMITTED", value: String(omitted))
        if lossy, let encoded = MessageJSON.headersBase64(p.headers),
            encoded.utf8.count <= min(HeadersVariable.maxBytes, room - headers.count)
        {
            values.append(name: "WARREN_HEADERS_BASE64", value: encoded)
        }
        return values
    }

    /// POSIX names: no `=`, no NUL, not empty, no leading digit.
    static func isValidName(_ name: String) -> Bool {
        guard let first = name.utf8.first, !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else { return false }
        return !name.utf8.contains(UInt8(ascii: "=")) && !name.utf8.contains(0)
    }

    /// A C environment string ends at its first NUL, so it is dropped from inherited and
    /// configured values (message values never get here: they follow `SinkText`).
    static func clean(_ value: String) -> String {
        guard value.utf8.contains(0) else { return value }
        return String(String.UnicodeScalarView(value.unicodeScalars.filter { $0 != "\0" }))
    }
}
