import Foundation

/// The keys only stream queues use: a queue's `offset` and the `[state]` table where warren
/// keeps the offsets it processed.
extension ConfigurationDecoding {
    /// The forms `offset` accepts, for messages.
    static let offsetForms =
        #""first", "last", "next", an offset (an integer, 0 or more), a date-time with a time zone such as 2026-12-01T00:00:00Z, or a duration followed by " ago" such as "2h ago""#

    /// `offset` of a `[[queues]]` entry, read whatever the queue's type so that the key is known;
    /// on a queue that is not a stream it is an error of its own, and its value is not read.
    func decodeStreamOffset(_ table: TableReader, type: QueueType, typeBroken: Bool) -> StreamOffset? {
        guard let node = table.node("offset") else { return nil }
        let path = table.at("offset")
        if type != .stream && !typeBroken {
            d.report(path, "offset applies to stream queues only (type = \"stream\")")
            return nil
        }
        switch node {
        case .string:
            guard let text = d.string(node, at: path) else { return nil }
            return streamOffset(text: text, node, at: path)
        case .integer(let value):
            guard value >= 0 else {
                d.report(path, "expected an offset of 0 or more, got \(value)")
                return nil
            }
            return .offset(Int64(value))
        case .dateTime(let text, let instant):
            guard let instant else {
                d.report(path, "the date-time \(text) has no time zone: give a time zone, e.g. \(text)Z for UTC or \(text)+01:00")
                return nil
            }
            return .timestamp(instant)
        default:
            d.report(path, "expected \(Self.offsetForms), got \(node.rendered)")
            return nil
        }
    }

    private func streamOffset(text: String, _ node: ConfigNode, at path: [ConfigPathComponent]) -> StreamOffset? {
        switch text {
        case "first": return .first
        case "last": return .last
        case "next": return .next
        default: break
        }
        let suffix = " ago"
        guard text.hasSuffix(suffix) else {
            var message = "expected \(Self.offsetForms), got \(node.rendered)"
            if let guess = Suggestion.closest(to: text, among: ["first", "last", "next"]) { message += " (did you mean \"\(guess)\"?)" }
            d.report(path, message)
            return nil
        }
        guard let span = DurationText.parse(String(text.dropLast(suffix.count))) else {
            d.report(path, "expected a duration with a unit before \" ago\", such as \"2h ago\" or \"90m ago\", got \(node.rendered)")
            return nil
        }
        guard span > .zero else {
            d.report(path, "expected a duration above zero before \" ago\", got \(node.rendered)")
            return nil
        }
        return .ago(span)
    }

    // MARK: [state]

    func decodeState(_ table: TableReader) -> StateConfiguration {
        var state = StateConfiguration()
        if let v = table.string("directory") {
            if v.hasPrefix("/") {
                state.directory = v
            } else {
                d.report(table.at("directory"), "expected an absolute path (starting with /), got \"\(v)\"")
            }
        }
        if let v = table.int("offset_flush_every", in: 1...Int.max, "a positive integer") { state.offsetFlushEvery = v }
        if let v = table.duration("offset_flush_interval") { state.offsetFlushInterval = v }
        table.finish()
        return state
    }
}
