import AMQP
import Foundation
import Logging

/// Reads the schema of docs/configuration.md out of the parsed file into `Configuration`, reporting every
/// problem to the decoder. Semantic checks across sections are in `Configuration+Validation`.
struct ConfigurationDecoding {
    let d: ConfigDecoder

    func decode(_ root: TableReader) -> Configuration {
        let broker = decodeBroker(root.table("broker"), root: root)
        var configuration = Configuration(sourceFile: d.file, broker: broker)
        if let publisher = root.table("publisher") { configuration.publisher = decodePublisher(publisher) }
        if let defaults = root.table("defaults") { configuration.defaults = decodeDefaults(defaults) }
        if let log = root.table("log") { configuration.log = decodeLog(log) }
        if let metrics = root.table("metrics") { configuration.metrics = decodeMetrics(metrics) }
        if let dedup = root.table("dedup") { configuration.dedup = decodeDedup(dedup) }
        if let state = root.table("state") { configuration.state = decodeState(state) }
        if let control = root.table("control") { configuration.control = decodeControl(control) }
        if let tracing = root.table("tracing") { configuration.tracing = decodeTracing(tracing) }
        configuration.exchanges = root.tables("exchanges").map(decodeExchange)
        configuration.handlers = decodeHandlers(root.table("handlers"))
        configuration.queues = root.tables("queues").map { decodeQueue($0, defaults: configuration.defaults) }
        root.finish()
        return configuration
    }

    // MARK: [broker]

    private func decodeBroker(_ table: TableReader?, root: TableReader) -> BrokerConfiguration {
        guard let table else {
            d.reportKey([.key("broker")], "missing [broker] section: set urls = [\"amqp://user:password@host:5672/vhost\"]")
            return BrokerConfiguration(endpoints: [])
        }
        var urls: [(String, [ConfigPathComponent])] = []
        let hasURL = table.has("url")
        let hasURLs = table.has("urls")
        if hasURL && hasURLs {
            d.reportKey(table.at("url"), "set either url or urls, not both")
        }
        if hasURLs, let node = table.node("urls") {
            if case .string = node {
                if let url = d.string(node, at: table.at("urls")) { urls.append((url, table.at("urls"))) }
            } else if let list = table.stringArray("urls", nonEmpty: true) {
                urls += list.enumerated().map { ($0.element, table.at("urls") + [.index($0.offset)]) }
            }
        } else if let url = table.string("url") {
            urls.append((url, table.at("url")))
        } else if !hasURL {
            d.reportKey(table.path, "no broker URL: set urls = [\"amqp://user:password@host:5672/vhost\"]")
        }
        var endpoints: [AMQPEndpoint] = []
        for (url, path) in urls {
            do {
                endpoints.append(try AMQPEndpoint(url: url))
            } catch {
                d.report(path, error.message)
            }
        }
        var broker = BrokerConfiguration(endpoints: endpoints)
        broker.passwordFile = table.string("password_file")
        if let v = table.duration("heartbeat") { broker.heartbeat = v }
        if let v = table.duration("connect_timeout") { broker.connectTimeout = v }
        if let v = table.duration("reconnect_initial_delay") { broker.reconnectInitialDelay = v }
        if let v = table.duration("reconnect_max_delay") { broker.reconnectMaxDelay = v }
        if let v = table.duration("consumer_timeout") { broker.consumerTimeout = v }
        if let v = table.string("connection_name") { broker.connectionName = v }
        if let v = table.string("management_url") {
            if let url = URL(string: v), ["http", "https"].contains(url.scheme ?? ""), url.host != nil, url.user == nil {
                broker.managementURL = v.hasSuffix("/") ? String(v.dropLast()) : v
            } else {
                d.report(table.at("management_url"), "expected an http:// or https:// URL without credentials (the broker URL's user and password are used), e.g. \"http://127.0.0.1:15672\"")
            }
        }
        broker.connectionName = broker.connectionName.replacingOccurrences(of: "%h", with: ProcessInfo.processInfo.hostName)
        if let tls = table.table("tls") {
            var settings = TLSSettings()
            settings.caFile = tls.string("ca_file")
            settings.certFile = tls.string("cert_file")
            settings.keyFile = tls.string("key_file")
            if let v = tls.bool("verify_peer") { settings.verifyPeer = v }
            if let v = tls.bool("verify_hostname") { settings.verifyHostname = v }
            tls.finish()
            broker.tls = settings
        }
        table.finish()
        return broker
    }

