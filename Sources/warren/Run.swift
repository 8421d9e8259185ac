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
        let logger = Bootstrap.logging(configuration.log, override: logLevel.flatMap(Logger.Level.init(rawValue:)))
        logger.info("starting", metadata: [
            "version": "\(WarrenVersion.current)", "config": "\(options.path)", "queues": "\(configuration.queues.count)",
        ])
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
        switch await Engine(configuration: configuration, logger: logger).run(stop: stop, reloads: reloads) {
        case .stopped: return
        case .handlersRejected, .topologyRejected, .dedupStoreUnavailable: throw WarrenExit.config
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

    /// SIGHUP: reload the configuration file (SPEC §2).
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
