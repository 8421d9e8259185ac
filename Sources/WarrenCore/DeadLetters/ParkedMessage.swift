import AMQP
import Foundation

/// A message found in a parking queue, read from its headers (docs/delivery.md lists them):
/// what `warren dead-letters` lists, selects and replays. Every header is untrusted (anyone can
/// publish to a parking queue): a missing or ill-typed one reads as absent.
public struct ParkedMessage: Sendable {
    public let delivery: Delivery

    public init(_ delivery: Delivery) {
        self.delivery = delivery
    }

    private var headers: FieldTable? { delivery.properties.headers }

    private func text(_ key: String) -> String? {
        switch headers?[key] {
        case .string(let value): value
        case .nonUTF8String(let bytes), .bytes(let bytes): String(decoding: bytes, as: UTF8.self)
        default: nil
        }
    }

    /// Parked by warren: it carries `x-warren-reason`.
    public var isWarrens: Bool { text("x-warren-reason") != nil }
    /// `x-warren-reason`, or `unknown` for a message warren did not park.
    public var reason: String { text("x-warren-reason") ?? "unknown" }
    public var handler: String? { text("x-warren-handler") }
    public var attempts: Int64? { headers?["x-warren-attempts"]?.integerValue }
    public var failedAt: String? { text("x-warren-failed-at") }
    /// The error's first line, at most 200 characters.
    public var errorLine: String? {
        guard let error = text("x-warren-error") else { return nil }
        let line = error.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        return line.count > 200 ? String(line.prefix(200)) + "..." : line
    }
    public var error: String? { text("x-warren-error") }
    public var originalExchange: String? { text(RetryPlanner.originalExchangeHeader) }
    public var originalRoutingKey: String? { text(RetryPlanner.originalRoutingKeyHeader) }
    public var messageID: AMQPString? { delivery.properties.messageID }
    public var bodyBytes: Int { delivery.oversizedBody?.size ?? delivery.body.count }

    /// When it was parked, parsed from `x-warren-failed-at`; nil when absent or not RFC 3339.
    public var failedAtDate: Date? {
        guard let failedAt else { return nil }
        let format = ISO8601DateFormatter()
        format.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = format.date(from: failedAt) { return date }
        format.formatOptions = [.withInternetDateTime]
        return format.date(from: failedAt)
    }

    /// The headers removed from a replayed copy: warren's forensic and attempt headers, and the
    /// broker's delivery count (a quorum parking queue raises it each time the message is
    /// looked at), so the replay's attempts start again at 1. (`x-warren-replays` is written
    /// anew, one higher.)
    public static func isStrippedOnReplay(_ key: String) -> Bool {
        key.hasPrefix("x-warren-") || key == "x-delivery-count"
    }

    public static let replaysHeader = "x-warren-replays"

    /// The copy a replay publishes: same body and properties, to its original exchange and
    /// routing key (or `toQueue` through the default exchange), without warren's forensic and
    /// attempt headers, with `x-warren-replays` one more than before. Nil when it has no
    /// original destination and no `toQueue` was given, or when its body was too large to keep
    /// and could not be spooled (only the broker has it: it stays parked).
    public func replayCopy(toQueue: String? = nil) -> OutgoingMessage? {
        var spooled: SpooledBody?
        if let oversized = delivery.oversizedBody {
            guard case .success(let body) = oversized.spool else { return nil }
            spooled = body
        }
        let exchange: String
        let routingKey: String
        if let toQueue {
            (exchange, routingKey) = ("", toQueue)
        } else if let originalExchange, let originalRoutingKey {
            (exchange, routingKey) = (originalExchange, originalRoutingKey)
        } else {
            return nil
        }
        var properties = delivery.properties
        let previous = headers?[Self.replaysHeader]?.integerValue ?? 0
        var kept = FieldTable((headers?.entries ?? []).filter { !Self.isStrippedOnReplay($0.key.text ?? "") })
        kept[Self.replaysHeader] = .int64(previous == .max ? previous : max(0, previous) + 1)
        properties.headers = kept
        return OutgoingMessage(
            exchange: exchange, routingKey: routingKey, mandatory: true, properties: properties, body: delivery.body, spooledBody: spooled)
    }
}

