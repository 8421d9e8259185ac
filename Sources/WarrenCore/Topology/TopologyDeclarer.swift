import AMQP
import Logging

/// Declares a `TopologyPlan` on a live connection (`warren run`), or verifies it without
/// creating anything that is absent (`warren check --connect`).
public struct TopologyDeclarer: Sendable {
    public let plan: TopologyPlan
    public let logger: Logger

    public init(plan: TopologyPlan, logger: Logger) {
        self.plan = plan
        self.logger = logger
    }

    /// What a declaration left for later: configured queues whose own steps (the queue, its
    /// retry ladder, its parking queue, its bindings) the broker refused for now, for a reason
    /// that may pass without any change to the file (a cluster node that holds one of them is
    /// down, a queue held exclusively by another connection). The rest of the plan is declared.
    public struct Outcome: Sendable {
        /// Configured queue name -> the refusals that hold it back.
        public var deferred: [String: [TopologyError.Problem]] = [:]
    }

    /// Declares everything it can. Throws `TopologyError` listing every problem when one of them
    /// is the file's (exit 78), or when a shared step (an exchange) is refused for now; throws
    /// the `AMQPError` that broke the connection. A queue refused for now is left out and
    /// returned in `deferred`: the caller consumes the others and retries it.
    @discardableResult
    public func declare(on connection: AMQPConnection) async throws -> Outcome {
        var problems: [TopologyError.Problem] = []
        for step in plan.exchanges {
            if let error = try await channelError({ () async throws(AMQPError) in try await connection.declareExchange(step.declaration) }) {
                problems.append(exchangeProblem(step, error))
            }
        }
        for (name, path) in plan.referencedExchanges {
            if let problem = try await checkReferencedExchange(name, path, on: connection) { problems.append(problem) }
        }
        for step in plan.queues {
            if let error = try await channelError({ () async throws(AMQPError) in _ = try await connection.declareQueue(step.declaration) }) {
                if try await acceptsEarlierDeclaration(step, error, on: connection) { continue }
                problems.append(TopologyRefusal.queueProblem(step, error))
            }
        }
        // The file is wrong somewhere, or something every queue needs is refused: nothing runs.
        let stopsEverything = { (problem: TopologyError.Problem) in !problem.isTransient || problem.queue == nil }
        var held = Set(problems.compactMap(\.queue))
        if !problems.contains(where: stopsEverything) {
            for step in plan.bindings where !held.contains(step.queue) {
                let bind = { () async throws(AMQPError) in
                    try await connection.bindQueue(step.queue, exchange: step.exchange, routingKey: step.routingKey, arguments: step.arguments)
                }
                if let error = try await channelError(bind) {
                    problems.append(.init(
                        configPath: step.configPath, message: "cannot bind queue \"\(step.queue)\" to exchange \"\(step.exchange)\": \(error)",
                        isTransient: !TopologyError.isConfigurationReply(error.replyCode), queue: step.queue))
                    held.insert(step.queue)
                }
            }
        }
        if problems.contains(where: stopsEverything) { throw TopologyError(problems: problems) }
        let outcome = Outcome(deferred: Dictionary(grouping: problems, by: { $0.queue ?? "" }))
        // While a queue is held back this runs at every retry: the caller reports the refusals.
        logger.log(level: outcome.deferred.isEmpty ? .info : .debug, "topology declared", metadata: [
            "exchanges": "\(plan.exchanges.count)", "queues": "\(plan.queues.count)", "bindings": "\(plan.bindings.count)",
            "deferred": "\(outcome.deferred.count)",
        ])
        return outcome
    }

    /// A queue declared by an earlier warren with fewer of warren's own arguments
    /// (`TopologyPlan.Earlier`), which the broker refuses to re-declare with them (406, naming
    /// whichever argument it compares first). It still works as before, so it is kept, with a
    /// warning saying what it lacks (docs/cluster.md says how to migrate). Recognised by the
    /// broker accepting the earlier declaration.
    private func acceptsEarlierDeclaration(_ step: TopologyPlan.QueueStep, _ error: AMQPError, on connection: AMQPConnection) async throws(AMQPError) -> Bool {
        guard error.replyCode == 406, step.declare, let earlier = step.earlier else { return false }
        guard try await channelError({ () async throws(AMQPError) in _ = try await connection.declareQueue(earlier.declaration) }) == nil else {
            return false
        }
        let metadata: Logger.Metadata = [LogKeys.queue: "\(step.declaration.name)", "config": "\(step.configPath)"]
        switch earlier.kind {
        case .classicLadder:
            logger.warning("retry queue is a classic queue: kept, but on a cluster it depends on its home node; see docs/cluster.md", metadata: metadata)
        case .atMostOnceDeadLettering:
            logger.warning("queue was declared with at-most-once dead-lettering: kept; see docs/cluster.md to make it at-least-once", metadata: metadata)
        }
        return true
    }

