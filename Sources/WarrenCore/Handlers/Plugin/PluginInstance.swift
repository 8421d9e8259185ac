import Logging
import Synchronization

/// One `[handlers.NAME]` entry of kind `plugin`: the library, the state its `init` returned, and
/// the threads its calls run on.
///
/// Calls run on `BlockingThreads` of the entry's own (named `warren-plugin`), never on the Swift
/// cooperative pool or an I/O thread: a plugin blocks as it likes (disk, network, locks), and a
/// stuck plugin stalls only its own threads. The state is destroyed exactly once, and only when
/// no call can be running: every call enters and leaves through `calls`, and `shutdown()` closes
/// it first.
final class PluginInstance: Sendable {
    struct SetupError: Error, CustomStringConvertible {
        var description: String
    }

    let name: String
    let library: PluginLibrary
    let threads: BlockingThreads
    let logger: Logger
    /// What `init` returned. nonisolated(unsafe): the pointer never changes, and the plugin
    /// contract makes `handle` safe to call on several threads at once for one state; `destroy`
    /// runs only after `calls` proves no call is running and none can start.
    private nonisolated(unsafe) let state: UnsafeMutableRawPointer?
    private let calls = Mutex(Calls())

    private struct Calls {
        var running = 0
        var closed = false
    }

    /// Loads the library and calls `init` once with the entry's `config` as JSON, here at start-up
    /// so that a plugin that cannot start stops warren before it consumes anything (exit 78).
    init(name: String, library path: String, configJSON: String, threads: Int, logger: Logger) throws(SetupError) {
        let library: PluginLibrary
        do {
            library = try PluginLibrary.open(path)
        } catch {
            throw SetupError(description: "cannot load the plugin: \(error)")
        }
        var state: UnsafeMutableRawPointer?
        let status = configJSON.withCString { library.initialize($0, &state) }
        guard status == 0 else {
            throw SetupError(description: "the plugin \(path) failed to initialise: init returned \(status)")
        }
        self.name = name
        self.library = library
        self.state = state
        self.logger = logger
        self.threads = BlockingThreads(name: "warren-plugin", count: threads)
        logger.info("plugin loaded", metadata: [LogKeys.handler: "\(name)", "library": "\(path)", "threads": "\(self.threads.count)"])
    }

    /// Queues `input` for one of the entry's threads. The job holds this instance, so the
    /// instance (and the state) outlives every job.
    func submit(_ input: HandlerInput, _ call: PluginCall) {
        threads.submit { active in
            guard active, call.begin() else {
                call.finish(.notRun)
                return
            }
            guard self.enter() else {
                call.finish(.notRun)
                return
            }
            let result = PluginInvocation.call(self.library, state: self.state, input)
            self.leave()
            if !call.finish(.returned(result)) {
                self.logger.warning("plugin call returned after its timeout", metadata: [
                    LogKeys.handler: "\(self.name)", LogKeys.queue: "\(input.queue)", LogKeys.messageID: "\(input.properties.messageID ?? "")",
                    LogKeys.deliveryTag: "\(input.deliveryTag)", LogKeys.durationMS: "\(call.runningFor?.milliseconds ?? 0)",
                ])
            }
        }
    }

    private func enter() -> Bool {
        calls.withLock { calls in
            guard !calls.closed else { return false }
            calls.running += 1
            return true
        }
    }

    private func leave() {
        calls.withLock { $0.running -= 1 }
    }

    /// Calls `destroy` on one of the entry's threads (it may block) and stops them. A call that
    /// overran its timeout may still be inside the plugin: then the state is left alone
    /// (destroying it under the call would crash warren) and the threads end as their calls
    /// return.
    func shutdown() async {
        let (running, wasClosed) = calls.withLock { calls -> (Int, Bool) in
            defer { calls.closed = true }
            return (calls.running, calls.closed)
        }
        guard !wasClosed else { return }
        guard running == 0 else {
            logger.warning("plugin calls still running at shutdown; the plugin state is not destroyed", metadata: [
                LogKeys.handler: "\(name)", "library": "\(library.path)", "running": "\(running)",
            ])
            threads.stop()
            return
        }
        if await threads.run({ self.destroyState() }) == nil { destroyState() }
        threads.stop()
    }

    private func destroyState() {
        library.destroy(state)
    }

    /// Reached without `shutdown()` only when the registry gave up on a later handler entry: no
    /// job holds the instance any more, so no call is running, and the state is destroyed here.
    deinit {
        let closed = calls.withLock { $0.closed }
        if !closed {
            library.destroy(state)
            threads.stop()
        }
    }
}
