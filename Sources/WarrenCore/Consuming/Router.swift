import AMQP

/// Picks the handlers for a delivery: the queue's one handler, or the first route whose match
/// accepts it. `nil` means unrouted.
public struct Router: Sendable {
    public let target: QueueTarget

    /// A single handler's route, made once: not an array allocated for every delivery.
    private let single: [String]?

    public init(_ target: QueueTarget) {
        self.target = target
        if case .handler(let name) = target { single = [name] } else { single = nil }
    }

    public func handlers(for delivery: Delivery) -> [String]? {
        switch target {
        case .handler:
            return single
        case .routes(let routes, _):
            return routes.first { Self.matches($0.match, delivery) }?.handlers
        }
    }

    /// Every condition present must hold; an empty match accepts everything.
    static func matches(_ match: RouteMatch, _ delivery: Delivery) -> Bool {
        if let type = match.type, !(delivery.properties.type?.hasBytes(of: type) ?? false) { return false }
        if let pattern = match.routingKey, !topicMatches(pattern: pattern, routingKey: delivery.routingKey.lossyText) { return false }
        for (name, expected) in match.headers {
            guard let value = delivery.properties.headers?[name], text(value) == expected else { return false }
        }
        return true
    }

    /// Header values compared as text: strings as they are, numbers and booleans as written.
    static func text(_ value: FieldValue) -> String? {
        switch value {
        case .boolean(let b): return b ? "true" : "false"
        default: return value.stringValue ?? value.integerValue.map { "\($0)" }
        }
    }

    /// AMQP topic semantics: words separated by dots, `*` matches exactly one word, `#` zero or more.
    public static func topicMatches(pattern: String, routingKey: String) -> Bool {
        let p = pattern.split(separator: ".", omittingEmptySubsequences: false)
        let k = routingKey.split(separator: ".", omittingEmptySubsequences: false)
        // reachable[j]: the pattern prefix consumed so far can match the first j words.
        var reachable = [Bool](repeating: false, count: k.count + 1)
        reachable[0] = true
        for word in p {
            var next = [Bool](repeating: false, count: k.count + 1)
            if word == "#" {
                var any = false
                for j in 0...k.count {
                    any = any || reachable[j]
                    next[j] = any
                }
            } else {
                for j in 0..<k.count where reachable[j] && (word == "*" || word == k[j]) {
                    next[j + 1] = true
                }
            }
            reachable = next
        }
        return reachable[k.count]
    }
}
