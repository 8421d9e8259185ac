import AMQP

/// Everything Warren declares for a configuration, in the order it must be declared:
/// exchanges, then queues (the configured ones and those Warren needs for them: the retry
/// ladder `<queue>.retry.<delay>` and the parking queue `<queue>.dead`), then bindings.
public struct TopologyPlan: Sendable {
    public struct ExchangeStep: Sendable {
        public var declaration: ExchangeDeclaration
        /// `exchanges[i]` in the file.
        public var configPath: String
    }

    public enum QueueRole: Sendable, Hashable {
        case configured
        /// A delay queue of the retry ladder: messages wait out the TTL, then dead-letter back.
        case retry(of: String, delay: Duration)
        /// The default dead-letter destination of a queue.
        case parking(of: String)
    }

    public struct QueueStep: Sendable {
        public var declaration: QueueDeclaration
        public var role: QueueRole
        /// `false` for `declare = false` queues: only checked passively.
        public var declare: Bool
        public var configPath: String
        /// The key that sets the queue type, for messages about a type mismatch.
        public var typeKey: String

        /// What an earlier warren declared for this queue, with fewer of warren's arguments:
        /// accepted when the broker refuses `declaration` for an existing queue (TopologyDeclarer).
        public var earlier: Earlier?

        /// The configured queue this step is for.
        public var owner: String {
            switch role {
            case .configured: declaration.name
            case .retry(let owner, _), .parking(let owner): owner
            }
        }
    }

    public struct Earlier: Sendable {
        public enum Kind: Sendable {
            /// A quorum queue's retry queue made before ladders were quorum queues: classic.
            case classicLadder
            /// A quorum queue with `dead_letter = "broker"` made before warren declared
            /// at-least-once dead-lettering for it.
            case atMostOnceDeadLettering
        }

        public var declaration: QueueDeclaration
        public var kind: Kind
    }

    public struct BindingStep: Sendable {
        public var queue: String
        public var exchange: String
        public var routingKey: String
        public var arguments: FieldTable
        public var configPath: String
    }

    public var exchanges: [ExchangeStep] = []
    public var queues: [QueueStep] = []
    public var bindings: [BindingStep] = []
    /// Exchanges the configuration uses (bindings, dead letters) without declaring them: they
    /// must exist already. The default exchange and `amq.*` are not listed.
    public var referencedExchanges: [(name: String, configPath: String)] = []

    public init(_ configuration: Configuration) {
        for (index, exchange) in configuration.exchanges.enumerated() {
            exchanges.append(ExchangeStep(
                declaration: ExchangeDeclaration(
                    name: exchange.name, type: exchange.type, durable: exchange.durable, autoDelete: exchange.autoDelete,
                    internal: exchange.internal, arguments: exchange.arguments),
                configPath: "exchanges[\(index)]"))
        }
        let declared = Set(configuration.exchanges.map(\.name))
        func reference(_ name: String, _ path: String) {
            guard !name.isEmpty, !name.hasPrefix("amq."), !declared.contains(name),
                !referencedExchanges.contains(where: { $0.name == name })
            else { return }
            referencedExchanges.append((name, path))
        }

        for (index, queue) in configuration.queues.enumerated() {
            let path = "queues[\(index)]"
            let main = Self.mainDeclaration(queue)
            var earlierMain: Earlier?
            let added = Self.brokerDeadLetterArguments(queue)
            if !added.isEmpty {
                var declaration = main
                for entry in added { declaration.arguments[entry.key] = nil }
                earlierMain = Earlier(declaration: declaration, kind: .atMostOnceDeadLettering)
            }
            queues.append(QueueStep(
                declaration: main, role: .configured, declare: queue.declare, configPath: path,
                typeKey: "\(path).type", earlier: earlierMain))
            if let retry = queue.retry {
                for delay in retry.delaySeries {
                    let declaration = Self.retryDeclaration(queue, delay: delay)
                    var classic = declaration
                    for key in Self.quorumLadderArguments { classic.arguments[key] = nil }
                    queues.append(QueueStep(
                        declaration: declaration, role: .retry(of: queue.name, delay: delay), declare: true,
                        configPath: "\(path).retry", typeKey: "\(path).retry",
                        earlier: queue.type == .quorum ? Earlier(declaration: classic, kind: .classicLadder) : nil))
                }
            }
            if let parking = queue.parkingQueue {
                var arguments: FieldTable = [:]
                // A replicated queue's parking queue is replicated too (a quorum queue: parked
                // messages are taken one by one, which a stream cannot do).
                if queue.type != .classic { arguments["x-queue-type"] = "quorum" }
                queues.append(QueueStep(
                    declaration: QueueDeclaration(name: parking, durable: queue.durable || queue.type != .classic, arguments: arguments),
                    role: .parking(of: queue.name), declare: true, configPath: "\(path).dead_letter", typeKey: "\(path).type"))
            } else if case .publish(let exchange, _) = queue.deadLetter {
                reference(exchange, "\(path).dead_letter.exchange")
            }
            for (b, binding) in queue.bindings.enumerated() {
                let bindingPath = "\(path).bindings[\(b)]"
                bindings.append(BindingStep(
                    queue: queue.name, exchange: binding.exchange, routingKey: binding.routingKey, arguments: binding.arguments,
                    configPath: bindingPath))
                reference(binding.exchange, "\(bindingPath).exchange")
            }
        }
    }

