import Logging

/// The configured handlers, built at start-up; a reload builds the entries it changes and
/// retires the ones they replace (ReloadPlan).
public struct HandlerRegistry: Sendable {
    /// Builds a handler for a configuration entry, or returns nil to get the built-in one. Tests
    /// use it to put scripted handlers behind ordinary configuration entries.
    public typealias Override = @Sendable (HandlerConfiguration) -> (any MessageHandler)?

    public struct SetupError: Error, CustomStringConvertible {
        public var handler: String
        public var message: String
        public var description: String { "handlers.\(handler): \(message)" }
    }

    /// A handler and the flag that ends its background work when a reload replaces it.
    private struct Entry: Sendable {
        let handler: any MessageHandler
        let retired = Latch()
    }

    private let entries: [String: Entry]

    private init(entries: [String: Entry]) { self.entries = entries }

    /// Builds every handler of `configuration`, or only those named in `only`.
    public init(_ configuration: Configuration, logger: Logger, override: Override? = nil, only: Set<String>? = nil) throws(SetupError) {
        var handlers: [String: any MessageHandler] = [:]
        for entry in configuration.handlers where only?.contains(entry.name) ?? true {
            if let custom = override?(entry) {
                handlers[entry.name] = custom
                continue
            }
            switch entry.kind {
            case .noop:
                handlers[entry.name] = NoopHandler()
            case .log:
                handlers[entry.name] = LogMessageHandler(name: entry.name, logger: logger)
            case .file(let path, let fsync):
                handlers[entry.name] = FileHandler(sink: FileSink(path: path, mode: fsync))
            case .republish(let exchange, let routingKey):
                handlers[entry.name] = RepublishHandler(exchange: exchange, routingKey: routingKey)
            case .plugin(let library, let configJSON):
                do {
                    let threads = PluginHandler.threads(for: entry.name, in: configuration)
                    handlers[entry.name] = PluginHandler(try PluginInstance(
                        name: entry.name, library: library, configJSON: configJSON, threads: threads, logger: logger))
                } catch {
                    throw SetupError(handler: entry.name, message: error.description)
                }
            case .exec(let command, let environment, let workingDirectory, let inherit):
                do {
                    handlers[entry.name] = try ExecHandler(
                        name: entry.name, command: command, environment: environment, workingDirectory: workingDirectory, logger: logger,
                        inherit: inherit)
                } catch {
                    throw SetupError(handler: entry.name, message: error.description)
                }
            case .http(let url, let method, let headers):
                handlers[entry.name] = try HTTPHandler(
                    name: entry.name, url: url, method: method, headers: headers,
                    poolSize: HTTPHandler.poolSize(for: entry.name, in: configuration), logger: logger)
            case .pipe(let command, let environment, let workingDirectory, let instances, let maxInFlightPerInstance, let inherit):
                guard !command.isEmpty else { throw SetupError(handler: entry.name, message: "command is empty") }
                let settings = PipeHandler.Settings(
                    handler: entry.name, command: command, environment: environment, inherit: inherit, workingDirectory: workingDirectory,
                    instances: instances, maxInFlightPerInstance: maxInFlightPerInstance)
                handlers[entry.name] = PipeHandler(settings: settings, logger: logger)
            }
        }
        self.entries = handlers.mapValues { Entry(handler: $0) }
    }

    public subscript(name: String) -> (any MessageHandler)? { entries[name]?.handler }

    var names: Set<String> { Set(entries.keys) }

    /// These handlers without `retired`, plus `newer`'s (which win on a name clash).
    func replacing(_ retired: Set<String>, with newer: HandlerRegistry) -> HandlerRegistry {
        HandlerRegistry(entries: entries.filter { !retired.contains($0.key) }.merging(newer.entries) { _, new in new })
    }

    /// Runs every handler's background work until cancelled, each until it is retired.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            for entry in entries.values {
                group.addTask {
                    await withTaskGroup(of: Void.self) { race in
                        race.addTask { await entry.handler.run() }
                        race.addTask { await entry.retired.wait() }
                        await race.next()
                        race.cancelAll()
                    }
                }
            }
        }
    }

    /// Ends the named handlers' background work and shuts them down: no queue uses them any more.
    func retire(_ names: Set<String>) async {
        for name in names.sorted() {
            guard let entry = entries[name] else { continue }
            entry.retired.set()
            await entry.handler.shutdown()
        }
    }

    public func shutdown() async {
        for entry in entries.values { await entry.handler.shutdown() }
    }
}