    // MARK: [publisher] [defaults] [log] [metrics] [dedup] ([state]: ConfigurationDecoding+Streams)

    private func decodePublisher(_ table: TableReader) -> PublisherConfiguration {
        var p = PublisherConfiguration()
        if let v = table.duration("confirm_timeout") { p.confirmTimeout = v }
        if let v = table.bool("mandatory") { p.mandatory = v }
        if let v = table.int("max_in_flight", in: 1...1_000_000, "an integer from 1 to 1000000") { p.maxInFlight = v }
        table.finish()
        return p
    }

    private func decodeDefaults(_ table: TableReader) -> QueueDefaults {
        var q = QueueDefaults()
        if let v = table.enumeration("ack_policy", AckPolicy.self) { q.ackPolicy = v }
        if let v = table.int("prefetch", in: 1...65_535, "a positive integer up to 65535") { q.prefetch = v }
        if let v = table.int("concurrency", in: 1...65_535, "a positive integer") { q.concurrency = v }
        if let v = table.duration("handler_timeout") { q.handlerTimeout = v }
        if let v = table.enumeration("ack_mode", AckMode.self) { q.ackMode = v }
        if let v = table.duration("shutdown_timeout") { q.shutdownTimeout = v }
        if let v = table.size("max_body_size") { q.maxBodySize = v }
        if let v = decodeCircuitBreaker(table) { q.circuitBreaker = v }
        table.finish()
        return q
    }

    private func decodeLog(_ table: TableReader) -> LogConfiguration {
        var log = LogConfiguration()
        if let v = table.enumeration("level", LogLevelName.self) { log.level = v.level }
        if let v = table.enumeration("format", LogFormat.self) { log.format = v }
        table.finish()
        return log
    }

