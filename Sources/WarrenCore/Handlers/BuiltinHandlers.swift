import AMQP
import Foundation
import Logging

/// `noop`: success, nothing else. For benchmarks and for queues that only need draining.
struct NoopHandler: MessageHandler {
    var enforcesOwnTimeout: Bool { true }
    var threading: HandlerThreading { .neverBlocks }

    func handle(_ input: HandlerInput) async -> HandlerOutcome { .success(.none) }
    func outcomeAtOnce(_ input: HandlerInput) -> HandlerOutcome? { .success(.none) }
}

/// `log`: one info line per message with its metadata and the start of its body.
struct LogMessageHandler: MessageHandler {
    let name: String
    let logger: Logger
    static let previewBytes = 256
    var enforcesOwnTimeout: Bool { true }

    func handle(_ input: HandlerInput) async -> HandlerOutcome {
        let head = input.body.prefix(Self.previewBytes)
        var preview = String(decoding: head, as: UTF8.self)
        if input.body.count > Self.previewBytes { preview += "…" }
        logger.info("message", metadata: [
            LogKeys.queue: "\(input.queue)", LogKeys.handler: "\(name)", LogKeys.messageID: "\(input.properties.messageID ?? "")",
            LogKeys.deliveryTag: "\(input.deliveryTag)", LogKeys.attempt: "\(input.attempt)", "exchange": "\(input.exchange)",
            "routing_key": "\(input.routingKey)", "type": "\(input.properties.type ?? "")", "bytes": "\(input.body.count)",
            "body": "\(preview)",
        ])
        return .success(.none)
    }
}

/// `republish`: a copy to `exchange` / `routing_key` (with `{routing_key}`, `{queue}`, `{type}`
/// expanded), confirmed before the input is acked: a shovel with at-least-once semantics.
struct RepublishHandler: MessageHandler {
    let exchange: String
    let routingKey: String
    var enforcesOwnTimeout: Bool { true }
    var threading: HandlerThreading { .neverBlocks }

    func handle(_ input: HandlerInput) async -> HandlerOutcome { copy(of: input) }
    func outcomeAtOnce(_ input: HandlerInput) -> HandlerOutcome? { copy(of: input) }

    private func copy(of input: HandlerInput) -> HandlerOutcome {
        let key = Self.expand(routingKey, input)
        // A copy of the input, so it continues the delivery's context, not this run's.
        var properties = input.properties
        input.deliveryTrace.stamp(&properties.headers, replacing: true)
        let copy = OutgoingMessage(
            exchange: Self.expand(exchange, input).lossyText, routingKey: key, mandatory: true, properties: properties, body: input.body)
        return .success(HandlerOutput(publishes: [copy]))
    }

    /// The template with each placeholder replaced by the exact bytes of its value, in one pass
    /// (a value that contains a placeholder's name is not expanded again).
    static func expand(_ template: String, _ input: HandlerInput) -> AMQPString {
        guard template.contains("{") else { return AMQPString(template) }
        let placeholders: [(name: String, value: AMQPString)] = [
            ("{routing_key}", input.routingKey), ("{queue}", AMQPString(input.queue)), ("{type}", input.properties.type ?? ""),
        ]
        var out: [UInt8] = []
        var rest = Substring(template)
        while let open = rest.firstIndex(of: "{") {
            out.append(contentsOf: rest[..<open].utf8)
            let tail = rest[open...]
            if let match = placeholders.first(where: { tail.hasPrefix($0.name) }) {
                out.append(contentsOf: match.value.bytes)
                rest = tail.dropFirst(match.name.count)
            } else {
                out.append(UInt8(ascii: "{"))
                rest = tail.dropFirst()
            }
        }
        out.append(contentsOf: rest.utf8)
        return AMQPString(bytes: out)
    }
}

/// `file`: appends one JSON object per message to `path`. Success is reported only
/// once the line is written and, per `fsync`, on disk; a full disk is a failure like any other,
/// so the policy retries and nothing is lost.
struct FileHandler: MessageHandler {
    let sink: FileSink

    func handle(_ input: HandlerInput) async -> HandlerOutcome {
        var object: [String: MessageJSON.Value] = [
            "queue": .string(input.queue), "redelivered": .bool(input.redelivered), "attempt": .int(Int64(input.attempt)),
            "properties": MessageJSON.properties(input.properties), "received_at": .string(RetryPlanner.rfc3339(Date())),
        ]
        MessageJSON.put("exchange", input.exchange, into: &object)
        MessageJSON.put("routing_key", input.routingKey, into: &object)
        MessageJSON.body(input.body, into: &object)
        do {
            try await sink.append(try MessageJSON.line(object))
            return .success(.none)
        } catch {
            return .failure(HandlerFailure("writing \(sink.path) failed: \(error)"))
        }
    }

    func shutdown() async { await sink.close() }
}
