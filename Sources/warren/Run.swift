import ArgumentParser
import Dispatch
import Foundation
import Logging
import WarrenCore

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the daemon in the foreground.",
        discussion: "SIGTERM or SIGINT stops it. A configuration problem exits 78 before anything connects; an unreachable broker is retried with back-off, never a reason to exit.")

    @OptionGroup var options: ConfigOption
    @Option(name: .customLong("log-level"), help: "Override [log] level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String?

    func validate() throws {
        if let logLevel, Logger.Level(rawValue: logLevel) == nil {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
    }

    func run() async throws {
        let configuration = try options.load()
        // Read (and removed from the environment, so that handler processes do not inherit
        // them) before anything else starts threads that might read the environment.
        let notifier = SystemdNotifier.fromEnvironment()
        let logger = Bootstrap.logging(configuration.log, override: logLevel.flatMap(Logger.Level.init(rawValue:)))
        logger.info("starting", metadata: [
            "version": "\(WarrenVersion.description)", "config": "\(options.path)", "queues": "\(configuration.queues.count)",
        ])
        let status = EngineStatus()
        let controls = QueueControls(status: status)
        let server = try await Self.observabilityServer(configuration, status: status, logger: logger)
        let control = try await Self.controlServer(configuration, controls: controls, underSystemd: notifier != nil, logger: logger)
        if let interval = notifier?.watchdogInterval {
            logger.info("systemd watchdog enabled", metadata: ["interval": "\(interval.configText)"])
        }
        let stop = Latch()
        let reloads = ConfigurationReloads()
        let path = options.path
        Signals.install(logger: logger, stop: stop)
        Signals.installReload(logger: logger) {
            // An invalid file is logged and ignored: the running configuration stays.
            do {
                reloads.submit(try ConfigurationLoader.load(path: path))
                logger.info("reload requested: configuration valid, applying it", metadata: ["config": "\(path)"])
            } catch let error as ConfigError {
                for issue in error.issues {
                    logger.error("reload refused: configuration invalid, keeping the running one", metadata: ["problem": "\(issue)"])
                }
            } catch {
                logger.error("reload refused: configuration invalid, keeping the running one", metadata: ["problem": "\(error)"])
            }
        }
        let export = Self.spanExport(configuration, logger: logger)
        let engine = Engine(configuration: configuration, logger: logger, status: status, controls: controls, tracing: export?.tracing ?? .off)
        // The span exporter runs for the engine's life and is shut down (not cancelled) once the
        // engine stopped, so the spans of the last messages are exported.
        let engineStopped = Latch()
        let outcome = await withTaskGroup(of: Void.self) { exporting in
            if let export { exporting.addTask { await export.run(until: engineStopped) } }
            // The endpoints and the notifier live exactly as long as the engine: child tasks,
            // cancelled once it has stopped.
            let outcome = await withTaskGroup(of: Void.self) { group in
                if let server { group.addTask { await server.run() } }
                if let control { group.addTask { await control.run() } }
                if let notifier { group.addTask { await notifier.run(status: status, stop: stop, logger: logger) } }
                let outcome = await engine.run(stop: stop, reloads: reloads)
                group.cancelAll()
                return outcome
            }
            engineStopped.set()
            await exporting.waitForAll()
            return outcome
        }
        if let status = WarrenExit.status(after: outcome) { throw status }
    }

    /// With `[tracing] endpoint`: the span exporter, with the OpenTelemetry environment
    /// variables applied over the section (a value that cannot be used is logged and ignored).
    private static func spanExport(_ configuration: Configuration, logger: Logger) -> SpanExport? {
        guard let section = configuration.tracing else { return nil }
        let (tracing, warnings) = section.applyingEnvironment(ProcessInfo.processInfo.environment)
        for warning in warnings {
            logger.warning("OpenTelemetry environment variable ignored", metadata: [LogKeys.error: "\(warning)"])
        }
        guard let tracing else {
            logger.info("span export turned off by the environment (OTEL_SDK_DISABLED or OTEL_TRACES_EXPORTER)")
            return nil
        }
        let export = SpanExport(tracing, logger: logger)
        logger.info("exporting spans", metadata: [
            "url": "\(SpanExport.loggable(url: tracing.tracesURL))", "protocol": "\(tracing.exportProtocol.rawValue)",
            "sampler": "\(tracing.sampler)",
        ])
        return export
    }

    /// With `[metrics] listen`: the Prometheus backend, the state gauges, and the HTTP endpoint,
    /// bound now. An address that cannot be bound is a configuration error (exit 78), reported
    /// before anything connects: restarting would find it taken or invalid again, and
    /// systemd's `RestartPreventExitStatus=78` stops the loop. (The port is not changed by a
    /// SIGHUP reload; that takes a restart.)
    private static func observabilityServer(_ configuration: Configuration, status: EngineStatus, logger: Logger) async throws
        -> ObservabilityServer?
    {
        guard let listen = configuration.metrics else { return nil }
        let registry = Bootstrap.metrics(configuration)
        StatusGauges().follow(status)
        let address = listen.host.contains(":") ? "[\(listen.host)]:\(listen.port)" : "\(listen.host):\(listen.port)"
        do {
            let server = try await ObservabilityServer.bind(
                host: listen.host, port: listen.port, sources: .init(status: status) { registry.emitToBuffer() })
            logger.info("metrics endpoint listening", metadata: ["listen": "\(address)", "port": "\(server.port ?? listen.port)"])
            return server
        } catch {
            logger.error("cannot listen on [metrics] listen", metadata: ["listen": "\(address)", LogKeys.error: "\(error)"])
            throw WarrenExit.config
        }
    }

    /// The `warren ctl` socket, bound before anything connects. A path in use by another warren,
    /// or one that cannot be bound, is a configuration error (exit 78), except for the default
    /// path when its directory is missing, closed to this user or read-only (warren started by
    /// hand, or in a container, without the /run/warren the systemd unit creates): then only
    /// `warren ctl` is unavailable. Another warren on the default path is still exit 78.
    private static func controlServer(_ configuration: Configuration, controls: QueueControls, underSystemd: Bool, logger: Logger)
        async throws -> ControlServer?
    {
        guard let path = configuration.control.socket else { return nil }
        do {
            let server = try await ControlServer.bind(path: path, controls: controls, logger: logger)
            logger.info("control socket listening", metadata: [LogKeys.socket: "\(path)"])
            return server
        } catch {
            if !configuration.control.socketConfigured, [.directoryMissing, .permissionDenied, .cannotBind].contains(error.code) {
                let fix =
                    underSystemd
                    ? "give the unit RuntimeDirectory=warren, or set [control] socket"
                    : "set [control] socket to a path in a writable directory, or socket = \"\" to turn it off"
                logger.warning("control socket disabled", metadata: [
                    LogKeys.socket: "\(path)", LogKeys.reason: "\(error.reason)", LogKeys.fix: "\(fix)",
                ])
                return nil
            }
            logger.error("cannot listen on [control] socket", metadata: [LogKeys.socket: "\(path)", LogKeys.error: "\(error.reason)"])
            throw WarrenExit.config
        }
    }
}

/// SIGTERM/SIGINT: the first asks for a graceful stop, a second one exits at once with status 1,
/// leaving unsettled deliveries to the broker. The signals are ignored at the process level so
/// that Dispatch sources receive them instead of the default action.
enum Signals {
    nonisolated(unsafe) private static var sources: [DispatchSourceSignal] = []

    static func install(logger: Logger, stop: Latch) {
        for signalNumber in [SIGTERM, SIGINT] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            let name = signalNumber == SIGTERM ? "SIGTERM" : "SIGINT"
            source.setEventHandler {
                if stop.isSet {
                    logger.warning("second signal: stopping now; unsettled messages go back to the broker", metadata: ["signal": "\(name)"])
                    exit(1)
                }
                logger.info("shutdown requested", metadata: ["signal": "\(name)"])
                stop.set()
            }
            source.resume()
            sources.append(source)
        }
    }

    /// SIGHUP: reload the configuration file.
    static func installReload(logger: Logger, _ reload: @escaping @Sendable () -> Void) {
        signal(SIGHUP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        source.setEventHandler {
            logger.info("reload requested", metadata: ["signal": "SIGHUP"])
            reload()
        }
        source.resume()
        sources.append(source)
    }
}
