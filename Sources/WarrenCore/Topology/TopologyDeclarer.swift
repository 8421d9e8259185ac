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

    /// Declares everything. Throws `TopologyError` listing every contradiction, or the
    /// `AMQPError` that broke the connection.
    public func declare(on connection: AMQPConnection) async throws {
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
                problems.append(queueProblem(step, error))
            }
        }
        if problems.isEmpty {
            for step in plan.bindings {
                let bind = { () async throws(AMQPError) in
                    try await connection.bindQueue(step.queue, exchange: step.exchange, routingKey: step.routingKey, arguments: step.arguments)
                }
                if let error = try await channelError(bind) {
                    problems.append(.init(
                        configPath: step.configPath, message: "cannot bind queue \"\(step.queue)\" to exchange \"\(step.exchange)\": \(error)",
                        isTransient: !TopologyError.isConfigurationReply(error.replyCode)))
                }
            }
        }
        guard problems.isEmpty else { throw TopologyError(problems: problems) }
        logger.info("topology declared", metadata: [
            "exchanges": "\(plan.exchanges.count)", "queues": "\(plan.queues.count)", "bindings": "\(plan.bindings.count)",
        ])
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
                if error.replyCode == 404 {
                    if !step.declare {
                        problems.append(.init(
                            configPath: step.configPath,
                            message: "queue \"\(step.declaration.name)\" does not exist, and declare = false says warren must not create it"))
                    }
                } else {
                    problems.append(queueProblem(step, error))
                }
                continue
            }
            guard step.declare else { continue }
            if let error = try await channelError({ () async throws(AMQPError) in _ = try await connection.declareQueue(step.declaration) }) {
                problems.append(queueProblem(step, error))
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

    private func queueProblem(_ step: TopologyPlan.QueueStep, _ error: AMQPError) -> TopologyError.Problem {
        let name = step.declaration.name
        switch error.replyCode {
        case 406:
            let argument = error.replyText.flatMap(Inequivalence.parse)?.argument ?? ""
            let key = Inequivalence.configKey(for: argument, step: step.configPath, typeKey: step.typeKey)
            return .init(configPath: step.configPath, message: Inequivalence.explain(kind: "queue", name: name, error: error, configKey: key))
        case 403:
            return .init(configPath: step.configPath, message: "the broker user may not declare queue \"\(name)\": \(error.replyText ?? "\(error)")")
        case 404:
            return .init(configPath: step.configPath, message: "queue \"\(name)\" does not exist, and declare = false says warren must not create it")
        case 405:
            return .init(
                configPath: step.configPath, message: "queue \"\(name)\" is exclusive to another connection: \(error.replyText ?? "\(error)")",
                isTransient: true)
        default:
            return .init(configPath: step.configPath, message: "cannot declare queue \"\(name)\": \(error)", isTransient: true)
        }
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
