import AMQP
import Foundation
import Logging
import Testing

@testable import WarrenCore

// MARK: - Support shared by the configuration test files

/// A machine for `FileChecks`: which files, programs, directories and plugins exist. Tests of the
/// loader never depend on the real file system.
struct FakeMachine: Sendable {
    var readableFiles: Set<String> = []
    var executables: Set<String> = []
    var directories: Set<String> = []
    /// Directories (among `directories`) warren cannot write in.
    var readOnlyDirectories: Set<String> = []
    /// Readable text files (password files), path -> content.
    var texts: [String: String] = [:]
    /// Plugin library -> why it is not usable. Libraries not listed here are usable plugins.
    var pluginProblems: [String: String] = [:]

    var checks: FileChecks {
        let readable = readableFiles.union(texts.keys)
        let executables = executables
        let directories = directories
        let readOnly = readOnlyDirectories
        let texts = texts
        let pluginProblems = pluginProblems
        return FileChecks(
            isReadableFile: { readable.contains($0) },
            isExecutableFile: { executables.contains($0) },
            isDirectory: { directories.contains($0) },
            readText: { texts[$0] },
            pluginProblem: { pluginProblems[$0] },
            isWritableDirectory: { directories.contains($0) && !readOnly.contains($0) })
    }

    /// Every file exists and is readable, every program is executable, every plugin loads.
    static let permissive = FileChecks(
        isReadableFile: { _ in true }, isExecutableFile: { _ in true }, isDirectory: { _ in true },
        readText: { _ in "password-from-file" }, pluginProblem: { _ in nil })

    /// The machine most tests run on.
    static let standard = FakeMachine(
        readableFiles: ["/etc/warren/ca.pem", "/etc/warren/client.pem", "/etc/warren/client.key"],
        executables: ["/bin/cat", "/usr/bin/python3", "/usr/local/bin/bill", "/opt/tools/frob"],
        directories: ["/", "/var/lib/warren", "/opt/audit", "/srv/warren", "/srv/read-only"],
        readOnlyDirectories: ["/srv/read-only"],
        texts: ["/run/secrets/amqp": "Fil3Passw0rd\n"],
        pluginProblems: [
            "/usr/lib/warren/plugins/libbad.so": "/usr/lib/warren/plugins/libbad.so does not export warren_plugin_v1; is it a Warren plugin?"
        ])
}

enum ConfigFixture {
    static let file = "test/warren.toml"
    static let environment = ["PATH": "/usr/bin:/bin", "HOME": "/home/warren"]

    static func parse(
        _ source: String, environment: [String: String] = environment, checks: FileChecks = FakeMachine.standard.checks
    ) throws(ConfigError) -> Configuration {
        try ConfigurationLoader.parse(source: source, file: file, environment: environment, checks: checks)
    }

    /// The problems the loader reports, or `nil` (and a recorded test issue) when it accepts the file.
    static func issues(
        _ source: String, environment: [String: String] = environment, checks: FileChecks = FakeMachine.standard.checks,
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> ConfigError? {
        do {
            _ = try parse(source, environment: environment, checks: checks)
            Issue.record("the loader accepted a configuration it should refuse", sourceLocation: sourceLocation)
            return nil
        } catch {
            return error
        }
    }
}

// MARK: - Tests

@Suite("Configuration parsing")
struct ConfigurationParsingTests {
    /// Every key of the schema, each set to a value other than its default.
    static let everyKey = """
        [broker]
        urls = ["amqps://alice:${AMQP_PASSWORD}@rabbit-1.example:5673/prod", "amqps://alice:x@rabbit-2.example/%2fstaging"]
        password_file = "/run/secrets/amqp"
        heartbeat = "15s"
        connect_timeout = "2s"
        reconnect_initial_delay = "250ms"
        reconnect_max_delay = "1m"
        connection_name = "billing@%h/${DEPLOYMENT}"
        consumer_timeout = "1h"

        [broker.tls]
        ca_file = "/etc/warren/ca.pem"
        cert_file = "/etc/warren/client.pem"
        key_file = "/etc/warren/client.key"
        verify_peer = false
        verify_hostname = false

        [publisher]
        confirm_timeout = "10s"
        mandatory = false
        max_in_flight = 50

        [defaults]
        ack_policy = "ack"
        prefetch = 100
        concurrency = 10
        handler_timeout = "45s"
        ack_mode = "immediate"
        shutdown_timeout = "1m"
        max_body_size = "512KiB"

        [log]
        level = "debug"
        format = "json"

        [metrics]
        listen = "0.0.0.0:9500"

        [dedup]
        store = "sqlite"
        path = "/srv/warren/dedup.db"
        ttl = "2h"

        [[exchanges]]
        name = "orders"
        type = "fanout"
        durable = false
        auto_delete = true
        internal = true
        arguments = { "alternate-exchange" = "unrouted" }

        [[queues]]
        name = "orders.billing"
        declare = false
        type = "quorum"
        arguments = { "x-max-length" = 100000, "x-overflow" = "reject-publish" }
        bindings = [
          { exchange = "orders", routing_key = "order.created", arguments = { "x-match" = "all" } },
          { exchange = "orders" },
        ]
        handler = "billing"
        ack_policy = "reject_on_error"
        prefetch = 64
        concurrency = 16
        handler_timeout = "2m"
        ack_mode = "batched"
        shutdown_timeout = "90s"
        max_body_size = "1GB"
        dedup = true
        single_active_consumer = true
        consumer_priority = 5

        [queues.retry]
        max_attempts = 7
        delay = "2s"
        multiplier = 3.0
        max_delay = "10m"

        [queues.dead_letter]
        exchange = "dlx"
        routing_key = "billing.failed"

        [[queues]]
        name = "events.all"
        durable = false
        routes = [
          { match = { type = "OrderCreated" }, handlers = ["audit", "search-index"] },
          { match = { headers = { "x-kind" = "refund", "x-version" = 2 } }, handlers = ["refunds"] },
          { match = { routing_key = "order.*.eu" }, handlers = ["eu-compliance", "archive"] },
          { match = {}, handlers = ["discard"] },
        ]
        unrouted = "ack"
        retry = false
        dead_letter = "broker"

        [[queues]]
        name = "audit.tail"
        handler = "print"
        dead_letter = "drop"

        [handlers.billing]
        kind = "exec"
        command = ["/usr/local/bin/bill", "--from-stdin"]
        env = { BILLING_MODE = "live", RETRIES = 3 }
        working_directory = "/var/lib/warren"
        timeout = "60s"

        [handlers.audit]
        kind = "pipe"
        command = ["python3", "/opt/audit/worker.py"]
        env = { AUDIT = "1" }
        working_directory = "/opt/audit"
        instances = 4
        max_in_flight_per_instance = 2

        [handlers.search-index]
        kind = "http"
        url = "https://index.example:8443/index"
        method = "put"
        headers = { Authorization = "Bearer ${INDEX_TOKEN}" }
        timeout = "10s"

        [handlers.refunds]
        kind = "plugin"
        library = "/usr/lib/warren/plugins/librefunds.so"
        config = { currency = "EUR", limit = 5, nested = { on = true } }

        [handlers.discard]
        kind = "noop"

        [handlers.print]
        kind = "log"
        timeout = "1s"

        [handlers.archive]
        kind = "file"
        path = "/var/log/warren/archive.jsonl"
        fsync = "always"

        [handlers.eu-compliance]
        kind = "republish"
        exchange = "compliance"
        routing_key = "eu.{queue}.{type}.{routing_key}"
        """

