import AMQP

/// The live broker contradicts the configuration: an inequivalent queue or exchange, a
/// `declare = false` queue that does not exist, a referenced exchange that is missing, a
/// permission the user lacks. Each problem names the configuration entry and how to fix it.
public struct TopologyError: Error, Sendable, CustomStringConvertible {
    public struct Problem: Sendable, Hashable, CustomStringConvertible {
        public var configPath: String
        public var message: String
        /// The broker may accept the same declaration later without any change to the file: the
        /// queue is exclusive to another connection (405, e.g. a previous warren whose connection
        /// the broker has not yet noticed is gone), or the broker reported an error of its own.
        /// Such a refusal is retried with back-off, never a configuration error (exit 78).
        public var isTransient = false
        /// The configured queue the problem holds back (its own declaration, retry ladder,
        /// parking queue or bindings); nil for what all queues share (exchanges).
        public var queue: String?
        public var description: String { "\(configPath): \(message)" }

        public init(configPath: String, message: String, isTransient: Bool = false, queue: String? = nil) {
            self.configPath = configPath
            self.message = message
            self.isTransient = isTransient
            self.queue = queue
        }
    }

    public var problems: [Problem]

    public init(problems: [Problem]) {
        self.problems = problems
    }

    /// Every problem may go away by itself: retry rather than give up on the configuration.
    public var isTransient: Bool { problems.allSatisfy(\.isTransient) }

    /// A reply code that says the file is wrong (403 access refused, 404 not found, 406
    /// precondition failed); anything else is the broker's own state.
    static func isConfigurationReply(_ code: UInt16?) -> Bool {
        code == 403 || code == 404 || code == 406
    }

    public var description: String { problems.map(\.description).joined(separator: "\n") }
}

/// Turns RabbitMQ's `PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in
/// vhost '/': received 'classic' but current is 'quorum'` into a sentence with the fix.
enum Inequivalence {
    struct Parsed: Equatable {
        var argument: String
        var received: String
        var current: String
    }

    static func parse(_ replyText: String) -> Parsed? {
        guard let argStart = replyText.range(of: "inequivalent arg '") else { return nil }
        let afterArg = replyText[argStart.upperBound...]
        guard let argEnd = afterArg.firstIndex(of: "'") else { return nil }
        let argument = String(afterArg[..<argEnd])
        guard let receivedStart = replyText.range(of: "received ") else { return Parsed(argument: argument, received: "?", current: "?") }
        let received = value(after: receivedStart.upperBound, in: replyText)
        guard let currentStart = replyText.range(of: "but current is ") else { return Parsed(argument: argument, received: received, current: "?") }
        let current = value(after: currentStart.upperBound, in: replyText)
        return Parsed(argument: argument, received: received, current: current)
    }

    /// RabbitMQ writes values as `'quorum'`, `none` or `the value 'quorum' of type 'longstr'`.
    private static func value(after index: String.Index, in text: String) -> String {
        var rest = text[index...]
        if rest.hasPrefix("the value ") { rest = rest.dropFirst("the value ".count) }
        if rest.hasPrefix("'"), let end = rest.dropFirst().firstIndex(of: "'") {
            return String(rest[rest.index(after: rest.startIndex)..<end])
        }
        return String(rest.prefix { $0 != " " && $0 != "," })
    }

    static func explain(kind: String, name: String, error: AMQPError, configKey: String) -> String {
        guard let text = error.replyText, let parsed = parse(text) else {
            return "\(kind) \"\(name)\" exists with different settings: \(error)"
        }
        let deleteHint = kind == "queue"
            ? "delete it (rabbitmqctl delete_queue \(name), which drops its messages)"
            : "delete it (rabbitmqctl delete_exchange \(name))"
        return "\(kind) \"\(name)\" already exists with \(parsed.argument) = \(parsed.current), but the configuration asks for \(parsed.received); "
            + "\(deleteHint) or change \(configKey) to match"
    }

    static func configKey(for argument: String, step path: String, typeKey: String) -> String {
        switch argument {
        case "x-queue-type": typeKey
        case "durable", "auto_delete", "exclusive", "internal": "\(path).\(argument)"
        case "type": "\(path).type"
        case "x-single-active-consumer": "\(path).single_active_consumer"
        default: "\(path).arguments.\"\(argument)\""
        }
    }
}
