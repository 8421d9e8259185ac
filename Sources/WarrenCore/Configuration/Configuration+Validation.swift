import AMQP
import Foundation

/// What validation may ask of the machine: files, executables, plugin libraries. A seam so unit
/// tests can run every rule without preparing files.
public struct FileChecks: Sendable {
    public var isReadableFile: @Sendable (String) -> Bool
    public var isExecutableFile: @Sendable (String) -> Bool
    public var isDirectory: @Sendable (String) -> Bool
    public var readText: @Sendable (String) -> String?
    /// `nil` if the library is a usable plugin, else why not.
    public var pluginProblem: @Sendable (String) -> String?
    /// Whether warren can create files in this directory (write and search permission). Last,
    /// with a default, so that a seam written before it still compiles.
    public var isWritableDirectory: @Sendable (String) -> Bool = { _ in true }

    public static let live = FileChecks(
        isReadableFile: { path in
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
                && FileManager.default.isReadableFile(atPath: path)
        },
        isExecutableFile: { path in
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
                && FileManager.default.isExecutableFile(atPath: path)
        },
        isDirectory: { path in
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
        },
        readText: { path in try? String(contentsOfFile: path, encoding: .utf8) },
        pluginProblem: PluginProbe.problem(loading:),
        isWritableDirectory: { path in
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
                && FileManager.default.isWritableFile(atPath: path) && FileManager.default.isExecutableFile(atPath: path)
        })
}

/// Checks that span sections or touch the machine. Runs after decoding.
struct ConfigurationValidation {
    let d: ConfigDecoder
    let checks: FileChecks

    func validate(_ c: inout Configuration) {
        validateBroker(&c.broker)
        if c.dedup.store == .sqlite, c.queues.contains(where: \.dedup) {
            let directory = (c.dedup.path as NSString).deletingLastPathComponent
            if !directory.isEmpty, !checks.isDirectory(directory) {
                d.report([.key("dedup"), .key("path")], "the directory \(directory) does not exist (the sqlite dedup store is created in it)")
            }
        }
        validateStateDirectory(c)
        // Decoding problems in [defaults], before this pass adds its own.
        let defaultsBroken = d.hasIssue(under: [.key("defaults"), .key("concurrency")]) || d.hasIssue(under: [.key("defaults"), .key("prefetch")])
        validateDefaults(c.defaults, c.queues)
        var exchangeNames: Set<String> = []
        for (index, exchange) in c.exchanges.enumerated() where !exchange.name.isEmpty && !exchangeNames.insert(exchange.name).inserted {
            d.report([.key("exchanges"), .index(index), .key("name")], "exchange \"\(exchange.name)\" is declared twice")
        }
        var queueNames: Set<String> = []
        for (index, queue) in c.queues.enumerated() {
            let path: [ConfigPathComponent] = [.key("queues"), .index(index)]
            if !queue.name.isEmpty && !queueNames.insert(queue.name).inserted {
                d.report(path + [.key("name")], "queue \"\(queue.name)\" is declared twice")
            }
            validateQueue(queue, at: path, in: c, defaultsBroken: defaultsBroken)
        }
        for handler in c.handlers {
            validateHandler(handler, at: [.key("handlers"), .key(handler.name)])
        }
    }

    /// Reported once, at [defaults], when the file sets them inconsistently and a queue (or a
    /// queue added later: none yet) would inherit both.
    private func validateDefaults(_ defaults: QueueDefaults, _ queues: [QueueConfiguration]) {
        let path: [ConfigPathComponent] = [.key("defaults")]
        let setsConcurrency = d.locator.position(of: path + [.key("concurrency")]) != nil
        let setsPrefetch = d.locator.position(of: path + [.key("prefetch")]) != nil
        let inheritedByAQueue = queues.isEmpty || queues.indices.contains { index in
            let queue: [ConfigPathComponent] = [.key("queues"), .index(index)]
            return d.locator.position(of: queue + [.key("concurrency")]) == nil && d.locator.position(of: queue + [.key("prefetch")]) == nil
        }
        guard defaults.concurrency > defaults.prefetch, setsConcurrency || setsPrefetch, inheritedByAQueue,
            !d.hasIssue(under: path + [.key("concurrency")]), !d.hasIssue(under: path + [.key("prefetch")])
        else { return }
        let key = d.locator.position(of: path + [.key("concurrency")]) != nil ? "concurrency" : "prefetch"
        d.report(
            path + [.key(key)],
            "concurrency \(defaults.concurrency) is above prefetch \(defaults.prefetch): at most prefetch deliveries are ever in flight, so the extra workers would idle; raise prefetch or lower concurrency")
    }