    /// Checks the plan against the broker: what exists must be equivalent, `declare = false`
    /// queues and referenced exchanges must exist; what `run` would create may be absent.
    /// Nothing absent is created. Returns the problems found (empty = consistent).
    public func verify(on connection: AMQPConnection) async throws -> [TopologyError.Problem] {
        var problems: [TopologyError.Problem] = []
        for step in plan.exchanges {
            var passive = step.declaration
            passive.passive = true
            if let error = try await channelError({ () async throws(AMQPError) in try await connection.declareExchange(passive) }) {
                if error.replyCode != 404 { problems.append(exchangeProblem(step, error)) }
                continue  // absent: run will declare it
            }
            // It exists: an active declare with the same settings is a no-op when they are
            // equivalent, and a 406 naming the difference when they are not.
            if let error = try await channelError({ () async throws(AMQPError) in try await connection.declareExchange(step.declaration) }) {
                problems.append(exchangeProblem(step, error))
            }
        }
        for (name, path) in plan.referencedExchanges {
            if let problem = try await checkReferencedExchange(name, path, on: connection) { problems.append(problem) }
        }
        for step in plan.queues {
            var passive = step.declaration
            passive.passive = true
            if let error = try await channelError({ () async throws(AMQPError) in _ = try await connection.declareQueue(passive) }) {
                if error.replyCode == 404 && !TopologyRefusal.isNodeDown(error) {
                    if !step.declare {
                        problems.append(.init(
                            configPath: step.configPath,
                            message: "queue \"\(step.declaration.name)\" does not exist, and declare = false says warren must not create it"))
                    }
                } else {
                    problems.append(TopologyRefusal.queueProblem(step, error))
                }
                continue
            }
            guard step.declare else { continue }
            if let error = try await channelError({ () async throws(AMQPError) in _ = try await connection.declareQueue(step.declaration) }) {
                if try await acceptsEarlierDeclaration(step, error, on: connection) { continue }
                problems.append(TopologyRefusal.queueProblem(step, error))
            }
        }
        return problems
    }

    /// Runs `operation`; a channel-level refusal (the broker closed the channel: 403, 404, 406)
    /// is returned, anything that broke the connection is thrown.
    private func channelError(_ operation: () async throws(AMQPError) -> Void) async throws(AMQPError) -> AMQPError? {
        do {
            try await operation()
            return nil
        } catch {
            if error.code == .channelClosed { return error }
            throw error
        }
    }

    private func checkReferencedExchange(_ name: String, _ path: String, on connection: AMQPConnection) async throws(AMQPError) -> TopologyError.Problem? {
        guard let error = try await channelError({ () async throws(AMQPError) in try await connection.declareExchange(ExchangeDeclaration(name: name, passive: true)) }) else {
            return nil
        }
        if error.replyCode == 404 {
            return .init(configPath: path, message: "exchange \"\(name)\" does not exist and is not declared in [[exchanges]]")
        }
        return .init(
            configPath: path, message: "cannot check exchange \"\(name)\": \(error)",
            isTransient: !TopologyError.isConfigurationReply(error.replyCode))
    }

    private func exchangeProblem(_ step: TopologyPlan.ExchangeStep, _ error: AMQPError) -> TopologyError.Problem {
        let name = step.declaration.name
        switch error.replyCode {
        case 406:
            let argument = error.replyText.flatMap(Inequivalence.parse)?.argument ?? ""
            let key = Inequivalence.configKey(for: argument, step: step.configPath, typeKey: "\(step.configPath).type")
            return .init(configPath: step.configPath, message: Inequivalence.explain(kind: "exchange", name: name, error: error, configKey: key))
        case 403:
            return .init(configPath: step.configPath, message: "the broker user may not declare exchange \"\(name)\": \(error.replyText ?? "\(error)")")
        default:
            return .init(configPath: step.configPath, message: "cannot declare exchange \"\(name)\": \(error)", isTransient: true)
        }
    }
}

/// How a refusal of the broker reads: the file's fault, or a state of the broker that passes.
enum TopologyRefusal {
    /// RabbitMQ's NOT_FOUND for a queue that exists on a cluster node that is down or cut off
    /// ("home node 'rabbit@b' of durable queue 'q' in vhost '/' is down or inaccessible"): it
    /// comes back with the node, and a reconnect may land on a node that can reach it.
    static func isNodeDown(_ error: AMQPError) -> Bool {
        guard error.replyCode == 404, let text = error.replyText else { return false }
        return text.contains("is down or inaccessible")
    }

    /// The problem, attributed to the configured queue the step is for.
    static func queueProblem(_ step: TopologyPlan.QueueStep, _ error: AMQPError) -> TopologyError.Problem {
        var problem = unattributed(step, error)
        problem.queue = step.owner
        return problem
    }

    private static func unattributed(_ step: TopologyPlan.QueueStep, _ error: AMQPError) -> TopologyError.Problem {
        let name = step.declaration.name
        if isNodeDown(error) {
            return .init(configPath: step.configPath, message: "queue \"\(name)\" is unavailable for now: \(error.replyText ?? "\(error)")", isTransient: true)
        }
        switch error.replyCode {
        case 406:
            let argument = error.replyText.flatMap(Inequivalence.parse)?.argument ?? ""
            let key = Inequivalence.configKey(for: argument, step: step.configPath, typeKey: step.typeKey)
            return .init(configPath: step.configPath, message: Inequivalence.explain(kind: "queue", name: name, error: error, configKey: key))
        case 403:
            return .init(configPath: step.configPath, message: "the broker user may not declare queue \"\(name)\": \(error.replyText ?? "\(error)")")
        case 404 where step.declaration.passive:
            return .init(configPath: step.configPath, message: "queue \"\(name)\" does not exist, and declare = false says warren must not create it")
        case 404:
            // A declaration that creates cannot find nothing: the broker could not reach the
            // queue it knows (on a cluster, while a node or a leader is being replaced).
            return .init(
                configPath: step.configPath, message: "the broker answered NOT_FOUND to declaring queue \"\(name)\": \(error.replyText ?? "\(error)")",
                isTransient: true)
        case 405:
            return .init(
                configPath: step.configPath, message: "queue \"\(name)\" is exclusive to another connection: \(error.replyText ?? "\(error)")",
                isTransient: true)
        default:
            return .init(configPath: step.configPath, message: "cannot declare queue \"\(name)\": \(error)", isTransient: true)
        }
    }
}