    static let everyKeyEnvironment = [
        "PATH": "/usr/bin:/bin", "AMQP_PASSWORD": "Env-Passw0rd", "DEPLOYMENT": "blue", "INDEX_TOKEN": "t0ken",
    ]

    @Test func parsesEveryKeyOfTheSchema() throws {
        let c = try ConfigFixture.parse(Self.everyKey, environment: Self.everyKeyEnvironment)
        #expect(c.sourceFile == ConfigFixture.file)

        // [broker]; password_file overrides the URL passwords (including the interpolated one).
        #expect(c.broker.endpoints == [
            AMQPEndpoint(host: "rabbit-1.example", port: 5673, vhost: "prod", user: "alice", password: "Fil3Passw0rd", useTLS: true),
            AMQPEndpoint(host: "rabbit-2.example", port: 5671, vhost: "/staging", user: "alice", password: "Fil3Passw0rd", useTLS: true),
        ])
        #expect(c.broker.passwordFile == "/run/secrets/amqp")
        #expect(c.broker.heartbeat == .seconds(15))
        #expect(c.broker.connectTimeout == .seconds(2))
        #expect(c.broker.reconnectInitialDelay == .milliseconds(250))
        #expect(c.broker.reconnectMaxDelay == .seconds(60))
        #expect(c.broker.connectionName == "billing@\(ProcessInfo.processInfo.hostName)/blue")
        #expect(c.broker.consumerTimeout == .seconds(3600))
        #expect(c.broker.tls == TLSSettings(
            caFile: "/etc/warren/ca.pem", certFile: "/etc/warren/client.pem", keyFile: "/etc/warren/client.key",
            verifyPeer: false, verifyHostname: false))

        #expect(c.publisher.confirmTimeout == .seconds(10))
        #expect(c.publisher.mandatory == false)
        #expect(c.publisher.maxInFlight == 50)

        #expect(c.defaults.ackPolicy == .ack)
        #expect(c.defaults.prefetch == 100)
        #expect(c.defaults.concurrency == 10)
        #expect(c.defaults.handlerTimeout == .seconds(45))
        #expect(c.defaults.ackMode == .immediate)
        #expect(c.defaults.shutdownTimeout == .seconds(60))
        #expect(c.defaults.maxBodySize == 512 * 1024)

        #expect(c.log.level == .debug)
        #expect(c.log.format == .json)
        #expect(c.metrics == MetricsConfiguration(host: "0.0.0.0", port: 9500))
        #expect(c.dedup.store == .sqlite)
        #expect(c.dedup.path == "/srv/warren/dedup.db")
        #expect(c.dedup.ttl == .seconds(7200))

        #expect(c.exchanges == [
            ExchangeConfiguration(
                name: "orders", type: "fanout", durable: false, autoDelete: true, internal: true,
                arguments: ["alternate-exchange": "unrouted"])
        ])

        try #require(c.queues.count == 3)
        let billing = c.queues[0]
        #expect(billing.name == "orders.billing")
        #expect(billing.declare == false)
        #expect(billing.durable == true)
        #expect(billing.type == .quorum)
        #expect(billing.arguments == ["x-max-length": .int64(100_000), "x-overflow": "reject-publish"])
        #expect(billing.bindings == [
            BindingConfiguration(exchange: "orders", routingKey: "order.created", arguments: ["x-match": "all"]),
            BindingConfiguration(exchange: "orders", routingKey: "", arguments: [:]),
        ])
        #expect(billing.target == .handler("billing"))
        #expect(billing.ackPolicy == .rejectOnError)
        #expect(billing.prefetch == 64)
        #expect(billing.concurrency == 16)
        #expect(billing.handlerTimeout == .seconds(120))
        #expect(billing.ackMode == .batched)
        #expect(billing.shutdownTimeout == .seconds(90))
        #expect(billing.maxBodySize == 1_000_000_000)
        #expect(billing.dedup == true)
        #expect(billing.singleActiveConsumer == true)
        #expect(billing.consumerPriority == 5)
        #expect(billing.retry == RetryPolicy(maxAttempts: 7, delay: .seconds(2), multiplier: 3.0, maxDelay: .seconds(600)))
        #expect(billing.deadLetter == .publish(exchange: "dlx", routingKey: "billing.failed"))
        #expect(billing.parkingQueue == nil)

        let events = c.queues[1]
        #expect(events.name == "events.all")
        #expect(events.durable == false)
        #expect(events.type == .classic)
        #expect(events.target == .routes([
            Route(match: RouteMatch(type: "OrderCreated"), handlers: ["audit", "search-index"]),
            Route(match: RouteMatch(headers: ["x-kind": "refund", "x-version": "2"]), handlers: ["refunds"]),
            Route(match: RouteMatch(routingKey: "order.*.eu"), handlers: ["eu-compliance", "archive"]),
            Route(match: RouteMatch(), handlers: ["discard"]),
        ], unrouted: .ack))
        #expect(events.handlerNames == ["audit", "search-index", "refunds", "eu-compliance", "archive", "discard"])
        #expect(events.retry == nil)
        #expect(events.deadLetter == .broker)
        #expect(events.parkingQueue == nil)

        let tail = c.queues[2]
        #expect(tail.deadLetter == .drop)
        #expect(tail.parkingQueue == nil)

        // [handlers.NAME]: looked up by name (the model keeps them sorted by name, not in file order).
        #expect(c.handlers.count == 8)
        #expect(c.handler(named: "billing") == HandlerConfiguration(
            name: "billing",
            kind: .exec(
                command: ["/usr/local/bin/bill", "--from-stdin"], environment: ["BILLING_MODE": "live", "RETRIES": "3"],
                workingDirectory: "/var/lib/warren"),
            timeout: .seconds(60)))
        #expect(c.handler(named: "audit") == HandlerConfiguration(
            name: "audit",
            kind: .pipe(
                command: ["python3", "/opt/audit/worker.py"], environment: ["AUDIT": "1"], workingDirectory: "/opt/audit",
                instances: 4, maxInFlightPerInstance: 2),
            timeout: nil))
        #expect(c.handler(named: "search-index") == HandlerConfiguration(
            name: "search-index",
            kind: .http(url: "https://index.example:8443/index", method: "PUT", headers: ["Authorization": "Bearer t0ken"]),
            timeout: .seconds(10)))
        #expect(c.handler(named: "refunds") == HandlerConfiguration(
            name: "refunds",
            kind: .plugin(
                library: "/usr/lib/warren/plugins/librefunds.so",
                configJSON: #"{"currency":"EUR","limit":5,"nested":{"on":true}}"#),
            timeout: nil))
        #expect(c.handler(named: "discard") == HandlerConfiguration(name: "discard", kind: .noop, timeout: nil))
        #expect(c.handler(named: "print") == HandlerConfiguration(name: "print", kind: .log, timeout: .seconds(1)))
        #expect(c.handler(named: "archive") == HandlerConfiguration(
            name: "archive", kind: .file(path: "/var/log/warren/archive.jsonl", fsync: .always), timeout: nil))
        #expect(c.handler(named: "eu-compliance") == HandlerConfiguration(
            name: "eu-compliance", kind: .republish(exchange: "compliance", routingKey: "eu.{queue}.{type}.{routing_key}"),
            timeout: nil))
    }

    static let minimal = """
        [broker]
        url = "amqp://rabbit"

        [[queues]]
        name = "jobs"
        handler = "work"

        [handlers.work]
        kind = "noop"
        """

    @Test func aMinimalConfigurationGetsEveryDocumentedDefault() throws {
        let c = try ConfigFixture.parse(Self.minimal)

        #expect(c.broker.endpoints == [
            AMQPEndpoint(host: "rabbit", port: 5672, vhost: "/", user: "guest", password: "guest", useTLS: false)
        ])
        #expect(c.broker.passwordFile == nil)
        #expect(c.broker.heartbeat == .seconds(30))
        #expect(c.broker.connectTimeout == .seconds(5))
        #expect(c.broker.reconnectInitialDelay == .milliseconds(500))
        #expect(c.broker.reconnectMaxDelay == .seconds(30))
        #expect(c.broker.connectionName == "warren@\(ProcessInfo.processInfo.hostName)")
        #expect(c.broker.consumerTimeout == .seconds(1800))
        #expect(c.broker.tls == nil)

        #expect(c.publisher.confirmTimeout == .seconds(5))
        #expect(c.publisher.mandatory == true)
        #expect(c.publisher.maxInFlight == 1000)

        #expect(c.defaults.ackPolicy == .nackOnError)
        #expect(c.defaults.prefetch == 32)
        #expect(c.defaults.concurrency == 8)
        #expect(c.defaults.handlerTimeout == .seconds(30))
        #expect(c.defaults.ackMode == .batched)
        #expect(c.defaults.shutdownTimeout == .seconds(30))
        #expect(c.defaults.maxBodySize == 64 * 1024 * 1024)

        #expect(c.log.level == .info)
        #expect(c.log.format == .logfmt)
        #expect(c.metrics == nil)
        #expect(c.dedup.store == .memory)
        #expect(c.dedup.path == "/var/lib/warren/dedup.sqlite")
        #expect(c.dedup.ttl == .seconds(24 * 3600))
        #expect(c.exchanges.isEmpty)

        try #require(c.queues.count == 1)
        let q = c.queues[0]
        #expect(q.name == "jobs")
        #expect(q.declare == true)
        #expect(q.durable == true)
        #expect(q.type == .classic)
        #expect(q.arguments.isEmpty)
        #expect(q.bindings.isEmpty)
        #expect(q.target == .handler("work"))
        #expect(q.ackPolicy == .nackOnError)
        #expect(q.prefetch == 32)
        #expect(q.concurrency == 8)
        #expect(q.handlerTimeout == .seconds(30))
        #expect(q.ackMode == .batched)
        #expect(q.shutdownTimeout == .seconds(30))
        #expect(q.maxBodySize == 64 * 1024 * 1024)
        #expect(q.dedup == false)
        #expect(q.singleActiveConsumer == false)
        #expect(q.consumerPriority == 0)
        #expect(q.retry == RetryPolicy(maxAttempts: 5, delay: .seconds(1), multiplier: 2.0, maxDelay: .seconds(300)))
        #expect(q.deadLetter == .publish(exchange: "", routingKey: "jobs.dead"))
        #expect(q.parkingQueue == "jobs.dead")
        #expect(q.streamOffset == .next)

        #expect(c.state.directory == "/var/lib/warren")
        #expect(c.state.offsetFlushEvery == 1000)
        #expect(c.state.offsetFlushInterval == .seconds(1))

        #expect(c.handlers == [HandlerConfiguration(name: "work", kind: .noop, timeout: nil)])
    }

    @Test func optionalKeysOfExchangesBindingsRoutesAndHandlersHaveTheirDefaults() throws {
        let c = try ConfigFixture.parse("""
            [broker]
            url = "amqp://rabbit"

            [[exchanges]]
            name = "x"

            [[queues]]
            name = "q"
            bindings = [{ exchange = "x" }]
            routes = [{ match = {}, handlers = ["p", "h", "f", "r", "plug"] }]

            [handlers.p]
            kind = "pipe"
            command = ["/bin/cat"]

            [handlers.h]
            kind = "http"
            url = "http://127.0.0.1:8080/hook"

            [handlers.f]
            kind = "file"
            path = "/tmp/out.jsonl"

            [handlers.r]
            kind = "republish"

            [handlers.plug]
            kind = "plugin"
            library = "/usr/lib/warren/plugins/libok.so"
            """)
        #expect(c.exchanges == [ExchangeConfiguration(name: "x", type: "direct", durable: true, autoDelete: false, internal: false, arguments: [:])])
        #expect(c.queues.first?.bindings == [BindingConfiguration(exchange: "x", routingKey: "", arguments: [:])])
        #expect(c.queues.first?.target == .routes([Route(match: RouteMatch(type: nil, headers: [:], routingKey: nil), handlers: ["p", "h", "f", "r", "plug"])], unrouted: .deadLetter))
        #expect(c.handler(named: "p")?.kind == .pipe(command: ["/bin/cat"], environment: [:], workingDirectory: nil, instances: 1, maxInFlightPerInstance: 1))
        #expect(c.handler(named: "h")?.kind == .http(url: "http://127.0.0.1:8080/hook", method: "POST", headers: [:]))
        #expect(c.handler(named: "f")?.kind == .file(path: "/tmp/out.jsonl", fsync: .batch))
        #expect(c.handler(named: "r")?.kind == .republish(exchange: "", routingKey: "{routing_key}"))
        #expect(c.handler(named: "plug")?.kind == .plugin(library: "/usr/lib/warren/plugins/libok.so", configJSON: "{}"))
    }

    // MARK: [defaults] inheritance

    @Test func queuesInheritDefaultsAndOverrideThemOneByOne() throws {
        let c = try ConfigFixture.parse("""
            [broker]
            url = "amqp://rabbit"

            [defaults]
            ack_policy = "manual"
            prefetch = 10
            concurrency = 2
            handler_timeout = "5m"
            ack_mode = "immediate"
            shutdown_timeout = "1m"
            max_body_size = "1MiB"

            [[queues]]
            name = "inherits"
            handler = "h"

            [[queues]]
            name = "overrides"
            handler = "h"
            ack_policy = "ack_first"
            prefetch = 200
            concurrency = 50
            handler_timeout = "10s"
            ack_mode = "batched"
            shutdown_timeout = "2s"
            max_body_size = "16KiB"

            [[queues]]
            name = "partly"
            handler = "h"
            prefetch = 3

            [handlers.h]
            kind = "noop"
            """)
        try #require(c.queues.count == 3)
        let inherits = c.queues[0]
        #expect(inherits.ackPolicy == .manual)
        #expect(inherits.prefetch == 10)
        #expect(inherits.concurrency == 2)
        #expect(inherits.handlerTimeout == .seconds(300))
        #expect(inherits.ackMode == .immediate)
        #expect(inherits.shutdownTimeout == .seconds(60))
        #expect(inherits.maxBodySize == 1 << 20)

        let overrides = c.queues[1]
        #expect(overrides.ackPolicy == .ackFirst)
        #expect(overrides.prefetch == 200)
        #expect(overrides.concurrency == 50)
        #expect(overrides.handlerTimeout == .seconds(10))
        #expect(overrides.ackMode == .batched)
        #expect(overrides.shutdownTimeout == .seconds(2))
        #expect(overrides.maxBodySize == 16 << 10)

        let partly = c.queues[2]
        #expect(partly.prefetch == 3)
        #expect(partly.concurrency == 2)
        #expect(partly.ackPolicy == .manual)
        #expect(partly.handlerTimeout == .seconds(300))
    }

    @Test func defaultsApplyWhereverTheSectionIsWrittenInTheFile() throws {
        // [defaults] after the queues still applies to them.
        let c = try ConfigFixture.parse("""
            [broker]
            url = "amqp://rabbit"
            [[queues]]
            name = "q"
            handler = "h"
            [handlers.h]
            kind = "noop"
            [defaults]
            prefetch = 7
            concurrency = 7
            """)
        #expect(c.queues.first?.prefetch == 7)
        #expect(c.queues.first?.concurrency == 7)
    }

    // MARK: ${ENV} interpolation

    @Test func interpolatesEnvironmentVariablesInAnyStringValue() throws {
        let c = try ConfigFixture.parse(
            """
            [broker]
            url = "amqp://${AMQP_USER}:${AMQP_PASSWORD}@${AMQP_HOST}:5672/${VHOST}"
            heartbeat = "${HEARTBEAT}"

            [[queues]]
            name = "${QUEUE_PREFIX}.jobs"
            handler = "h"
            max_body_size = "${MAX_BODY}"

            [handlers.h]
            kind = "exec"
            command = ["/bin/cat", "--mode=${MODE}"]
            env = { TOKEN = "${TOKEN}-${MODE}" }
            """,
            environment: [
                "PATH": "/usr/bin", "AMQP_USER": "warren", "AMQP_PASSWORD": "s3cret", "AMQP_HOST": "rabbit-9", "VHOST": "prod",
                "HEARTBEAT": "10s", "QUEUE_PREFIX": "eu", "MAX_BODY": "2MiB", "MODE": "live", "TOKEN": "abc",
            ])
        #expect(c.broker.endpoints == [AMQPEndpoint(host: "rabbit-9", port: 5672, vhost: "prod", user: "warren", password: "s3cret")])
        #expect(c.broker.heartbeat == .seconds(10))
        #expect(c.queues.first?.name == "eu.jobs")
        #expect(c.queues.first?.maxBodySize == 2 << 20)
        #expect(c.queues.first?.parkingQueue == "eu.jobs.dead")
        #expect(c.handler(named: "h")?.kind == .exec(command: ["/bin/cat", "--mode=live"], environment: ["TOKEN": "abc-live"], workingDirectory: nil))
    }

    @Test func aMissingEnvironmentVariableIsAnIssueAtTheValue() throws {
        let error = try #require(ConfigFixture.issues(
            """
            [broker]
            url = "amqp://warren:${AMQP_PASSWORD}@rabbit/"
            """, environment: ["PATH": "/usr/bin"]))
        #expect(error.issues.map(\.description) == ["test/warren.toml:2:7: broker.url: environment variable AMQP_PASSWORD is not set"])
    }

    @Test func anEmptyEnvironmentVariableIsSetAndInterpolatesAsEmpty() throws {
        let c = try ConfigFixture.parse(
            """
            [broker]
            url = "amqp://rabbit"
            connection_name = "warren${SUFFIX}"
            """, environment: ["SUFFIX": ""])
        #expect(c.broker.connectionName == "warren")
    }

    @Test func doubleDollarBraceIsALiteralDollarBrace() throws {
        let c = try ConfigFixture.parse(
            """
            [broker]
            url = "amqp://rabbit"
            connection_name = "cost $5 $${NOT_A_VARIABLE} ${A}"
            """, environment: ["A": "a"])
        #expect(c.broker.connectionName == "cost $5 ${NOT_A_VARIABLE} a")
    }

    // MARK: url / urls

    @Test func urlsMayBeASingleString() throws {
        let c = try ConfigFixture.parse("""
            [broker]
            urls = "amqp://u:p@rabbit:5673/%2f"
            """)
        #expect(c.broker.endpoints == [AMQPEndpoint(host: "rabbit", port: 5673, vhost: "/", user: "u", password: "p")])
    }

    @Test func urlsListsNodesInFailoverOrder() throws {
        let c = try ConfigFixture.parse("""
            [broker]
            urls = ["amqp://u:p@rabbit-1/", "amqp://u:p@rabbit-2:5673", "amqp://u:p@[::1]/v"]
            """)
        #expect(c.broker.endpoints.map(\.host) == ["rabbit-1", "rabbit-2", "::1"])
        #expect(c.broker.endpoints.map(\.port) == [5672, 5673, 5672])
        #expect(c.broker.endpoints.map(\.vhost) == ["/", "/", "v"])
    }

    @Test func urlAndUrlsTogetherAreRefused() throws {
        let error = try #require(ConfigFixture.issues("""
            [broker]
            url = "amqp://rabbit-1"
            urls = ["amqp://rabbit-2"]
            """))
        #expect(error.issues.map(\.description) == ["test/warren.toml:2:1: broker.url: set either url or urls, not both"])
    }

    // MARK: retry and dead letters

    @Test func retryFalseDisablesRetriesAndRetryTrueKeepsTheDefaults() throws {
        let c = try ConfigFixture.parse("""
            [broker]
            url = "amqp://rabbit"
            [[queues]]
            name = "a"
            handler = "h"
            retry = false
            [[queues]]
            name = "b"
            handler = "h"
            retry = true
            [[queues]]
            name = "c"
            handler = "h"
            retry = { max_attempts = 3 }
            [handlers.h]
            kind = "noop"
            """)
        #expect(c.queues.map(\.retry) == [
            nil, RetryPolicy(), RetryPolicy(maxAttempts: 3, delay: .seconds(1), multiplier: 2.0, maxDelay: .seconds(300)),
        ])
    }

    @Test func deadLetterTargets() throws {
        let c = try ConfigFixture.parse("""
            [broker]
            url = "amqp://rabbit"
            [[queues]]
            name = "default"
            handler = "h"
            [[queues]]
            name = "broker"
            handler = "h"
            dead_letter = "broker"
            [[queues]]
            name = "drop"
            handler = "h"
            dead_letter = "drop"
            [[queues]]
            name = "exchange-only"
            handler = "h"
            dead_letter = { exchange = "dlx" }
            [[queues]]
            name = "key-only"
            handler = "h"
            [queues.dead_letter]
            routing_key = "parking"
            [handlers.h]
            kind = "noop"
            """)
        #expect(c.queues.map(\.deadLetter) == [
            .publish(exchange: "", routingKey: "default.dead"),
            .broker,
            .drop,
            .publish(exchange: "dlx", routingKey: "exchange-only.dead"),
            .publish(exchange: "", routingKey: "parking"),
        ])
        #expect(c.queues.map(\.parkingQueue) == ["default.dead", nil, nil, nil, nil])
        #expect(QueueConfiguration.parkingQueueName("orders.billing") == "orders.billing.dead")
    }

    @Test func retryLadderDoublesUpToTheCap() {
        let policy = RetryPolicy(maxAttempts: 12, delay: .seconds(1), multiplier: 2.0, maxDelay: .seconds(300))
        #expect(policy.ladder == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300].map { Duration.seconds($0) })
    }

    @Test(arguments: [
        (RetryPolicy(maxAttempts: 1, delay: .seconds(1), multiplier: 2, maxDelay: .seconds(300)), [Duration]()),
        (RetryPolicy(maxAttempts: 2, delay: .seconds(1), multiplier: 2, maxDelay: .seconds(300)), [.seconds(1)]),
        (RetryPolicy(maxAttempts: 5, delay: .seconds(1), multiplier: 2, maxDelay: .seconds(300)), [1, 2, 4, 8].map { .seconds($0) }),
        (RetryPolicy(maxAttempts: 4, delay: .milliseconds(250), multiplier: 1.5, maxDelay: .seconds(300)), [.milliseconds(250), .milliseconds(375), .milliseconds(563)]),
        (RetryPolicy(maxAttempts: 10, delay: .seconds(5), multiplier: 1.0, maxDelay: .seconds(300)), [.seconds(5)]),
        (RetryPolicy(maxAttempts: 10, delay: .seconds(10), multiplier: 3, maxDelay: .seconds(60)), [.seconds(10), .seconds(30), .seconds(60)]),
        (RetryPolicy(maxAttempts: 5, delay: .seconds(600), multiplier: 2, maxDelay: .seconds(60)), [.seconds(60)]),
    ])
    func retryLadderSteps(policy: RetryPolicy, expected: [Duration]) {
        #expect(policy.ladder == expected)
    }

    @Test func retryQueueNamesUseTheShortestExactDuration() {
        #expect(QueueConfiguration.retryQueueName("orders", delay: .seconds(1)) == "orders.retry.1s")
        #expect(QueueConfiguration.retryQueueName("orders", delay: .seconds(90)) == "orders.retry.90s")
        #expect(QueueConfiguration.retryQueueName("orders", delay: .seconds(300)) == "orders.retry.5m")
        #expect(QueueConfiguration.retryQueueName("orders", delay: .seconds(7200)) == "orders.retry.2h")
        #expect(QueueConfiguration.retryQueueName("orders", delay: .seconds(86_400)) == "orders.retry.1d")
        #expect(QueueConfiguration.retryQueueName("orders", delay: .milliseconds(1500)) == "orders.retry.1500ms")
        #expect(QueueConfiguration.retryQueueName("orders", delay: .milliseconds(250)) == "orders.retry.250ms")
    }

    // MARK: durations and sizes

    @Test(arguments: [
        ("250ms", Duration.milliseconds(250)),
        ("5s", .seconds(5)),
        ("1.5s", .milliseconds(1500)),
        ("2m", .seconds(120)),
        ("1m30s", .seconds(90)),
        ("1h", .seconds(3600)),
        ("1h2m3s", .seconds(3723)),
        ("1d", .seconds(86_400)),
        ("2s500ms", .milliseconds(2500)),
        ("0.5m", .seconds(30)),
    ])
    func durationsWithUnitsAndCompoundUnits(text: String, expected: Duration) throws {
        let c = try ConfigFixture.parse("""
            [broker]
            url = "amqp://rabbit"
            [dedup]
            ttl = "\(text)"
            """)
        #expect(c.dedup.ttl == expected)
    }

    @Test(arguments: [
        ("64MiB", 64 * 1024 * 1024),
        ("512KiB", 512 * 1024),
        ("1GiB", 1 << 30),
        ("1GB", 1_000_000_000),
        ("16MB", 16_000_000),
        ("10KB", 10_000),
        ("100B", 100),
        ("1.5KiB", 1536),
    ])
    func sizesWithBinaryAndDecimalUnits(text: String, expected: Int) throws {
        let c = try ConfigFixture.parse("""
            [broker]
            url = "amqp://rabbit"
            [defaults]
            max_body_size = "\(text)"
            """)
        #expect(c.defaults.maxBodySize == expected)
    }

    // MARK: connection_name, programs on PATH

    @Test func connectionNameExpandsEveryPercentH() throws {
        let c = try ConfigFixture.parse("""
            [broker]
            url = "amqp://rabbit"
            connection_name = "%h:%h-warren"
            """)
        let host = ProcessInfo.processInfo.hostName
        #expect(c.broker.connectionName == "\(host):\(host)-warren")
        #expect(!c.broker.connectionName.contains("%h"))
    }

    @Test func programsAreLookedUpOnThePathOfTheGivenEnvironment() throws {
        let source = """
            [broker]
            url = "amqp://rabbit"
            [handlers.w]
            kind = "pipe"
            command = ["frob", "--serve"]
            """
        let c = try ConfigFixture.parse(source, environment: ["PATH": "/nowhere:/opt/tools"])
        #expect(c.handler(named: "w")?.kind == .pipe(command: ["frob", "--serve"], environment: [:], workingDirectory: nil, instances: 1, maxInFlightPerInstance: 1))
        let error = try #require(ConfigFixture.issues(source, environment: ["PATH": "/usr/bin:/bin"]))
        #expect(error.issues.map(\.description) == [
            "test/warren.toml:5:12: handlers.w.command[0]: frob is not an absolute path and was not found on PATH (/usr/bin:/bin)"
        ])
    }

    // MARK: password_file

    @Test func passwordFileOverridesEveryURLPasswordWithoutItsTrailingNewline() throws {
        let c = try ConfigFixture.parse("""
            [broker]
            urls = ["amqp://warren:url-password@rabbit-1/", "amqp://other@rabbit-2/", "amqp://rabbit-3/"]
            password_file = "/run/secrets/amqp"
            """)
        #expect(c.broker.endpoints.map(\.password) == ["Fil3Passw0rd", "Fil3Passw0rd", "Fil3Passw0rd"])
        #expect(c.broker.endpoints.map(\.user) == ["warren", "other", "guest"])
    }

    @Test func anUnreadablePasswordFileIsAnIssue() throws {
        let error = try #require(ConfigFixture.issues("""
            [broker]
            url = "amqp://warren:Sup3rS3cret@rabbit/"
            password_file = "/run/secrets/missing"
            """))
        #expect(error.issues.map(\.description) == [
            "test/warren.toml:3:17: broker.password_file: cannot read the password file /run/secrets/missing"
        ])
    }

    // MARK: passwords never appear

    static let secret = "Sup3rS3cret-Xyzzy"

    /// Failing configurations whose URLs carry a password; none may echo it.
    static let failingWithPasswords: [String] = [
        #"url = "http://warren:\#(secret)@rabbit/""#,
        #"url = "amqp://warren:\#(secret)@rabbit:99999/""#,
        #"url = "amqp://warren:\#(secret)@rabbit:port/""#,
        #"url = "amqp://warren:\#(secret)@rabbit/a/b""#,
        #"url = "amqp://warren:\#(secret)@/vhost""#,
        #"urls = ["amqp://warren:\#(secret)@rabbit-1/", "ftp://warren:\#(secret)@rabbit-2/"]"#,
        #"url = "amqps://warren:\#(secret)@rabbit/""#,
        #"url = "amqp://warren:\#(secret)@rabbit/"\#nurls = ["amqp://warren:\#(secret)@rabbit/"]"#,
        #"url = "amqp://warren:\#(secret)@rabbit/${MISSING}""#,
        #"url = "amqp://warren:\#(secret)@rabbit/${BAD-NAME}""#,
        #"url = "amqp://warren:\#(secret)@rabbit/"\#nheartbeat = 5"#,
    ]

    @Test(arguments: failingWithPasswords)
    func issuesNeverContainTheURLPassword(line: String) throws {
        let error = try #require(ConfigFixture.issues("[broker]\n\(line)\n"))
        #expect(!error.issues.isEmpty)
        #expect(!error.description.contains(Self.secret), "\(error.description)")
    }

    // MARK: stream queues and [state]

    /// A stream queue whose `offset` line is `offsetLine` (nothing when empty).
    static func streamQueue(offsetLine: String, state: String = "") -> String {
        """
        [broker]
        url = "amqp://rabbit"
        \(state)
        [[queues]]
        name = "orders.log"
        type = "stream"
        handler = "h"
        \(offsetLine)
        [handlers.h]
        kind = "noop"
        """
    }

    @Test(arguments: [
        (#"offset = "first""#, StreamOffset.first),
        (#"offset = "last""#, .last),
        (#"offset = "next""#, .next),
        ("offset = 0", .offset(0)),
        ("offset = 123456789", .offset(123_456_789)),
        ("offset = 9223372036854775807", .offset(Int64.max)),
        ("offset = 2026-12-01T00:00:00Z", .timestamp(Date(timeIntervalSince1970: 1_796_083_200))),
        ("offset = 2026-12-01T09:30:00+01:00", .timestamp(Date(timeIntervalSince1970: 1_796_113_800))),
        ("offset = 2026-12-01 00:00:00-08:30", .timestamp(Date(timeIntervalSince1970: 1_796_113_800))),
        ("offset = 2026-06-30T23:59:59.000Z", .timestamp(Date(timeIntervalSince1970: 1_782_863_999))),
        (#"offset = "2h ago""#, .ago(.seconds(7200))),
        (#"offset = "90m ago""#, .ago(.seconds(5400))),
        (#"offset = "1m30s ago""#, .ago(.seconds(90))),
        (#"offset = "250ms ago""#, .ago(.milliseconds(250))),
        ("", .next),
    ])
    func streamOffsetForms(line: String, expected: StreamOffset) throws {
        let c = try ConfigFixture.parse(Self.streamQueue(offsetLine: line))
        let queue = try #require(c.queues.first)
        #expect(queue.type == .stream)
        #expect(queue.streamOffset == expected)
    }

    @Test func streamOffsetMayComeFromTheEnvironment() throws {
        let c = try ConfigFixture.parse(
            Self.streamQueue(offsetLine: #"offset = "${START}""#), environment: ["START": "6h ago"])
        #expect(c.queues.first?.streamOffset == .ago(.seconds(6 * 3600)))
    }

    @Test func stateSectionSetsEveryKey() throws {
        let c = try ConfigFixture.parse(Self.streamQueue(offsetLine: "", state: """
            [state]
            directory = "/srv/warren"
            offset_flush_every = 50
            offset_flush_interval = "250ms"
            """))
        #expect(c.state == StateConfiguration(directory: "/srv/warren", offsetFlushEvery: 50, offsetFlushInterval: .milliseconds(250)))
    }

    /// What a stream accepts: its own retention arguments, ack_first, dedup, a retry ladder and
    /// its parking queue (the engine declares both as quorum queues).
    @Test func streamQueueAcceptsItsRetentionArgumentsAndWarrenKeys() throws {
        let c = try ConfigFixture.parse("""
            [broker]
            url = "amqp://rabbit"
            [[queues]]
            name = "orders.log"
            type = "stream"
            handler = "h"
            ack_policy = "ack_first"
            prefetch = 1
            concurrency = 1
            dedup = true
            offset = "first"
            arguments = { "x-max-age" = "7D", "x-max-length-bytes" = 20000000000, "x-stream-max-segment-size-bytes" = 100000000, "x-initial-cluster-size" = 3, "x-queue-leader-locator" = "balanced" }
            retry = { max_attempts = 3 }
            dead_letter = { exchange = "parked" }
            [handlers.h]
            kind = "noop"
            """)
        let queue = try #require(c.queues.first)
        #expect(queue.type == .stream)
        #expect(queue.ackPolicy == .ackFirst)
        #expect(queue.arguments.count == 5)
        #expect(queue.deadLetter == .publish(exchange: "parked", routingKey: "orders.log.dead"))
    }

    /// A quorum queue's numeric delivery limit at or above max_attempts is consistent, and
    /// without warren's ladder any limit is.
    @Test func quorumDeliveryLimitsConsistentWithRetryAreAccepted() throws {
        let c = try ConfigFixture.parse("""
            [broker]
            url = "amqp://rabbit"
            [[queues]]
            name = "a"
            type = "quorum"
            handler = "h"
            arguments = { "x-delivery-limit" = 5 }
            [[queues]]
            name = "b"
            type = "quorum"
            handler = "h"
            arguments = { "x-delivery-limit" = 1 }
            retry = false
            [[queues]]
            name = "c"
            type = "classic"
            handler = "h"
            arguments = { "x-max-priority" = 10 }
            [handlers.h]
            kind = "noop"
            """)
        #expect(c.queues.map(\.arguments) == [["x-delivery-limit": 5], ["x-delivery-limit": 1], ["x-max-priority": 10]])
    }

    /// Without a stream queue, [state] directory is not looked at on the machine.
    @Test func stateDirectoryIsCheckedOnlyWithAStreamQueue() throws {
        let state = "[state]\ndirectory = \"/nowhere\""
        let classic = try ConfigFixture.parse(Self.minimal + "\n" + state)
        #expect(classic.state.directory == "/nowhere")

        let error = try #require(ConfigFixture.issues(Self.streamQueue(offsetLine: "", state: state)))
        #expect(error.issues.map(\.description) == [
            "test/warren.toml:4:13: state.directory: the state directory /nowhere does not exist (stream queues keep their offsets in it); create it or set [state] directory"
        ])
    }

    /// The machine's check: a directory warren can write in, not a missing path or a file.
    /// (Tests run as root here, so a read-only directory cannot be shown refused.)
    @Test func liveWritableDirectoryCheckRefusesMissingPathsAndFiles() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-state-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("offsets")
        try Data("x".utf8).write(to: file)
        #expect(FileChecks.live.isWritableDirectory(directory.path))
        #expect(!FileChecks.live.isWritableDirectory(file.path))
        #expect(!FileChecks.live.isWritableDirectory(directory.appendingPathComponent("missing").path))
    }

    /// The default directory is checked too; the issue then points at the top of the file.
    @Test func defaultStateDirectoryMissingIsAnIssueAtStateDirectory() throws {
        var machine = FakeMachine.standard
        machine.directories.remove("/var/lib/warren")
        let error = try #require(ConfigFixture.issues(Self.streamQueue(offsetLine: ""), checks: machine.checks))
        #expect(error.issues.map(\.description) == [
            "test/warren.toml:1:1: state.directory: the state directory /var/lib/warren does not exist (stream queues keep their offsets in it); create it or set [state] directory"
        ])
    }

    /// Every problem of a stream queue in one pass, each at its own key.
    @Test func streamQueueReportsEveryRefusedSettingAtItsKey() throws {
        let error = try #require(ConfigFixture.issues("""
            [broker]
            url = "amqp://rabbit"
            [[queues]]
            name = "s"
            type = "stream"
            handler = "h"
            durable = false
            single_active_consumer = true
            dead_letter = "broker"
            arguments = { "x-max-length" = 5, "x-message-ttl" = 1000, "x-max-age" = "1D" }
            [handlers.h]
            kind = "noop"
            """))
        #expect(error.issues.map(\.path) == [
            "queues[0].durable", "queues[0].single_active_consumer", "queues[0].dead_letter",
            "queues[0].arguments.x-max-length", "queues[0].arguments.x-message-ttl",
        ])
    }

}