    private func validateBroker(_ broker: inout BrokerConfiguration) {
        let path: [ConfigPathComponent] = [.key("broker")]
        if broker.reconnectInitialDelay > broker.reconnectMaxDelay {
            d.report(path + [.key("reconnect_initial_delay")], "reconnect_initial_delay is above reconnect_max_delay (\(broker.reconnectMaxDelay.configText))")
        }
        if broker.heartbeat > .seconds(65_535) {
            d.report(path + [.key("heartbeat")], "the heartbeat cannot exceed 65535s")
        }
        if let file = broker.passwordFile {
            if let text = checks.readText(file) {
                let password = text.trimmingCharacters(in: .newlines)
                for index in broker.endpoints.indices { broker.endpoints[index].password = password }
            } else {
                d.report(path + [.key("password_file")], "cannot read the password file \(file)")
            }
        }
        let usesTLS = broker.endpoints.contains(where: \.useTLS)
        if let tls = broker.tls {
            let tlsPath = path + [.key("tls")]
            for (key, file) in [("ca_file", tls.caFile), ("cert_file", tls.certFile), ("key_file", tls.keyFile)] {
                if let file, !checks.isReadableFile(file) {
                    d.report(tlsPath + [.key(key)], "\(file) does not exist or cannot be read")
                }
            }
            let tlsIssues = d.hasIssue(under: tlsPath)
            if !tlsIssues, (tls.certFile == nil) != (tls.keyFile == nil) {
                d.reportKey(tlsPath, "a client certificate needs both cert_file and key_file")
            }
            if !tlsIssues, usesTLS && tls.verifyPeer && tls.caFile == nil {
                d.reportKey(tlsPath, "verify_peer needs ca_file: librabbitmq 0.11 does not load the system CA store")
            }
        } else if usesTLS {
            d.reportKey(path, "amqps:// URLs need a [broker.tls] section with ca_file (librabbitmq 0.11 does not load the system CA store)")
        }
    }

    private func validateQueue(_ queue: QueueConfiguration, at path: [ConfigPathComponent], in c: Configuration, defaultsBroken: Bool) {
        let setsConcurrency = d.locator.position(of: path + [.key("concurrency")]) != nil
        let setsPrefetch = d.locator.position(of: path + [.key("prefetch")]) != nil
        // A queue that sets neither inherits [defaults], where the conflict is reported once.
        let inherited = !(setsConcurrency && setsPrefetch)
        if queue.concurrency > queue.prefetch, setsConcurrency || setsPrefetch, !d.hasIssue(under: path + [.key("concurrency")]),
            !d.hasIssue(under: path + [.key("prefetch")]), !(inherited && defaultsBroken)
        {
            d.report(
                path + [.key(setsConcurrency ? "concurrency" : "prefetch")],
                "concurrency \(queue.concurrency) is above prefetch \(queue.prefetch): at most prefetch deliveries are ever in flight, so the extra workers would idle; raise prefetch or lower concurrency")
        }
        if let limit = queue.rateLimit {
            // A prefetched message may wait for its turn up to prefetch runs at the limit, then
            // run; the broker counts both against its consumer timeout.
            let wait = limit.interval * queue.prefetch
            if wait + queue.handlerTimeout > c.broker.consumerTimeout {
                d.report(
                    path + [.key("rate_limit")],
                    "at \(limit.text), a prefetched message may wait \(wait.configText) for its turn, which with handler_timeout \(queue.handlerTimeout.configText) passes the broker's consumer timeout of \(c.broker.consumerTimeout.configText): the broker would close the channel; raise the rate or lower prefetch")
            }
        }
        if queue.arguments["x-queue-type"] != nil {
            d.report(path + [.key("arguments"), .key("x-queue-type")], "set the queue type with type = \"classic\", \"quorum\" or \"stream\", not in arguments")
        }
        validateQueueType(queue, at: path)
        switch queue.target {
        case .handler(let name):
            checkHandlerReference(name, at: path + [.key("handler")], queue: queue, in: c)
        case .routes(let routes, _):
            for (r, route) in routes.enumerated() {
                for (h, name) in route.handlers.enumerated() {
                    checkHandlerReference(name, at: path + [.key("routes"), .index(r), .key("handlers"), .index(h)], queue: queue, in: c)
                }
            }
        }
        if let retry = queue.retry {
            let retryPath = path + [.key("retry")]
            if retry.maxAttempts < 1 {
                d.report(retryPath + [.key("max_attempts")], "expected at least 1 (the first delivery counts), got \(retry.maxAttempts)")
            }
            if retry.maxDelay > RetryPolicy.longestMaxDelay {
                d.report(retryPath + [.key("max_delay")], "max_delay \(retry.maxDelay.configText) is above the 24h limit")
            }
            if retry.maxAttempts >= 1 && retry.maxDelay <= RetryPolicy.longestMaxDelay {
                for step in retry.delaySeries {
                    let name = QueueConfiguration.retryQueueName(queue.name, delay: step)
                    if name.utf8.count > 255 {
                        d.report(path + [.key("name")], "the retry queue name \"\(name.prefix(40))...\" would exceed 255 bytes; shorten the queue name")
                        break
                    }
                }
            }
        }
        if case .publish(let exchange, let routingKey) = queue.deadLetter {
            if exchange.isEmpty && routingKey == queue.name {
                d.report(path + [.key("dead_letter")], "the dead-letter destination is the queue itself, which would loop failing messages forever")
            }
            if QueueConfiguration.parkingQueueName(queue.name).utf8.count > 255 {
                d.report(path + [.key("name")], "the parking queue name would exceed 255 bytes; shorten the queue name")
            }
        }
    }