    private func decodeMetrics(_ table: TableReader) -> MetricsConfiguration? {
        defer { table.finish() }
        guard let listen = table.string("listen") else {
            return nil
        }
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (1...65_535).contains(port) else {
            d.report(table.at("listen"), "expected \"host:port\" such as \"127.0.0.1:9419\", got \"\(listen)\"")
            return nil
        }
        var host = String(listen[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return MetricsConfiguration(host: host.isEmpty ? "0.0.0.0" : host, port: port)
    }

    private func decodeDedup(_ table: TableReader) -> DedupConfiguration {
        var dedup = DedupConfiguration()
        if let v = table.enumeration("store", DedupStoreKind.self) { dedup.store = v }
        if let v = table.string("path") { dedup.path = v }
        if let v = table.duration("ttl") { dedup.ttl = v }
        table.finish()
        return dedup
    }

    // MARK: [[exchanges]]

    /// Always returns an entry (a nameless one after reporting it) so that indexes stay those
    /// of the file.
    private func decodeExchange(_ table: TableReader) -> ExchangeConfiguration {
        defer { table.finish() }
        var exchange = ExchangeConfiguration(name: requiredName(table, "exchange") ?? "")
        if let v = table.string("type") {
            let known = ["direct", "fanout", "topic", "headers"]
            if known.contains(v) || v.hasPrefix("x-") {
                exchange.type = v
            } else {
                var message = "expected one of \"direct\", \"fanout\", \"topic\", \"headers\" (or a plugin type starting with x-), got \"\(v)\""
                if let guess = Suggestion.closest(to: v, among: known) { message += " (did you mean \"\(guess)\"?)" }
                d.report(table.at("type"), message)
            }
        }
        if let v = table.bool("durable") { exchange.durable = v }
        if let v = table.bool("auto_delete") { exchange.autoDelete = v }
        if let v = table.bool("internal") { exchange.internal = v }
        if let v = table.fieldTable("arguments") { exchange.arguments = v }
        return exchange
    }

    private func requiredName(_ table: TableReader, _ what: String) -> String? {
        guard table.has("name") else {
            d.reportKey(table.path, "this \(what) has no name")
            return nil
        }
        guard let name = table.string("name") else { return nil }
        guard !name.isEmpty, name.utf8.count <= 255 else {
            d.report(table.at("name"), "expected a name of 1 to 255 bytes, got \"\(name.prefix(40))\"")
            return nil
        }
        return name
    }

    // MARK: [[queues]]

    private func decodeQueue(_ table: TableReader, defaults: QueueDefaults) -> QueueConfiguration {
        defer { table.finish() }
        let name = requiredName(table, "queue")
        var target: QueueTarget?
        let hasHandler = table.has("handler")
        let hasRoutes = table.has("routes")
        if hasHandler && hasRoutes {
            d.reportKey(table.at("routes"), "set either handler or routes, not both")
        } else if !hasHandler && !hasRoutes {
            d.reportKey(table.path, "this queue has no handler: set handler = \"NAME\" or routes = [...]")
        }
        if hasHandler, let handler = table.string("handler") {
            target = .handler(handler)
        }
        var unrouted = UnroutedAction.deadLetter
        if table.has("unrouted") {
            if hasRoutes {
                if let v = table.enumeration("unrouted", UnroutedAction.self) { unrouted = v }
            } else {
                d.reportKey(table.at("unrouted"), "unrouted only applies to queues with routes")
            }
        }
        if hasRoutes, let routes = decodeRoutes(table) {
            target = .routes(routes, unrouted: unrouted)
        }
        var queue = QueueConfiguration(
            name: name ?? "", target: target ?? .handler(""), ackPolicy: defaults.ackPolicy, prefetch: defaults.prefetch,
            concurrency: defaults.concurrency, handlerTimeout: defaults.handlerTimeout, ackMode: defaults.ackMode,
            shutdownTimeout: defaults.shutdownTimeout, maxBodySize: defaults.maxBodySize,
            deadLetter: .publish(exchange: "", routingKey: QueueConfiguration.parkingQueueName(name ?? "")))
        queue.circuitBreaker = defaults.circuitBreaker
        if let v = table.bool("declare") { queue.declare = v }
        if let v = table.bool("durable") { queue.durable = v }
        if let v = table.enumeration("type", QueueType.self) { queue.type = v }
        let typeBroken = d.hasIssue(under: table.at("type"))
        if let v = decodeStreamOffset(table, type: queue.type, typeBroken: typeBroken) { queue.streamOffset = v }
        if let v = table.fieldTable("arguments") { queue.arguments = v }
        queue.bindings = table.tables("bindings").compactMap(decodeBinding)
        if let v = table.enumeration("ack_policy", AckPolicy.self) { queue.ackPolicy = v }
        if let v = table.int("prefetch", in: 1...65_535, "a positive integer up to 65535") { queue.prefetch = v }
        if let v = table.int("concurrency", in: 1...65_535, "a positive integer") { queue.concurrency = v }
        if let v = table.duration("handler_timeout") { queue.handlerTimeout = v }
        if let v = table.enumeration("ack_mode", AckMode.self) { queue.ackMode = v }
        if let v = table.duration("shutdown_timeout") { queue.shutdownTimeout = v }
        if let v = table.size("max_body_size") { queue.maxBodySize = v }
        if let v = table.bool("dedup") { queue.dedup = v }
        if let v = table.bool("single_active_consumer") { queue.singleActiveConsumer = v }
        if let v = table.int("consumer_priority", in: -1_000_000...1_000_000, "an integer") { queue.consumerPriority = v }
        if let text = table.string("rate_limit") {
            if let limit = RateLimit.parse(text) {
                queue.rateLimit = limit
            } else {
                d.report(table.at("rate_limit"), "expected runs per unit of time: \"50/s\", \"600/m\" or \"1000/h\" (a positive number, at least one a day), got \"\(text)\"")
            }
        }
        if let v = decodeCircuitBreaker(table) { queue.circuitBreaker = v }
        if let node = table.node("retry") {
            switch node {
            case .boolean(false): queue.retry = nil
            case .boolean(true): queue.retry = RetryPolicy()
            case .table:
                if let retry = table.table("retry") { queue.retry = decodeRetry(retry) }
            default:
                d.report(table.at("retry"), "expected a [queues.retry] table or false, got \(node.rendered)")
            }
        }
        if let node = table.node("dead_letter") {
            switch node {
            case .string:
                switch d.string(node, at: table.at("dead_letter")) {
                case "broker": queue.deadLetter = .broker
                case "drop": queue.deadLetter = .drop
                case nil: break
                default: d.report(table.at("dead_letter"), "expected \"broker\", \"drop\" or a [queues.dead_letter] table, got \(node.rendered)")
                }
            case .table:
                if let target = table.table("dead_letter") {
                    let exchange = target.string("exchange") ?? ""
                    let routingKey = target.string("routing_key") ?? QueueConfiguration.parkingQueueName(queue.name)
                    target.finish()
                    queue.deadLetter = .publish(exchange: exchange, routingKey: routingKey)
                }
            default:
                d.report(table.at("dead_letter"), "expected \"broker\", \"drop\" or a [queues.dead_letter] table, got \(node.rendered)")
            }
        }
        return queue
    }

    /// `circuit_breaker = { failure_ratio, min_runs, window, open_for }` (each optional), or
    /// `false` to turn off one that `[defaults]` sets. `.some(nil)`: off.
    private func decodeCircuitBreaker(_ table: TableReader) -> CircuitBreakerPolicy?? {
        guard let node = table.node("circuit_breaker") else { return nil }
        switch node {
        case .boolean(false):
            return .some(nil)
        case .table:
            guard let breaker = table.table("circuit_breaker") else { return nil }
            var policy = CircuitBreakerPolicy()
            if let v = breaker.double("failure_ratio", "a number above 0 and at most 1", valid: { $0 > 0 && $0 <= 1 }) { policy.failureRatio = v }
            if let v = breaker.int("min_runs", in: 1...1_000_000, "an integer from 1 to 1000000") { policy.minRuns = v }
            if let v = breaker.duration("window") { policy.window = v }
            if let v = breaker.duration("open_for") { policy.openFor = v }
            breaker.finish()
            return .some(policy)
        default:
            d.report(table.at("circuit_breaker"), "expected { failure_ratio = 0.5, min_runs = 20, window = \"30s\", open_for = \"10s\" } or false, got \(node.rendered)")
            return nil
        }
    }

    private func decodeBinding(_ table: TableReader) -> BindingConfiguration? {
        defer { table.finish() }
        let routingKey = table.string("routing_key")
        let arguments = table.fieldTable("arguments")
        guard table.has("exchange") else {
            d.reportKey(table.path, "this binding has no exchange")
            return nil
        }
        guard let exchange = table.string("exchange") else { return nil }
        var binding = BindingConfiguration(exchange: exchange)
        if let routingKey { binding.routingKey = routingKey }
        if let arguments { binding.arguments = arguments }
        return binding
    }

    private func decodeRetry(_ table: TableReader) -> RetryPolicy {
        var retry = RetryPolicy()
        if let v = table.int("max_attempts", in: Int.min...Int.max, "an integer") { retry.maxAttempts = v }
        if let v = table.duration("delay") { retry.delay = v }
        if let v = table.double("multiplier", "a number of at least 1.0", valid: { $0 >= 1 && $0 <= 100 }) { retry.multiplier = v }
        if let v = table.duration("max_delay") { retry.maxDelay = v }
        table.finish()
        return retry
    }

    private func decodeRoutes(_ table: TableReader) -> [Route]? {
        guard let node = table.node("routes") else { return nil }
        guard case .array = node else {
            d.report(table.at("routes"), "expected an array of routes, got \(node.rendered)")
            return nil
        }
        let routes = table.tables("routes").compactMap { route -> Route? in
            defer { route.finish() }
            var match = RouteMatch()
            if let m = route.table("match") {
                match.type = m.string("type")
                match.routingKey = m.string("routing_key")
                if let headers = m.stringTable("headers") { match.headers = headers }
                m.finish()
            } else if !route.has("match") {
                d.reportKey(route.path, "this route has no match table (write match = {} to match every message)")
            }
            guard route.has("handlers") else {
                d.reportKey(route.path, "this route has no handlers")
                return nil
            }
            guard let handlers = route.stringArray("handlers", nonEmpty: true) else { return nil }
            return Route(match: match, handlers: handlers)
        }
        if case .array(let elements) = node, elements.isEmpty {
            d.report(table.at("routes"), "expected at least one route")
        }
        return routes
    }

    // MARK: [handlers.NAME]

    private func decodeHandlers(_ table: TableReader?) -> [HandlerConfiguration] {
        guard let table else { return [] }
        var handlers: [HandlerConfiguration] = []
        for name in table.entries.keys.sorted() {
            guard let handler = table.table(name) else { continue }
            defer { handler.finish() }
            guard handler.has("kind") else {
                d.reportKey(handler.path, "this handler has no kind: set kind to one of \(HandlerKind.names.map { "\"\($0)\"" }.joined(separator: ", "))")
                handler.acceptAllKeys()  // which keys are valid depends on the kind
                continue
            }
            guard let kindName = handler.string("kind") else {
                handler.acceptAllKeys()
                continue
            }
            let timeout = handler.duration("timeout")
            let kind: HandlerKind?
            switch kindName {
            case "exec":
                let environment = handler.stringTable("env") ?? [:]
                let inherit = inheritedEnvironment(handler)
                let workingDirectory = handler.string("working_directory")
                kind = command(handler).map {
                    .exec(command: $0, environment: environment, workingDirectory: workingDirectory, inheritEnvironment: inherit)
                }
            case "pipe":
                let environment = handler.stringTable("env") ?? [:]
                let inherit = inheritedEnvironment(handler)
                let workingDirectory = handler.string("working_directory")
                let instances = handler.int("instances", in: 1...1024, "an integer from 1 to 1024") ?? 1
                let inFlight = handler.int("max_in_flight_per_instance", in: 1...65_535, "a positive integer") ?? 1
                kind = command(handler).map {
                    .pipe(command: $0, environment: environment, workingDirectory: workingDirectory, instances: instances,
                          maxInFlightPerInstance: inFlight, inheritEnvironment: inherit)
                }
            case "http":
                let written = handler.string("method") ?? "POST"
                let method = written.uppercased()
                if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(method) {
                    d.report(handler.at("method"), "expected one of GET, POST, PUT, PATCH, DELETE, got \"\(written)\"")
                }
                let headers = handler.stringTable("headers") ?? [:]
                if !handler.has("url") { d.reportKey(handler.path, "an http handler needs url = \"http://...\"") }
                if let url = handler.string("url") {
                    let lower = url.lowercased()
                    if !(lower.hasPrefix("http://") || lower.hasPrefix("https://")) || URL(string: url)?.host == nil {
                        d.report(handler.at("url"), "expected an http:// or https:// URL, got \"\(AMQPEndpoint.redact(url))\"")
                    }
                    kind = .http(url: url, method: method, headers: headers)
                } else {
                    kind = nil
                }
            case "plugin":
                if !handler.has("library") { d.reportKey(handler.path, "a plugin handler needs library = \"/path/to/libplugin.so\"") }
                let library = handler.string("library")
                var json = "{}"
                if let config = handler.node("config") {
                    if case .table = config, let value = d.fieldValue(config, at: handler.at("config")) {
                        json = JSONText.encode(value)
                    } else if case .table = config {
                    } else {
                        d.report(handler.at("config"), "expected a table, got \(config.rendered)")
                    }
                }
                kind = library.map { .plugin(library: $0, configJSON: json) }
            case "noop":
                kind = .noop
            case "log":
                kind = .log
            case "file":
                if !handler.has("path") { d.reportKey(handler.path, "a file handler needs path = \"/var/lib/warren/out.jsonl\"") }
                let fsync = handler.enumeration("fsync", FsyncMode.self) ?? .batch
                kind = handler.string("path").map { .file(path: $0, fsync: fsync) }
            case "republish":
                let exchange = handler.string("exchange") ?? ""
                let routingKey = handler.string("routing_key") ?? "{routing_key}"
                validateTemplate(routingKey, at: handler.at("routing_key"))
                kind = .republish(exchange: exchange, routingKey: routingKey)
            default:
                var message = "expected one of \(HandlerKind.names.map { "\"\($0)\"" }.joined(separator: ", ")), got \"\(kindName)\""
                if let guess = Suggestion.closest(to: kindName, among: HandlerKind.names) { message += " (did you mean \"\(guess)\"?)" }
                d.report(handler.at("kind"), message)
                // Which keys are valid depends on the kind: without one, do not call them unknown.
                handler.acceptAllKeys()
                kind = nil
            }
            if let kind {
                handlers.append(HandlerConfiguration(name: name, kind: kind, timeout: timeout))
            }
        }
        return handlers
    }

    private func command(_ handler: TableReader) -> [String]? {
        guard handler.has("command") else {
            d.reportKey(handler.path, "this handler needs command = [\"/path/to/program\", \"arg\", ...]")
            return nil
        }
        if case .string? = handler.node("command") {
            d.report(handler.at("command"), "expected an array (argv, never run through a shell), got a string; write command = [\"/path/to/program\", \"arg\"]")
            return nil
        }
        return handler.stringArray("command", nonEmpty: true)
    }

    /// `inherit_env = true | false | ["NAME", "PREFIX*", ...]`; absent: the standard list.
    private func inheritedEnvironment(_ handler: TableReader) -> InheritedEnvironment {
        guard let node = handler.node("inherit_env") else { return .standard }
        let path = handler.at("inherit_env")
        let expected = "true, false or an array of variable names such as [\"PATH\", \"LANG\", \"LC_*\"]"
        switch node {
        case .boolean(let all):
            return all ? .all : .only([])
        case .array(let elements):
            var names: [String] = []
            for (index, element) in elements.enumerated() {
                guard case .string(let name) = element else {
                    d.report(path + [.index(index)], "expected a variable name (a string), got \(element.rendered)")
                    continue
                }
                guard InheritedEnvironment.isValidEntry(name) else {
                    d.report(
                        path + [.index(index)],
                        "\"\(name)\" is not a variable name: letters, digits and _, not starting with a digit, optionally ending in * for a prefix")
                    continue
                }
                names.append(name)
            }
            return .only(names)
        default:
            d.report(path, "expected \(expected), got \(node.rendered)")
            return .standard
        }
    }

    private func validateTemplate(_ template: String, at path: [ConfigPathComponent]) {
        var rest = Substring(template)
        while let open = rest.firstIndex(of: "{") {
            guard let close = rest[open...].firstIndex(of: "}") else {
                d.report(path, "unterminated { in \"\(template)\"")
                return
            }
            let name = rest[rest.index(after: open)..<close]
            if !["routing_key", "queue", "type"].contains(name) {
                d.report(path, "unknown placeholder {\(name)}; use {routing_key}, {queue} or {type}")
            }
            rest = rest[rest.index(after: close)...]
        }
    }
}

/// The level names of `[log] level`, mapped to swift-log levels.
enum LogLevelName: String, CaseIterable {
    case trace, debug, info, notice, warning, error, critical

    var level: Logger.Level {
        switch self {
        case .trace: .trace
        case .debug: .debug
        case .info: .info
        case .notice: .notice
        case .warning: .warning
        case .error: .error
        case .critical: .critical
        }
    }
}

/// JSON for a plugin's `config` table, through Foundation's serializer.
enum JSONText {
    static func encode(_ value: FieldValue) -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: object(value), options: [.sortedKeys, .fragmentsAllowed]) else {
            return "{}"
        }
        return String(decoding: data, as: UTF8.self)
    }

    static func object(_ value: FieldValue) -> Any {
        switch value {
        case .table(let table):
            var dictionary: [String: Any] = [:]
            for entry in table { dictionary[entry.key.lossyText] = object(entry.value) }  // TOML keys: always text
            return dictionary
        case .array(let values): return values.map(object)
        case .string(let s): return s
        case .boolean(let b): return b
        case .double(let d): return d
        default: return value.integerValue ?? NSNull()
        }
    }
}
