/// What a reload (SIGHUP) changes, worked out from the running and the new configuration
/// (docs/configuration.md, "Reload"): added queues start, removed queues drain, changed queues restart their consumer,
/// and everything else is left alone, its in-flight messages included. Handlers are rebuilt
/// only when their own entry (or the pool size derived from the queues that use them) changed.
///
/// Settings that every connection or queue depends on (`[broker]`, `[publisher]`, `[dedup]`)
/// cannot be changed under a running session: such a reload restarts everything, gracefully.
struct ReloadPlan: Sendable, Equatable {
    enum Scope: Sendable, Equatable {
        /// Drain and restart everything with the new configuration; the reason says why.
        case restart(String)
        case queues(Changes)
    }

    struct Changes: Sendable, Equatable {
        var added: [String] = []
        var removed: [String] = []
        var changed: [String] = []
        /// Handlers to build from the new configuration (new or changed entries).
        var rebuiltHandlers: Set<String> = []
        /// Handlers of the running configuration to shut down once no queue uses them.
        var retiredHandlers: Set<String> = []
        /// Bindings of changed queues that the new file no longer lists: they are unbound.
        var droppedBindings: [String: [BindingConfiguration]] = [:]
        /// `[[exchanges]]` differ: they are declared again (a changed type or argument is refused by the broker).
        var exchangesChanged = false
        /// Settings that only take effect at the next start (`[log]`, `[metrics]`, `[control]`, `[tracing]`).
        var needsRestart: [String] = []

        var isEmpty: Bool {
            added.isEmpty && removed.isEmpty && changed.isEmpty && rebuiltHandlers.isEmpty && retiredHandlers.isEmpty && !exchangesChanged
        }

        /// The queues that get a new consumer.
        var starting: Set<String> { Set(added + changed) }
    }

    let scope: Scope

    init(from old: Configuration, to new: Configuration) {
        if old.broker != new.broker {
            scope = .restart("[broker] changed")
        } else if old.publisher != new.publisher {
            scope = .restart("[publisher] changed")
        } else if old.dedup != new.dedup || old.queues.contains(where: \.dedup) != new.queues.contains(where: \.dedup) {
            scope = .restart("[dedup] changed")
        } else {
            scope = .queues(Self.changes(from: old, to: new))
        }
    }

    private static func changes(from old: Configuration, to new: Configuration) -> Changes {
        var changes = Changes()
        let oldHandlers = Dictionary(old.handlers.map { ($0.name, setup(of: $0, in: old)) }, uniquingKeysWith: { first, _ in first })
        let newHandlers = Dictionary(new.handlers.map { ($0.name, setup(of: $0, in: new)) }, uniquingKeysWith: { first, _ in first })
        changes.rebuiltHandlers = Set(newHandlers.compactMap { name, setup in oldHandlers[name] == setup ? nil : name })
        changes.retiredHandlers = Set(oldHandlers.compactMap { name, setup in newHandlers[name] == setup ? nil : name })

        let oldQueues = Dictionary(old.queues.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let newNames = Set(new.queues.map(\.name))
        changes.removed = old.queues.map(\.name).filter { !newNames.contains($0) }
        for queue in new.queues {
            guard let before = oldQueues[queue.name] else {
                changes.added.append(queue.name)
                continue
            }
            // A queue whose handler is replaced restarts too: its processor holds the handler.
            let handlerReplaced = queue.handlerNames.contains { changes.rebuiltHandlers.contains($0) }
            if before != queue || handlerReplaced {
                changes.changed.append(queue.name)
                let dropped = before.declare ? before.bindings.filter { !queue.bindings.contains($0) } : []
                if !dropped.isEmpty { changes.droppedBindings[queue.name] = dropped }
            }
        }
        changes.exchangesChanged = old.exchanges != new.exchanges
        if old.log != new.log { changes.needsRestart.append("[log]") }
        if old.metrics != new.metrics { changes.needsRestart.append("[metrics]") }
        if old.control != new.control { changes.needsRestart.append("[control]") }
        if old.tracing != new.tracing { changes.needsRestart.append("[tracing]") }
        return changes
    }

    /// What a handler is built from: its entry, plus the pool size that the queues using it
    /// imply (plugin threads, HTTP connections).
    private struct HandlerSetup: Equatable {
        var entry: HandlerConfiguration
        var poolSize: Int
    }

    private static func setup(of handler: HandlerConfiguration, in configuration: Configuration) -> HandlerSetup {
        let poolSize =
            switch handler.kind {
            case .plugin: PluginHandler.threads(for: handler.name, in: configuration)
            case .http: HTTPHandler.poolSize(for: handler.name, in: configuration)
            default: 0
            }
        return HandlerSetup(entry: handler, poolSize: poolSize)
    }
}