    private func checkHandlerReference(_ name: String, at path: [ConfigPathComponent], queue: QueueConfiguration, in c: Configuration) {
        guard !name.isEmpty, !d.hasIssue(under: [.key("handlers"), .key(name)]) else { return }
        guard let handler = c.handler(named: name) else {
            var message = "no handler named \"\(name)\""
            let names = c.handlers.map(\.name)
            if let guess = Suggestion.closest(to: name, among: names) {
                message += " (did you mean \"\(guess)\"?)"
            } else if !names.isEmpty {
                message += "; defined: \(names.joined(separator: ", "))"
            } else {
                message += "; define it in a [handlers.\(name)] table"
            }
            d.report(path, message)
            return
        }
        let timeout = handler.timeout ?? queue.handlerTimeout
        if timeout > c.broker.consumerTimeout {
            // The handler's own `timeout` is the line to change; an inherited one is the queue's.
            d.report(
                handler.timeout == nil ? path : [.key("handlers"), .key(name), .key("timeout")],
                "handler \"\(name)\" may run for \(timeout.configText), above the broker's consumer timeout of \(c.broker.consumerTimeout.configText): the broker would close the channel under it; lower the timeout or raise consumer_timeout on the broker and in [broker]")
        }
    }

    private func validateHandler(_ handler: HandlerConfiguration, at path: [ConfigPathComponent]) {
        switch handler.kind {
        case .exec(let command, _, let workingDirectory, _), .pipe(let command, _, let workingDirectory, _, _, _):
            if let program = command.first { checkProgram(program, at: path + [.key("command"), .index(0)]) }
            if let workingDirectory, !checks.isDirectory(workingDirectory) {
                d.report(path + [.key("working_directory")], "\(workingDirectory) is not a directory")
            }
        case .plugin(let library, _):
            if let problem = checks.pluginProblem(library) {
                d.report(path + [.key("library")], problem)
            }
        default:
            break
        }
    }

    private func checkProgram(_ program: String, at path: [ConfigPathComponent]) {
        if program.hasPrefix("/") {
            if !checks.isExecutableFile(program) {
                d.report(path, "\(program) does not exist or is not executable")
            }
            return
        }
        if program.contains("/") {
            d.report(path, "\(program) is a relative path; give an absolute path or a program name found on PATH")
            return
        }
        let searchPath = d.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        let found = searchPath.split(separator: ":").contains { checks.isExecutableFile("\($0)/\(program)") }
        if !found {
            d.report(path, "\(program) is not an absolute path and was not found on PATH (\(searchPath))")
        }
    }
}

/// Opens a plugin library the way the plugin handler will (`PluginLibrary`), to refuse a bad
/// one at check time.
enum PluginProbe {
    static func problem(loading path: String) -> String? {
        do {
            _ = try PluginLibrary.open(path)
            return nil
        } catch {
            return error.description
        }
    }
}
