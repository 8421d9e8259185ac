import Logging

/// The configured handlers, built once at start-up.
public struct HandlerRegistry: Sendable {
    /// Builds a handler for a configuration entry, or returns nil to get the built-in one. Tests
    /// use it to put scripted handlers behind ordinary configuration entries.
    public typealias Override = @Sendable (HandlerConfiguration) -> (any MessageHandler)?

    public struct SetupError: Error, CustomStringConvertible {
        public var handler: String
        public var message: String
        public var description: String { "handlers.\(handler): \(message)" }
    }

    private let handlers: [String: any MessageHandler]

    public init(_ configuration: Configuration, logger: Logger, override: Override? = nil) throws(SetupError) {
        var handlers: [String: any MessageHandler] = [:]
        for entry in configuration.handlers {
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
            case .exec(let command, let environment, let workingDirectory):
                do {
                    handlers[entry.name] = try ExecHandler(
                        name: entry.name, command: command, environment: environment, workingDirectory: workingDirectory, logger: logger)
                } catch {
                    throw SetupError(handler: entry.name, message: error.description)
                }
            case .http(let url, let method, let headers):
                handlers[entry.name] = try HTTPHandler(
                    name: entry.name, url: url, method: method, headers: headers,
                    poolSize: HTTPHandler.poolSize(for: entry.name, in: configuration), logger: logger)
            case .pipe(let command, let environment, let workingDirectory, let instances, let maxInFlightPerInstance):
                guard !command.isEmpty else { throw SetupError(handler: entry.name, message: "command is empty") }
                let settings = PipeHandler.Settings(
                    handler: entry.name, command: command, environment: environment, workingDirectory: workingDirectory,
                    instances: instances, maxInFlightPerInstance: maxInFlightPerInstance)
                handlers[entry.name] = PipeHandler(settings: settings, logger: logger)
            }
        }
        self.handlers = handlers
    }

    public subscript(name: String) -> (any MessageHandler)? { handlers[name] }

    /// Runs every handler's background work until cancelled.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            for handler in handlers.values {
                group.addTask { await handler.run() }
            }
        }
    }

    public func shutdown() async {
        for handler in handlers.values { await handler.shutdown() }
    }
}
