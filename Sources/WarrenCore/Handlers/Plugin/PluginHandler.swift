import Logging

/// `plugin`: an in-process shared library speaking the C ABI of `warren_plugin.h` (docs/handlers.md, "plugin").
///
/// Each message is one `handle` call on the entry's blocking thread pool. A C call cannot be
/// interrupted, so the timeout is the waiting's, not the call's: at the handler timeout the run
/// ends as a timeout failure (the queue's policy retries or parks the message) while the plugin
/// keeps its thread until it returns, and its late result is dropped. The engine's own timer is
/// not needed (`enforcesOwnTimeout`).
struct PluginHandler: MessageHandler {
    let instance: PluginInstance

    var enforcesOwnTimeout: Bool { true }

    init(_ instance: PluginInstance) {
        self.instance = instance
    }

    /// Threads for an entry: the largest `concurrency` among the queues that run it, so those
    /// calls never wait for a thread (unless timed-out calls still hold some).
    static func threads(for handler: String, in configuration: Configuration) -> Int {
        let concurrency = configuration.queues.filter { $0.handlerNames.contains(handler) }.map(\.concurrency)
        return max(concurrency.max() ?? 1, 1)
    }

    func handle(_ input: HandlerInput) async -> HandlerOutcome {
        let call = PluginCall()
        instance.submit(input, call)
        let ending = await withTaskGroup(of: PluginCall.Ending?.self) { group in
            group.addTask { await call.ending() }
            group.addTask {
                // The timer settles the call on timeout, which also ends the first task.
                if (try? await Task.sleep(for: input.timeout)) != nil { call.timeOut() }
                return nil
            }
            var ending: PluginCall.Ending?
            while ending == nil, let next = await group.next() { ending = next }
            group.cancelAll()
            return ending ?? .cancelled(whileRunning: false)
        }
        switch ending {
        case .returned(let result):
            return result.outcome
        case .timedOut(let running):
            log(running ? "plugin call timed out; it is still running on its thread, which stays busy until the plugin returns"
                : "plugin call timed out before a thread was free; it will not run", input)
            return .failure(HandlerFailure("timeout after \(input.timeout.configText)", isTimeout: true))
        case .cancelled(let running):
            if running { log("plugin call abandoned at a forced stop; it is still running on its thread", input) }
            return .failure(HandlerFailure("cancelled while the plugin was handling the message"))
        case .notRun:
            return .failure(HandlerFailure("the plugin handler \"\(instance.name)\" has shut down"))
        }
    }

    private func log(_ message: Logger.Message, _ input: HandlerInput) {
        instance.logger.warning(message, metadata: [
            LogKeys.handler: "\(instance.name)", LogKeys.queue: "\(input.queue)", LogKeys.messageID: "\(input.properties.messageID ?? "")",
            LogKeys.deliveryTag: "\(input.deliveryTag)", "library": "\(instance.library.path)", "timeout": "\(input.timeout.configText)",
        ])
    }

    func shutdown() async {
        await instance.shutdown()
    }
}