    /// The steps for some of the configured queues only (with their retry and parking queues and
    /// bindings): what a reload declares for the queues it adds or changes. Exchanges are kept,
    /// since re-declaring an existing one is harmless and a changed one must be refused.
    public func restricted(to queueNames: Set<String>) -> TopologyPlan {
        var plan = self
        plan.queues = queues.filter { queueNames.contains($0.owner) }
        plan.bindings = bindings.filter { queueNames.contains($0.queue) }
        return plan
    }

    /// A delay queue of the retry ladder. It is as available as the queue it serves: for a
    /// quorum queue it is a quorum queue too (replicated, so it does not depend on one cluster
    /// node), and its expired messages go back with at-least-once dead-lettering (the broker
    /// keeps each one until the main queue has confirmed it; that strategy needs
    /// `x-overflow = reject-publish`). A classic queue's ladder is classic and durable like it.
    static func retryDeclaration(_ queue: QueueConfiguration, delay: Duration) -> QueueDeclaration {
        var arguments: FieldTable = [
            "x-message-ttl": .int64(delay.milliseconds),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": .string(queue.name),
        ]
        let name = QueueConfiguration.retryQueueName(queue.name, delay: delay)
        switch queue.type {
        case .classic:
            return QueueDeclaration(name: name, durable: queue.durable, arguments: arguments)
        case .quorum, .stream:
            // A stream's ladder too: RabbitMQ's at-most-once dead-lettering into a stream
            // loses messages; at-least-once from a quorum queue delivers them.
            arguments["x-queue-type"] = "quorum"
            arguments["x-dead-letter-strategy"] = "at-least-once"
            arguments["x-overflow"] = "reject-publish"
            return QueueDeclaration(name: name, durable: true, arguments: arguments)
        }
    }

    /// For a quorum queue whose dead letters are the broker's (`dead_letter = "broker"`), what
    /// makes that dead-lettering at-least-once: the broker keeps a rejected message until the
    /// dead-letter queue confirmed it, and applies that strategy only with `x-overflow =
    /// reject-publish`. Left out when the file sets either argument itself.
    static func brokerDeadLetterArguments(_ queue: QueueConfiguration) -> FieldTable {
        guard queue.type == .quorum, queue.deadLetter == .broker,
            queue.arguments["x-dead-letter-strategy"] == nil, queue.arguments["x-overflow"] == nil
        else { return [:] }
        return ["x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"]
    }

    /// What a quorum queue's ladder adds to a classic one's arguments.
    static let quorumLadderArguments = ["x-queue-type", "x-dead-letter-strategy", "x-overflow"]

    /// The configured queue's own declaration: its arguments plus what `type` and
    /// `single_active_consumer` mean on the wire.
    static func mainDeclaration(_ queue: QueueConfiguration) -> QueueDeclaration {
        var arguments = queue.arguments
        // Set explicitly for classic too, so that an existing queue of the other type is caught
        // as inequivalent instead of being silently accepted.
        arguments["x-queue-type"] = .string(queue.type.rawValue)
        if queue.singleActiveConsumer { arguments["x-single-active-consumer"] = .boolean(true) }
        for entry in brokerDeadLetterArguments(queue) { arguments[entry.key] = entry.value }
        return QueueDeclaration(name: queue.name, durable: queue.durable, passive: !queue.declare, arguments: arguments)
    }
}
