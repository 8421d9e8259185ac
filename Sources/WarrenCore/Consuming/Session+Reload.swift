import AMQP
import Logging

extension Session {
    /// Applies a reloaded configuration to the running session (docs/configuration.md, "Reload"): new handlers are
    /// built and the new topology declared first, so a file the broker or a handler refuses
    /// changes nothing; then added queues start, removed and changed queues drain (their
    /// deliveries not yet started go back to the broker unrun), changed queues start again with
    /// their new settings, and the handlers nothing uses any more are shut down. Queues that did
    /// not change keep consuming throughout. Returns a configuration when the change needs a new
    /// session instead (connection settings changed, or the connection failed meanwhile).
    func applyReload(
        _ next: Configuration, running: inout Running, slots: inout [QueueSlot], consumers: LiveConsumers,
        supervisor: HandlerSupervisor, group: inout TaskGroup<Void>
    ) async -> Configuration? {
        let changes: ReloadPlan.Changes
        switch ReloadPlan(from: running.configuration, to: next).scope {
        case .restart(let reason):
            logger.info("reload changes the connections: restarting them", metadata: [LogKeys.reason: "\(reason)"])
            return next
        case .queues(let queueChanges):
            changes = queueChanges
        }
        for section in changes.needsRestart {
            logger.warning("reload: this section takes effect at the next start", metadata: ["section": "\(section)"])
        }
        if changes.isEmpty {
            running.configuration = next
            logger.info("configuration reloaded: no queue, handler or exchange changed", metadata: ["config": "\(next.sourceFile)"])
            return nil
        }

        let built: HandlerRegistry
        do {
            built = try HandlerRegistry(next, logger: logger, override: handlerOverride, only: changes.rebuiltHandlers)
        } catch {
            logger.error("reload refused: handler setup failed, keeping the running configuration", metadata: [LogKeys.error: "\(error)"])
            return nil
        }
        do {
            let plan = TopologyPlan(next).restricted(to: changes.starting)
            try await TopologyDeclarer(plan: plan, logger: logger).declare(on: consumerConnection)
        } catch let error as TopologyError {
            for problem in error.problems {
                logger.error("reload refused: the broker rejects the new topology, keeping the running configuration", metadata: [
                    "config": "\(next.sourceFile)", "problem": "\(problem)",
                ])
            }
            await built.shutdown()
            return nil
        } catch {
            logger.warning("reload interrupted by a connection problem: restarting with the new configuration", metadata: [LogKeys.error: "\(error)"])
            await built.shutdown()
            return next
        }
        await unbind(changes.droppedBindings)

        supervisor.start(built)
        let handlers = running.handlers.replacing(changes.retiredHandlers, with: built)
        status.configure(queues: next.queues.map(\.name))
        let queues = Dictionary(next.queues.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        func start(_ names: [String]) {
            for name in names {
                guard let queue = queues[name] else { continue }
                let slot = QueueSlot(queue: queue, configuration: next, handlers: handlers, controls: controls, logger: logger)
                slots.append(slot)
                group.addTask { await keepConsuming(slot, first: nil, consumers: consumers) }
            }
        }
        start(changes.added)

        let leaving = Set(changes.removed + changes.changed)
        let draining = slots.filter { leaving.contains($0.name) }
        if !draining.isEmpty {
            logger.info("reload: draining queues", metadata: ["queues": "\(draining.map(\.name).sorted().joined(separator: ","))"])
            for slot in draining { status.consumer(slot.name, live: false) }
            _ = await drain(draining, consumers: consumers)
            for slot in draining {
                try? await consumers.consumer(of: slot.name)?.close()
                consumers.remove(slot.name)
            }
            slots.removeAll { slot in draining.contains { $0 === slot } }
        }
        start(changes.changed)
        await running.handlers.retire(changes.retiredHandlers)
        running = Running(configuration: next, handlers: handlers)
        logger.info("configuration reloaded", metadata: [
            "config": "\(next.sourceFile)", "added": "\(changes.added.joined(separator: ","))",
            "removed": "\(changes.removed.joined(separator: ","))", "changed": "\(changes.changed.joined(separator: ","))",
            "handlers_rebuilt": "\(changes.rebuiltHandlers.sorted().joined(separator: ","))",
        ])
        return nil
    }

    /// Removes bindings that a changed queue no longer lists; a failure is logged, not fatal
    /// (the binding may already be gone).
    private func unbind(_ dropped: [String: [BindingConfiguration]]) async {
        for (queue, bindings) in dropped.sorted(by: { $0.key < $1.key }) {
            for binding in bindings {
                do {
                    try await consumerConnection.unbindQueue(
                        queue, exchange: binding.exchange, routingKey: binding.routingKey, arguments: binding.arguments)
                    logger.info("reload: binding removed", metadata: [
                        LogKeys.queue: "\(queue)", "exchange": "\(binding.exchange)", "routing_key": "\(binding.routingKey)",
                    ])
                } catch {
                    logger.warning("reload: cannot remove binding", metadata: [
                        LogKeys.queue: "\(queue)", "exchange": "\(binding.exchange)", LogKeys.error: "\(error)",
                    ])
                }
            }
        }
    }
}