/// Which parked messages a `dead-letters` command acts on: every filter given must match (AND).
public struct ParkedSelection: Sendable {
    public var reason: String?
    public var handler: String?
    public var messageID: String?
    /// `purge --older-than`: parked before this time (messages without a readable
    /// `x-warren-failed-at` never match).
    public var parkedBefore: Date?

    public init(reason: String? = nil, handler: String? = nil, messageID: String? = nil, parkedBefore: Date? = nil) {
        self.reason = reason
        self.handler = handler
        self.messageID = messageID
        self.parkedBefore = parkedBefore
    }

    public func matches(_ message: ParkedMessage) -> Bool {
        if let reason, message.reason != reason { return false }
        if let handler, message.handler != handler { return false }
        if let messageID, message.messageID?.text != messageID { return false }
        if let parkedBefore {
            guard let at = message.failedAtDate, at < parkedBefore else { return false }
        }
        return true
    }
}

extension ParkedMessage {
    /// One JSON object for `dead-letters list --json` (keys sorted, ended by a newline). Throws
    /// only for a header value JSON cannot carry (a NaN or infinite float).
    public func jsonLine() throws -> [UInt8] {
        var lossy = false
        func string(_ value: String?) -> MessageJSON.Value { value.map { .string($0) } ?? .null }
        var object: [String: MessageJSON.Value] = [
            "reason": .string(reason),
            "handler": string(handler),
            "attempts": attempts.map { .int($0) } ?? .null,
            "failed_at": string(failedAt),
            "error": string(error),
            "original_exchange": string(originalExchange),
            "original_routing_key": string(originalRoutingKey),
            "body_bytes": .int(Int64(bodyBytes)),
            "headers": MessageJSON.headers(delivery.properties.headers, lossy: &lossy),
        ]
        // `message_id_base64` instead when it is not UTF-8, as everywhere else.
        object["message_id"] = .null
        MessageJSON.put("message_id", messageID, into: &object)
        return try MessageJSON.line(object)
    }

    /// One line for `dead-letters list`: `key=value` pairs, values quoted when they hold a space,
    /// the error cut to its first line.
    public var textLine: String {
        func pair(_ key: String, _ value: String?) -> String {
            let text = value ?? "-"
            let needsQuotes = text.isEmpty || text.contains { $0 == " " || $0 == "\"" || $0 == "=" || $0.isNewline }
            return "\(key)=" + (needsQuotes ? "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" : text)
        }
        return [
            pair("message_id", messageID.map { $0.text ?? "base64:" + Data($0.bytes).base64EncodedString() }), pair("reason", reason), pair("handler", handler),
            pair("attempts", attempts.map(String.init)), pair("failed_at", failedAt), pair("error", errorLine),
        ].joined(separator: " ")
    }
}

/// Where `warren dead-letters QUEUE` finds the parked copies: a configured queue's parking
/// queue (`QUEUE.dead`), else the queue named (any queue holding parked copies, such as the one
/// a custom `dead_letter` destination routes to).
public enum ParkingQueues {
    public static func holding(_ name: String, in configuration: Configuration) -> String {
        configuration.queues.first { $0.name == name }?.parkingQueue ?? name
    }
}

extension ParkedSelection {
    /// `--older-than 2h`: parked before `now` minus the duration (the configuration's duration
    /// syntax); nil when the text is not a duration.
    public static func cutoff(olderThan text: String, now: Date = Date()) -> Date? {
        guard let duration = DurationText.parse(text) else { return nil }
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        return now.addingTimeInterval(-seconds)
    }
}
