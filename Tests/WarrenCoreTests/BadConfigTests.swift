import Foundation
import Testing

@testable import WarrenCore

/// One configuration the loader must refuse, and the issue it must report.
struct BadConfig: Sendable, CustomTestStringConvertible {
    var name: String
    var toml: String
    /// The issue's key path, exactly (`""` for file-level problems such as syntax errors).
    var path: String
    /// A distinctive part of the message.
    var message: String
    /// `LINE:COL`, exactly.
    var at: String
    var environment: [String: String] = ConfigFixture.environment
    /// How many issues the file has in all: every bad config here has exactly this many, so a
    /// cascade of follow-on errors fails the case.
    var issueCount = 1

    var testDescription: String { name }
}

/// Every bad config puts this password in its broker URL; no issue may show it.
private let secret = "Sup3rS3cret"
private let broker = """
    [broker]
    url = "amqp://warren:Sup3rS3cret@rabbit/"
    """

/// A stream queue `s` whose line 7 is `line`.
private func stream(_ line: String) -> String {
    "\(broker)\n[[queues]]\nname = \"s\"\nhandler = \"h\"\ntype = \"stream\"\n\(line)\n[handlers.h]\nkind = \"noop\""
}

/// A quorum queue `q` whose line 7 is `line`.
private func quorum(_ line: String) -> String {
    "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\ntype = \"quorum\"\n\(line)\n[handlers.h]\nkind = \"noop\""
}

@Suite("Bad configurations")
struct BadConfigTests {
    static let cases: [BadConfig] = [
        // MARK: types, durations, sizes
        BadConfig(
            name: "duration given as a bare number",
            toml: "\(broker)\nheartbeat = 30",
            path: "broker.heartbeat", message: #"expected a duration with a unit such as "250ms", "30s", "5m" or "1h", got 30"#, at: "3:13"),
        BadConfig(
            name: "duration string without a unit",
            toml: "\(broker)\nconnect_timeout = \"5\"",
            path: "broker.connect_timeout", message: #"expected a duration with a unit such as "250ms", "30s", "5m" or "1h", got "5""#, at: "3:19"),
        BadConfig(
            name: "negative duration",
            toml: "\(broker)\n[defaults]\nhandler_timeout = \"-5s\"",
            path: "defaults.handler_timeout", message: #"got "-5s""#, at: "4:19"),
        BadConfig(
            name: "zero duration where a positive one is needed",
            toml: "\(broker)\n[publisher]\nconfirm_timeout = \"0s\"",
            path: "publisher.confirm_timeout", message: #"expected a duration above zero, got "0s""#, at: "4:19"),
        BadConfig(
            name: "duration with an unknown unit",
            toml: "\(broker)\n[dedup]\nttl = \"2 weeks\"",
            path: "dedup.ttl", message: #"expected a duration with a unit such as "250ms", "30s", "5m" or "1h", got "2 weeks""#, at: "4:7"),
        BadConfig(
            name: "size given as a bare number",
            toml: "\(broker)\n[defaults]\nmax_body_size = 1048576",
            path: "defaults.max_body_size", message: #"expected a size with a unit such as "512KiB" or "64MiB", got 1048576"#, at: "4:17"),
        BadConfig(
            name: "size with an unknown unit",
            toml: "\(broker)\n[defaults]\nmax_body_size = \"64 megabytes\"",
            path: "defaults.max_body_size", message: #"expected a size with a unit such as "512KiB" or "64MiB", got "64 megabytes""#, at: "4:17"),
        BadConfig(
            name: "zero size",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\nmax_body_size = \"0KiB\"\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].max_body_size", message: #"expected a size with a unit such as "512KiB" or "64MiB", got "0KiB""#, at: "6:17"),
        BadConfig(
            name: "string where an integer is expected",
            toml: "\(broker)\n[defaults]\nprefetch = \"ten\"",
            path: "defaults.prefetch", message: #"expected a positive integer up to 65535, got "ten""#, at: "4:12"),
        BadConfig(
            name: "integer out of range",
            toml: "\(broker)\n[defaults]\nprefetch = 70000",
            path: "defaults.prefetch", message: "expected a positive integer up to 65535, got 70000", at: "4:12"),
        BadConfig(
            name: "string where a boolean is expected",
            toml: "\(broker)\n[publisher]\nmandatory = \"yes\"",
            path: "publisher.mandatory", message: #"expected true or false, got "yes""#, at: "4:13"),
        BadConfig(
            name: "string where a section table is expected",
            toml: "log = \"debug\"\n\(broker)",
            path: "log", message: #"expected a table, got "debug""#, at: "1:7"),
        BadConfig(
            name: "array where a string is expected",
            toml: "[broker]\nurl = [\"amqp://warren:Sup3rS3cret@rabbit/\"]",
            path: "broker.url", message: "expected a string, got an array", at: "2:7"),
        BadConfig(
            name: "queues that are not an array of tables",
            toml: "queues = 5\n\(broker)",
            path: "queues", message: "expected an array of tables ([[queues]]), got 5", at: "1:10"),
        BadConfig(
            name: "date in queue arguments",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\narguments = { \"x-expires\" = 1979-05-27 }\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].arguments.x-expires", message: "dates and times are not supported here", at: "6:29"),
        BadConfig(
            name: "offset date-time in queue arguments, quoted as written",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\narguments = { \"x-expires\" = 1979-05-27T07:32:00.5-07:00 }\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].arguments.x-expires", message: "dates and times are not supported here, got 1979-05-27T07:32:00.5-07:00", at: "6:29"),
        BadConfig(
            name: "retry multiplier below 1",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\nretry = { multiplier = 0.5 }\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].retry.multiplier", message: "expected a number of at least 1.0, got 0.5", at: "6:24"),
        BadConfig(
            name: "pipe instances of zero",
            toml: "\(broker)\n[handlers.w]\nkind = \"pipe\"\ncommand = [\"/bin/cat\"]\ninstances = 0",
            path: "handlers.w.instances", message: "expected an integer from 1 to 1024, got 0", at: "6:13"),
        BadConfig(
            name: "inherit_env given as a string",
            toml: "\(broker)\n[handlers.h]\nkind = \"exec\"\ncommand = [\"/bin/cat\"]\ninherit_env = \"PATH\"",
            path: "handlers.h.inherit_env", message: #"expected true, false or an array of variable names such as ["PATH", "LANG", "LC_*"], got "PATH""#,
            at: "6:15"),
        BadConfig(
            name: "inherit_env naming an invalid variable",
            toml: "\(broker)\n[handlers.h]\nkind = \"exec\"\ncommand = [\"/bin/cat\"]\ninherit_env = [\"PATH\", \"1BAD\"]",
            path: "handlers.h.inherit_env[1]", message: #""1BAD" is not a variable name"#, at: "6:24"),
        BadConfig(
            name: "inherit_env with a star inside a name",
            toml: "\(broker)\n[handlers.w]\nkind = \"pipe\"\ncommand = [\"/bin/cat\"]\ninherit_env = [\"LC_*_X\"]",
            path: "handlers.w.inherit_env[0]", message: #""LC_*_X" is not a variable name"#, at: "6:16"),
        BadConfig(
            name: "inherit_env with a number in its list",
            toml: "\(broker)\n[handlers.w]\nkind = \"pipe\"\ncommand = [\"/bin/cat\"]\ninherit_env = [1]",
            path: "handlers.w.inherit_env[0]", message: "expected a variable name (a string), got 1", at: "6:16"),

        // MARK: unknown keys
        BadConfig(
            name: "unknown top-level table with did-you-mean",
            toml: "\(broker)\n[publishers]\nconfirm_timeout = \"5s\"",
            path: "publishers", message: #"unknown key "publishers" (did you mean "publisher"?)"#, at: "3:1"),
        BadConfig(
            name: "unknown top-level array of tables with did-you-mean",
            toml: "\(broker)\n[[queue]]\nname = \"q\"",
            path: "queue", message: #"unknown key "queue" (did you mean "queues"?)"#, at: "3:3"),
        BadConfig(
            name: "unknown key in [broker] with did-you-mean",
            toml: "\(broker)\nhearbeat = \"30s\"",
            path: "broker.hearbeat", message: #"unknown key "hearbeat" (did you mean "heartbeat"?)"#, at: "3:1"),
        BadConfig(
            name: "unknown key in [broker.tls] with did-you-mean",
            toml: "\(broker)\n[broker.tls]\nca-file = \"/etc/warren/ca.pem\"",
            path: "broker.tls.ca-file", message: #"unknown key "ca-file" (did you mean "ca_file"?)"#, at: "4:1"),
        BadConfig(
            name: "unknown key in a queue with did-you-mean",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\nprefech = 10\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].prefech", message: #"unknown key "prefech" (did you mean "prefetch"?)"#, at: "6:1"),
        BadConfig(
            name: "unknown key in [queues.retry] with did-you-mean",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\n[queues.retry]\nmax_atempts = 3\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].retry.max_atempts", message: #"unknown key "max_atempts" (did you mean "max_attempts"?)"#, at: "7:1"),
        BadConfig(
            name: "unknown key in an exec handler",
            toml: "\(broker)\n[handlers.h]\nkind = \"exec\"\ncommand = [\"/bin/cat\"]\ntimout = \"5s\"",
            path: "handlers.h.timout", message: #"unknown key "timout" (did you mean "timeout"?)"#, at: "6:1"),
        BadConfig(
            name: "unknown key in a pipe handler",
            toml: "\(broker)\n[handlers.h]\nkind = \"pipe\"\ncommand = [\"/bin/cat\"]\ninstance = 2",
            path: "handlers.h.instance", message: #"unknown key "instance" (did you mean "instances"?)"#, at: "6:1"),
        BadConfig(
            name: "unknown key in an http handler",
            toml: "\(broker)\n[handlers.h]\nkind = \"http\"\nurl = \"http://127.0.0.1/hook\"\nmethd = \"GET\"",
            path: "handlers.h.methd", message: #"unknown key "methd" (did you mean "method"?)"#, at: "6:1"),
        BadConfig(
            name: "unknown key in a plugin handler",
            toml: "\(broker)\n[handlers.h]\nkind = \"plugin\"\nlibrary = \"/usr/lib/warren/plugins/libok.so\"\nconfg = {}",
            path: "handlers.h.confg", message: #"unknown key "confg" (did you mean "config"?)"#, at: "6:1"),
        BadConfig(
            name: "unknown key in a noop handler",
            toml: "\(broker)\n[handlers.h]\nkind = \"noop\"\ntimeouts = \"1s\"",
            path: "handlers.h.timeouts", message: #"unknown key "timeouts" (did you mean "timeout"?)"#, at: "5:1"),
        BadConfig(
            name: "unknown key in a log handler",
            toml: "\(broker)\n[handlers.h]\nkind = \"log\"\ntimout = \"1s\"",
            path: "handlers.h.timout", message: #"unknown key "timout" (did you mean "timeout"?)"#, at: "5:1"),
        BadConfig(
            name: "unknown key in a log handler, nothing close to suggest",
            toml: "\(broker)\n[handlers.h]\nkind = \"log\"\nlevel = \"debug\"",
            path: "handlers.h.level", message: #"unknown key "level""#, at: "5:1"),
        BadConfig(
            name: "unknown key in a file handler",
            toml: "\(broker)\n[handlers.h]\nkind = \"file\"\npath = \"/tmp/out.jsonl\"\nfsynk = \"never\"",
            path: "handlers.h.fsynk", message: #"unknown key "fsynk" (did you mean "fsync"?)"#, at: "6:1"),
        BadConfig(
            name: "unknown key in a republish handler",
            toml: "\(broker)\n[handlers.h]\nkind = \"republish\"\nrouting-key = \"x\"",
            path: "handlers.h.routing-key", message: #"unknown key "routing-key" (did you mean "routing_key"?)"#, at: "5:1"),

        // MARK: [broker]
        BadConfig(
            name: "missing [broker]",
            toml: "[log]\nlevel = \"info\"",
            path: "broker", message: "missing [broker] section", at: "1:1"),
        BadConfig(
            name: "[broker] without a URL",
            toml: "[broker]\nheartbeat = \"30s\"",
            path: "broker", message: "no broker URL", at: "1:1"),
        BadConfig(
            name: "URL with a scheme other than amqp/amqps",
            toml: "[broker]\nurl = \"http://warren:Sup3rS3cret@rabbit/\"",
            path: "broker.url", message: #"the scheme must be amqp or amqps, not "http""#, at: "2:7"),
        BadConfig(
            name: "URL with a multi-segment vhost",
            toml: "[broker]\nurl = \"amqp://warren:Sup3rS3cret@rabbit/prod/eu\"",
            path: "broker.url", message: "the vhost must be a single path segment", at: "2:7"),
        BadConfig(
            name: "URL with a port out of range",
            toml: "[broker]\nurl = \"amqp://warren:Sup3rS3cret@rabbit:99999/\"",
            path: "broker.url", message: "port 99999 is out of range", at: "2:7"),
        BadConfig(
            name: "URL with a non-numeric port",
            toml: "[broker]\nurl = \"amqp://warren:Sup3rS3cret@rabbit:amqp/\"",
            path: "broker.url", message: "is not a valid URL", at: "2:7"),
        BadConfig(
            name: "URL without a host",
            toml: "[broker]\nurl = \"amqp://warren:Sup3rS3cret@/prod\"",
            path: "broker.url", message: "has no host", at: "2:7"),
        BadConfig(
            name: "bad URL as the second of urls",
            toml: "[broker]\nurls = [\"amqp://warren:Sup3rS3cret@rabbit-1/\", \"amqp://warren:Sup3rS3cret@rabbit-2:0/\"]",
            path: "broker.urls[1]", message: "port 0 is out of range", at: "2:48"),
        BadConfig(
            name: "empty urls",
            toml: "[broker]\nurls = []",
            path: "broker.urls", message: "expected a non-empty array of strings, got []", at: "2:8"),
        BadConfig(
            name: "url and urls both set",
            toml: "\(broker)\nurls = [\"amqp://warren:Sup3rS3cret@rabbit-2/\"]",
            path: "broker.url", message: "set either url or urls, not both", at: "2:1"),
        BadConfig(
            name: "reconnect_initial_delay above reconnect_max_delay",
            toml: "\(broker)\nreconnect_initial_delay = \"1m\"",
            path: "broker.reconnect_initial_delay", message: "reconnect_initial_delay is above reconnect_max_delay (30s)", at: "3:27"),
        BadConfig(
            name: "unreadable password_file",
            toml: "\(broker)\npassword_file = \"/run/secrets/nope\"",
            path: "broker.password_file", message: "cannot read the password file /run/secrets/nope", at: "3:17"),

        // MARK: ${ENV}
        BadConfig(
            name: "missing environment variable",
            toml: "\(broker)\nconnection_name = \"warren-${WARREN_ENV}\"",
            path: "broker.connection_name", message: "environment variable WARREN_ENV is not set", at: "3:19"),
        BadConfig(
            name: "missing environment variable in the URL",
            toml: "[broker]\nurl = \"amqp://warren:${WARREN_PASSWORD}@rabbit/\"",
            path: "broker.url", message: "environment variable WARREN_PASSWORD is not set", at: "2:7"),
        BadConfig(
            name: "missing environment variable in an array element",
            toml: "\(broker)\n[handlers.h]\nkind = \"exec\"\ncommand = [\"/bin/cat\", \"${CAT_FLAGS}\"]",
            path: "handlers.h.command[1]", message: "environment variable CAT_FLAGS is not set", at: "5:24"),
        BadConfig(
            name: "invalid environment variable reference",
            toml: "\(broker)\nconnection_name = \"${WARREN-ENV}\"",
            path: "broker.connection_name", message: #""${WARREN-ENV}" is not a valid environment variable reference"#, at: "3:19"),

        // MARK: handler references
        BadConfig(
            name: "missing handler, no close name",
            toml: "\(broker)\n[[queues]]\nname = \"jobs\"\nhandler = \"billing\"\n[handlers.print]\nkind = \"log\"",
            path: "queues[0].handler", message: #"no handler named "billing"; defined: print"#, at: "5:11"),
        BadConfig(
            name: "missing handler, no handlers at all",
            toml: "\(broker)\n[[queues]]\nname = \"jobs\"\nhandler = \"billing\"",
            path: "queues[0].handler", message: #"no handler named "billing"; define it in a [handlers.billing] table"#, at: "5:11"),
        BadConfig(
            name: "missing handler with did-you-mean",
            toml: "\(broker)\n[[queues]]\nname = \"jobs\"\nhandler = \"prnt\"\n[handlers.print]\nkind = \"log\"",
            path: "queues[0].handler", message: #"no handler named "prnt" (did you mean "print"?)"#, at: "5:11"),
        BadConfig(
            name: "route referencing a missing handler",
            toml: """
                \(broker)
                [[queues]]
                name = "jobs"
                routes = [
                  { match = { type = "A" }, handlers = ["h"] },
                  { match = { type = "B" }, handlers = ["ghost"] },
                ]
                [handlers.h]
                kind = "noop"
                """,
            path: "queues[0].routes[1].handlers[0]", message: #"no handler named "ghost"; defined: h"#, at: "7:41"),

        // MARK: queues
        BadConfig(
            name: "concurrency above prefetch, both set on the queue",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\nprefetch = 4\nconcurrency = 8\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].concurrency", message: "concurrency 8 is above prefetch 4", at: "7:15"),
        BadConfig(
            name: "concurrency inherited from [defaults] above the queue's prefetch",
            toml: "\(broker)\n[defaults]\nconcurrency = 16\n[[queues]]\nname = \"q\"\nhandler = \"h\"\nprefetch = 4\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].prefetch", message: "concurrency 16 is above prefetch 4", at: "8:12"),
        BadConfig(
            name: "queue concurrency above the prefetch inherited from [defaults]",
            toml: "\(broker)\n[defaults]\nprefetch = 4\n[[queues]]\nname = \"q\"\nhandler = \"h\"\nconcurrency = 6\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].concurrency", message: "concurrency 6 is above prefetch 4", at: "8:15"),
        BadConfig(
            name: "dead-letter destination is the source queue",
            toml: "\(broker)\n[[queues]]\nname = \"jobs\"\nhandler = \"h\"\n[queues.dead_letter]\nrouting_key = \"jobs\"\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].dead_letter", message: "the dead-letter destination is the queue itself", at: "6:1"),
        BadConfig(
            name: "inline dead-letter destination is the source queue",
            toml: "\(broker)\n[[queues]]\nname = \"jobs\"\nhandler = \"h\"\ndead_letter = { exchange = \"\", routing_key = \"jobs\" }\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].dead_letter", message: "the dead-letter destination is the queue itself", at: "6:15"),
        BadConfig(
            name: "dead_letter string that is neither broker nor drop",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\ndead_letter = \"park\"\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].dead_letter", message: #"expected "broker", "drop" or a [queues.dead_letter] table, got "park""#, at: "6:15"),
        BadConfig(
            name: "duplicate queue names",
            toml: "\(broker)\n[[queues]]\nname = \"jobs\"\nhandler = \"h\"\n[[queues]]\nname = \"jobs\"\nhandler = \"h\"\n[handlers.h]\nkind = \"noop\"",
            path: "queues[1].name", message: #"queue "jobs" is declared twice"#, at: "7:8"),
        BadConfig(
            name: "duplicate exchange names",
            toml: "\(broker)\n[[exchanges]]\nname = \"orders\"\n[[exchanges]]\nname = \"orders\"\ntype = \"topic\"",
            path: "exchanges[1].name", message: #"exchange "orders" is declared twice"#, at: "6:8"),
        BadConfig(
            name: "exchange type with did-you-mean",
            toml: "\(broker)\n[[exchanges]]\nname = \"orders\"\ntype = \"topics\"",
            path: "exchanges[0].type", message: #"got "topics" (did you mean "topic"?)"#, at: "5:8"),
        BadConfig(
            name: "exchange without a name",
            toml: "\(broker)\n[[exchanges]]\ntype = \"topic\"",
            path: "exchanges[0]", message: "this exchange has no name", at: "3:1"),
        BadConfig(
            name: "queue with an empty name",
            toml: "\(broker)\n[[queues]]\nname = \"\"\nhandler = \"h\"\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].name", message: "expected a name of 1 to 255 bytes", at: "4:8"),
        BadConfig(
            name: "binding without an exchange",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\nbindings = [{}]\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].bindings[0]", message: "this binding has no exchange", at: "6:13"),
        BadConfig(
            name: "max_attempts below 1",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\nretry = { max_attempts = 0 }\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].retry.max_attempts", message: "expected at least 1 (the first delivery counts), got 0", at: "6:26"),
        BadConfig(
            name: "max_delay above 24h",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\n[queues.retry]\nmax_delay = \"25h\"\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].retry.max_delay", message: "max_delay 25h is above the 24h limit", at: "7:13"),
        BadConfig(
            name: "retry neither a table nor false",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\nretry = \"yes\"\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].retry", message: #"expected a [queues.retry] table or false, got "yes""#, at: "6:9"),
        BadConfig(
            name: "quorum queue with durable = false",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\ntype = \"quorum\"\ndurable = false\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].durable", message: "quorum queues are always durable", at: "7:11"),
        BadConfig(
            name: "x-queue-type in arguments",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\narguments = { \"x-queue-type\" = \"quorum\" }\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].arguments.x-queue-type", message: "set the queue type with type = \"classic\", \"quorum\" or \"stream\", not in arguments", at: "6:32"),
        BadConfig(
            name: "both handler and routes",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\nroutes = [{ match = {}, handlers = [\"h\"] }]\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].routes", message: "set either handler or routes, not both", at: "6:1"),
        BadConfig(
            name: "neither handler nor routes",
            toml: "\(broker)\n[[queues]]\nname = \"q\"",
            path: "queues[0]", message: "this queue has no handler", at: "3:1"),
        BadConfig(
            name: "unrouted without routes",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\nunrouted = \"ack\"\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].unrouted", message: "unrouted only applies to queues with routes", at: "6:1"),
        BadConfig(
            name: "route without handlers",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nroutes = [{ match = {}, handlers = [\"h\"] }, { match = { type = \"x\" } }]\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].routes[1]", message: "this route has no handlers", at: "5:45"),
        BadConfig(
            name: "route with an empty handler list",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nroutes = [{ match = {}, handlers = [\"h\"] }, { match = {}, handlers = [] }]\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].routes[1].handlers", message: "expected a non-empty array of strings, got []", at: "5:70"),
        BadConfig(
            name: "routes that list no route",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nroutes = []",
            path: "queues[0].routes", message: "expected at least one route", at: "5:10"),
        BadConfig(
            name: "route match with an unknown key",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nroutes = [{ match = { typ = \"A\" }, handlers = [\"h\"] }]\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].routes[0].match.typ", message: #"unknown key "typ" (did you mean "type"?)"#, at: "5:23"),
        BadConfig(
            name: "route without a match table",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nroutes = [{ handlers = [\"h\"] }]\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].routes[0]", message: "this route has no match table", at: "5:11"),

        // MARK: enumerations
        BadConfig(
            name: "ack_policy with did-you-mean",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\nack_policy = \"nack_on_eror\"\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].ack_policy",
            message: #"expected one of "ack_first", "ack", "reject_on_error", "nack_on_error", "manual", got "nack_on_eror" (did you mean "nack_on_error"?)"#,
            at: "6:14"),
        BadConfig(
            name: "ack_mode with did-you-mean",
            toml: "\(broker)\n[defaults]\nack_mode = \"imediate\"",
            path: "defaults.ack_mode", message: #"expected one of "batched", "immediate", got "imediate" (did you mean "immediate"?)"#, at: "4:12"),
        BadConfig(
            name: "log level",
            toml: "\(broker)\n[log]\nlevel = \"verbose\"",
            path: "log.level", message: #"expected one of "trace", "debug", "info", "notice", "warning", "error", "critical", got "verbose""#, at: "4:9"),
        BadConfig(
            name: "log format",
            toml: "\(broker)\n[log]\nformat = \"text\"",
            path: "log.format", message: #"expected one of "logfmt", "json", got "text""#, at: "4:10"),
        BadConfig(
            name: "fsync mode",
            toml: "\(broker)\n[handlers.out]\nkind = \"file\"\npath = \"/tmp/out.jsonl\"\nfsync = \"sometimes\"",
            path: "handlers.out.fsync", message: #"expected one of "always", "batch", "never", got "sometimes""#, at: "6:9"),
        BadConfig(
            name: "queue type",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\ntype = \"streem\"\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].type", message: #"expected one of "classic", "quorum", "stream", got "streem" (did you mean "stream"?)"#, at: "6:8"),
        BadConfig(
            name: "sqlite dedup store in a missing directory",
            toml: "\(broker)\n[dedup]\nstore = \"sqlite\"\npath = \"/nowhere/dedup.sqlite\"\n[[queues]]\nname = \"q\"\nhandler = \"h\"\ndedup = true\n[handlers.h]\nkind = \"noop\"",
            path: "dedup.path", message: "the directory /nowhere does not exist", at: "5:8"),
        BadConfig(
            name: "dedup store",
            toml: "\(broker)\n[dedup]\nstore = \"redis\"",
            path: "dedup.store", message: #"expected one of "memory", "sqlite", got "redis""#, at: "4:9"),
        BadConfig(
            name: "metrics listen without a port",
            toml: "\(broker)\n[metrics]\nlisten = \"localhost\"",
            path: "metrics.listen", message: #"expected "host:port" such as "127.0.0.1:9419", got "localhost""#, at: "4:10"),
        BadConfig(
            name: "metrics listen with a port out of range",
            toml: "\(broker)\n[metrics]\nlisten = \"127.0.0.1:70000\"",
            path: "metrics.listen", message: #"got "127.0.0.1:70000""#, at: "4:10"),

        // MARK: handlers
        BadConfig(
            name: "handler timeout above the broker's consumer timeout",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"slow\"\n[handlers.slow]\nkind = \"noop\"\ntimeout = \"31m\"",
            path: "handlers.slow.timeout", message: #"handler "slow" may run for 31m, above the broker's consumer timeout of 30m"#, at: "8:11"),
        BadConfig(
            name: "queue handler_timeout inherited by the handler above the consumer timeout",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\nhandler_timeout = \"45m\"\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].handler", message: #"handler "h" may run for 45m, above the broker's consumer timeout of 30m"#, at: "5:11"),
        BadConfig(
            name: "[defaults] handler_timeout above a lowered consumer_timeout",
            toml: "[broker]\nurl = \"amqp://warren:Sup3rS3cret@rabbit/\"\nconsumer_timeout = \"10m\"\n[defaults]\nhandler_timeout = \"15m\"\n[[queues]]\nname = \"q\"\nhandler = \"h\"\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].handler", message: #"handler "h" may run for 15m, above the broker's consumer timeout of 10m"#, at: "8:11"),
        BadConfig(
            name: "unknown handler kind with did-you-mean",
            toml: "\(broker)\n[handlers.h]\nkind = \"exe\"\ncommand = [\"/bin/cat\"]",
            path: "handlers.h.kind", message: #"got "exe" (did you mean "exec"?)"#, at: "4:8"),
        BadConfig(
            name: "issue under a quoted handler name",
            toml: "\(broker)\n[handlers.\"print.v2\"]\nkind = \"lg\"",
            path: #"handlers."print.v2".kind"#, message: #"got "lg" (did you mean "log"?)"#, at: "4:8"),
        BadConfig(
            name: "exec command as a string",
            toml: "\(broker)\n[handlers.h]\nkind = \"exec\"\ncommand = \"/bin/cat -n\"",
            path: "handlers.h.command", message: "expected an array (argv, never run through a shell), got a string", at: "5:11"),
        BadConfig(
            name: "exec without a command",
            toml: "\(broker)\n[handlers.h]\nkind = \"exec\"",
            path: "handlers.h", message: "this handler needs command = [", at: "3:1"),
        BadConfig(
            name: "exec with an empty command",
            toml: "\(broker)\n[handlers.h]\nkind = \"exec\"\ncommand = []",
            path: "handlers.h.command", message: "expected a non-empty array of strings, got []", at: "5:11"),
        BadConfig(
            name: "exec program missing",
            toml: "\(broker)\n[handlers.h]\nkind = \"exec\"\ncommand = [\"/usr/local/bin/nothere\", \"-v\"]",
            path: "handlers.h.command[0]", message: "/usr/local/bin/nothere does not exist or is not executable", at: "5:12"),
        BadConfig(
            name: "exec program given as a relative path",
            toml: "\(broker)\n[handlers.h]\nkind = \"exec\"\ncommand = [\"bin/worker\"]",
            path: "handlers.h.command[0]", message: "bin/worker is a relative path", at: "5:12"),
        BadConfig(
            name: "pipe program not on PATH",
            toml: "\(broker)\n[handlers.h]\nkind = \"pipe\"\ncommand = [\"frob\"]",
            path: "handlers.h.command[0]", message: "frob is not an absolute path and was not found on PATH (/usr/bin:/bin)", at: "5:12"),
        BadConfig(
            name: "exec working_directory that is not a directory",
            toml: "\(broker)\n[handlers.h]\nkind = \"exec\"\ncommand = [\"/bin/cat\"]\nworking_directory = \"/etc/passwd\"",
            path: "handlers.h.working_directory", message: "/etc/passwd is not a directory", at: "6:21"),
        BadConfig(
            name: "plugin library that is not a Warren plugin",
            toml: "\(broker)\n[handlers.h]\nkind = \"plugin\"\nlibrary = \"/usr/lib/warren/plugins/libbad.so\"",
            path: "handlers.h.library", message: "/usr/lib/warren/plugins/libbad.so does not export warren_plugin_v1", at: "5:11"),
        BadConfig(
            name: "plugin without a library",
            toml: "\(broker)\n[handlers.h]\nkind = \"plugin\"",
            path: "handlers.h", message: "a plugin handler needs library", at: "3:1"),
        BadConfig(
            name: "republish with an unknown placeholder",
            toml: "\(broker)\n[handlers.h]\nkind = \"republish\"\nrouting_key = \"eu.{exchange}\"",
            path: "handlers.h.routing_key", message: "unknown placeholder {exchange}; use {routing_key}, {queue} or {type}", at: "5:15"),
        BadConfig(
            name: "republish with an unterminated placeholder",
            toml: "\(broker)\n[handlers.h]\nkind = \"republish\"\nrouting_key = \"eu.{routing_key\"",
            path: "handlers.h.routing_key", message: #"unterminated { in "eu.{routing_key""#, at: "5:15"),
        BadConfig(
            name: "http handler without url",
            toml: "\(broker)\n[handlers.h]\nkind = \"http\"",
            path: "handlers.h", message: "an http handler needs url", at: "3:1"),
        BadConfig(
            name: "http handler with a non-http url",
            toml: "\(broker)\n[handlers.h]\nkind = \"http\"\nurl = \"ftp://files.example/hook\"",
            path: "handlers.h.url", message: "expected an http:// or https:// URL", at: "5:7"),
        BadConfig(
            name: "http handler with a bad method",
            toml: "\(broker)\n[handlers.h]\nkind = \"http\"\nurl = \"http://127.0.0.1/hook\"\nmethod = \"FETCH\"",
            path: "handlers.h.method", message: #"expected one of GET, POST, PUT, PATCH, DELETE, got "FETCH""#, at: "6:10"),

        // MARK: TLS
        BadConfig(
            name: "TLS ca_file that does not exist",
            toml: "[broker]\nurl = \"amqps://warren:Sup3rS3cret@rabbit/\"\n[broker.tls]\nca_file = \"/etc/warren/missing-ca.pem\"",
            path: "broker.tls.ca_file", message: "/etc/warren/missing-ca.pem does not exist or cannot be read", at: "4:11"),
        BadConfig(
            name: "TLS key_file that does not exist",
            toml: "\(broker)\n[broker.tls]\ncert_file = \"/etc/warren/client.pem\"\nkey_file = \"/etc/warren/nokey.key\"",
            path: "broker.tls.key_file", message: "/etc/warren/nokey.key does not exist or cannot be read", at: "5:12"),
        BadConfig(
            name: "amqps without [broker.tls]",
            toml: "[broker]\nurl = \"amqps://warren:Sup3rS3cret@rabbit/\"",
            path: "broker", message: "amqps:// URLs need a [broker.tls] section with ca_file", at: "1:1"),
        BadConfig(
            name: "amqps with [broker.tls] but no ca_file",
            toml: "[broker]\nurl = \"amqps://warren:Sup3rS3cret@rabbit/\"\n[broker.tls]\nverify_hostname = false",
            path: "broker.tls", message: "verify_peer needs ca_file", at: "3:1"),
        BadConfig(
            name: "client certificate without a key",
            toml: "\(broker)\n[broker.tls]\ncert_file = \"/etc/warren/client.pem\"",
            path: "broker.tls", message: "a client certificate needs both cert_file and key_file", at: "3:1"),

        // MARK: stream queues: offset
        BadConfig(
            name: "offset that is no known word",
            toml: stream(#"offset = "beginning""#),
            path: "queues[0].offset",
            message: #"expected "first", "last", "next", an offset (an integer, 0 or more), a date-time with a time zone such as 2026-12-01T00:00:00Z, or a duration followed by " ago" such as "2h ago", got "beginning""#,
            at: "7:10"),
        BadConfig(
            name: "offset word with did-you-mean",
            toml: stream(#"offset = "First""#),
            path: "queues[0].offset", message: #"got "First" (did you mean "first"?)"#, at: "7:10"),
        BadConfig(
            name: "negative offset",
            toml: stream("offset = -1"),
            path: "queues[0].offset", message: "expected an offset of 0 or more, got -1", at: "7:10"),
        BadConfig(
            name: "offset given as a number with a fraction",
            toml: stream("offset = 1.5"),
            path: "queues[0].offset", message: #"or a duration followed by " ago" such as "2h ago", got 1.5"#, at: "7:10"),
        BadConfig(
            name: "offset given as a boolean",
            toml: stream("offset = true"),
            path: "queues[0].offset", message: #"expected "first", "last", "next", an offset"#, at: "7:10"),
        BadConfig(
            name: "offset date-time without a time zone",
            toml: stream("offset = 2026-12-01T00:00:00"),
            path: "queues[0].offset",
            message: "the date-time 2026-12-01T00:00:00 has no time zone: give a time zone, e.g. 2026-12-01T00:00:00Z", at: "7:10"),
        BadConfig(
            name: "offset given as a date alone",
            toml: stream("offset = 2026-12-01"),
            path: "queues[0].offset", message: #"such as "2h ago", got a date/time"#, at: "7:10"),
        BadConfig(
            name: "offset ago with words for a duration",
            toml: stream(#"offset = "two hours ago""#),
            path: "queues[0].offset",
            message: #"expected a duration with a unit before " ago", such as "2h ago" or "90m ago", got "two hours ago""#, at: "7:10"),
        BadConfig(
            name: "offset ago of zero",
            toml: stream(#"offset = "0s ago""#),
            path: "queues[0].offset", message: #"expected a duration above zero before " ago", got "0s ago""#, at: "7:10"),
        BadConfig(
            name: "offset on a classic queue",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\noffset = \"first\"\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].offset", message: #"offset applies to stream queues only (type = "stream")"#, at: "6:10"),
        BadConfig(
            name: "offset on a quorum queue, even a bad one",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\ntype = \"quorum\"\noffset = \"nope\"\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].offset", message: #"offset applies to stream queues only (type = "stream")"#, at: "7:10"),
        BadConfig(
            name: "offset on a queue whose type is misspelt: only the type is reported",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\ntype = \"steam\"\noffset = \"first\"\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].type", message: #"got "steam" (did you mean "stream"?)"#, at: "6:8"),
        BadConfig(
            name: "offset in [defaults]",
            toml: "\(broker)\n[defaults]\noffset = \"first\"",
            path: "defaults.offset", message: #"unknown key "offset""#, at: "4:1"),

        // MARK: stream queues: what RabbitMQ refuses
        BadConfig(
            name: "stream queue with durable = false",
            toml: stream("durable = false"),
            path: "queues[0].durable",
            message: #"stream queues are always durable: RabbitMQ refuses durable = false ("PRECONDITION_FAILED - invalid property 'non-durable' for queue 's' ...")"#,
            at: "7:11"),
        BadConfig(
            name: "stream queue with dead_letter = broker",
            toml: stream(#"dead_letter = "broker""#),
            path: "queues[0].dead_letter",
            message: #"("NOT_IMPLEMENTED - basic.nack and basic.reject not supported by stream queues"); remove dead_letter to park them in s.dead, or set dead_letter = { exchange = "..." }"#,
            at: "7:15"),
        BadConfig(
            name: "stream queue rejecting unrouted messages",
            toml: "\(broker)\n[[queues]]\nname = \"s\"\ntype = \"stream\"\nunrouted = \"reject\"\nroutes = [{ match = { type = \"x\" }, handlers = [\"h\"] }]\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].unrouted",
            message: #"RabbitMQ refuses basic.reject on a stream and closes the connection ("NOT_IMPLEMENTED - basic.nack and basic.reject not supported by stream queues"); use "dead_letter" (the default) or "ack""#,
            at: "6:12"),
        BadConfig(
            name: "stream queue with a single active consumer",
            toml: stream("single_active_consumer = true"),
            path: "queues[0].single_active_consumer",
            message: #"RabbitMQ 3.10 refuses the declaration ("PRECONDITION_FAILED - invalid arg 'x-single-active-consumer' for queue 's' ... of queue type rabbit_stream_queue"); remove it"#,
            at: "7:26"),

        // MARK: rate_limit
        BadConfig(
            name: "rate limit without a unit",
            toml: quorum(#"rate_limit = "50""#),
            path: "queues[0].rate_limit",
            message: #"expected runs per unit of time: "50/s", "600/m" or "1000/h" (a positive number, at least one a day), got "50""#,
            at: "7:14"),
        BadConfig(
            name: "rate limit so slow a prefetched message passes the consumer timeout",
            toml: quorum(#"rate_limit = "1/m""#),
            path: "queues[0].rate_limit",
            message: "at 1/m, a prefetched message may wait 32m for its turn, which with handler_timeout 30s passes the broker's consumer timeout of 30m",
            at: "7:14"),

        // MARK: circuit_breaker
        BadConfig(
            name: "circuit breaker given as a string",
            toml: quorum(#"circuit_breaker = "on""#),
            path: "queues[0].circuit_breaker",
            message: #"expected { failure_ratio = 0.5, min_runs = 20, window = "30s", open_for = "10s" } or false, got "on""#,
            at: "7:19"),
        BadConfig(
            name: "circuit breaker ratio above one",
            toml: quorum("circuit_breaker = { failure_ratio = 1.5 }"),
            path: "queues[0].circuit_breaker.failure_ratio",
            message: "expected a number above 0 and at most 1, got 1.5",
            at: "7:37"),
        BadConfig(
            name: "circuit breaker with an unknown key",
            toml: quorum("circuit_breaker = { ratio = 0.5 }"),
            path: "queues[0].circuit_breaker.ratio",
            message: "unknown key",
            at: "7:21"),

        // MARK: quorum queues: what RabbitMQ refuses or ignores
        BadConfig(
            name: "quorum queue with priorities",
            toml: quorum(#"arguments = { "x-max-priority" = 10 }"#),
            path: "queues[0].arguments.x-max-priority",
            message: #"quorum queues have no priorities: RabbitMQ refuses the declaration ("PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'q' ... of queue type rabbit_quorum_queue"); remove it or use type = "classic""#,
            at: "7:34"),
        BadConfig(
            name: "quorum queue with a string delivery limit",
            toml: quorum(#"arguments = { "x-delivery-limit" = "5" }"#),
            path: "queues[0].arguments.x-delivery-limit",
            message: #"x-delivery-limit is a string ("5"): RabbitMQ 3.10 accepts it and ignores it, so no limit applies; give a number, e.g. "x-delivery-limit" = 5"#,
            at: "7:36"),
        BadConfig(
            name: "quorum queue with a fractional delivery limit",
            toml: quorum(#"arguments = { "x-delivery-limit" = 2.5 }"#),
            path: "queues[0].arguments.x-delivery-limit", message: "expected an integer", at: "7:36"),
        BadConfig(
            name: "quorum delivery limit below the retry attempts",
            toml: quorum(#"arguments = { "x-delivery-limit" = 3 }"#),
            path: "queues[0].arguments.x-delivery-limit",
            message: "x-delivery-limit 3 is below retry.max_attempts 5: the broker would drop (or dead-letter) a message requeued more than 3 times before warren parks it; raise it above max_attempts, remove it, or lower max_attempts",
            at: "7:36"),

        // MARK: [control]
        BadConfig(
            name: "control socket that is relative",
            toml: "\(broker)\n[control]\nsocket = \"run/warren.sock\"",
            path: "control.socket", message: #"expected an absolute path (starting with /) or "" to turn the control socket off, got "run/warren.sock""#,
            at: "4:10"),
        BadConfig(
            name: "control socket path longer than sun_path holds",
            toml: "\(broker)\n[control]\nsocket = \"/\(String(repeating: "a", count: 107))\"",
            path: "control.socket", message: "a unix socket path holds at most 107 bytes, this one has 108: choose a shorter path", at: "4:10"),
        BadConfig(
            name: "unknown key in [control]",
            toml: "\(broker)\n[control]\nsockets = \"/run/w.sock\"",
            path: "control.sockets", message: #"unknown key "sockets" (did you mean "socket"?)"#, at: "4:1"),

        // MARK: [state]
        BadConfig(
            name: "state directory that is relative",
            toml: "\(broker)\n[state]\ndirectory = \"var/lib/warren\"",
            path: "state.directory", message: #"expected an absolute path (starting with /), got "var/lib/warren""#, at: "4:13"),
        BadConfig(
            name: "offset_flush_every of zero",
            toml: "\(broker)\n[state]\noffset_flush_every = 0",
            path: "state.offset_flush_every", message: "expected a positive integer, got 0", at: "4:22"),
        BadConfig(
            name: "offset_flush_interval of zero",
            toml: "\(broker)\n[state]\noffset_flush_interval = \"0s\"",
            path: "state.offset_flush_interval", message: #"expected a duration above zero, got "0s""#, at: "4:25"),
        BadConfig(
            name: "unknown key in [state] with did-you-mean",
            toml: "\(broker)\n[state]\noffset_flush_evry = 10",
            path: "state.offset_flush_evry", message: #"unknown key "offset_flush_evry" (did you mean "offset_flush_every"?)"#, at: "4:1"),
        BadConfig(
            name: "state directory missing with a stream queue",
            toml: "\(broker)\n[state]\ndirectory = \"/nowhere\"\n[[queues]]\nname = \"s\"\nhandler = \"h\"\ntype = \"stream\"\n[handlers.h]\nkind = \"noop\"",
            path: "state.directory", message: "the state directory /nowhere does not exist (stream queues keep their offsets in it)", at: "4:13"),
        BadConfig(
            name: "state directory not writable with a stream queue",
            toml: "\(broker)\n[state]\ndirectory = \"/srv/read-only\"\n[[queues]]\nname = \"s\"\nhandler = \"h\"\ntype = \"stream\"\n[handlers.h]\nkind = \"noop\"",
            path: "state.directory", message: "warren cannot write in the state directory /srv/read-only", at: "4:13"),

        // MARK: TOML syntax
        BadConfig(
            name: "unterminated string",
            toml: "[broker]\nurl = \"amqp://rabbit\nheartbeat = \"30s\"",
            path: "", message: "syntax error", at: "2:21"),
        BadConfig(
            name: "bad table header",
            toml: "[broker\nurl = \"amqp://rabbit\"",
            path: "", message: "syntax error", at: "1:8"),
        BadConfig(
            name: "key defined twice",
            toml: "\(broker)\nheartbeat = \"5s\"\nheartbeat = \"10s\"",
            path: "", message: "syntax error: Error while parsing key-value pair: cannot redefine existing string 'heartbeat'", at: "4:13"),
    ]

    @Test(arguments: cases)
    func refusesBadConfiguration(_ bad: BadConfig) {
        Self.expectRefused(bad)
    }

    /// The loader throws `ConfigError` (which `warren` turns into exit 78) with exactly
    /// `bad.issueCount` issues, one of them the expected one, and no password in the text.
    static func expectRefused(_ bad: BadConfig, sourceLocation: SourceLocation = #_sourceLocation) {
        let error: ConfigError
        do {
            _ = try ConfigurationLoader.parse(
                source: bad.toml, file: ConfigFixture.file, environment: bad.environment, checks: FakeMachine.standard.checks)
            Issue.record("accepted:\n\(bad.toml)", sourceLocation: sourceLocation)
            return
        } catch let thrown {
            error = thrown  // typed throws: always a ConfigError
        }
        let expected = "\(ConfigFixture.file):\(bad.at): " + (bad.path.isEmpty ? "" : "\(bad.path): ")
        let match = error.issues.first {
            $0.path == bad.path && $0.position.description == bad.at && $0.message.contains(bad.message)
        }
        #expect(match != nil, "expected \(expected)…\(bad.message)…, got:\n\(error.description)", sourceLocation: sourceLocation)
        if let match { #expect(match.description.hasPrefix(expected), sourceLocation: sourceLocation) }
        #expect(error.issues.count == bad.issueCount, "got:\n\(error.description)", sourceLocation: sourceLocation)
        #expect(
            error.issues.allSatisfy { $0.file == ConfigFixture.file && $0.position.line >= 1 && $0.position.column >= 1 },
            sourceLocation: sourceLocation)
        #expect(!error.description.contains(secret), "a password leaked:\n\(error.description)", sourceLocation: sourceLocation)
    }

    /// Each argument a stream refuses, at the argument, with the broker's reply and what to do.
    @Test(arguments: ConfigurationValidation.argumentsRefusedByStreams.keys.sorted())
    func streamQueueRefusesArgument(_ name: String) {
        let value = name == "x-single-active-consumer" ? "true" : name.hasPrefix("x-dead-letter") || name == "x-overflow" ? "\"v\"" : "5"
        Self.expectRefused(BadConfig(
            name: "stream queue with \(name)",
            toml: stream("arguments = { \"\(name)\" = \(value) }"),
            path: "queues[0].arguments.\(name)",
            message: "stream queues do not take \(name): RabbitMQ refuses the declaration (\"PRECONDITION_FAILED - invalid arg '\(name)' for queue 's' ... of queue type rabbit_stream_queue\"); remove it (",
            at: "7:\(name.count + 20)"))
    }

    @Test func streamRefusesTheArgumentsRabbitMQRefuses() {
        #expect(Set(ConfigurationValidation.argumentsRefusedByStreams.keys) == [
            "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-message-ttl", "x-max-length", "x-max-priority", "x-overflow",
            "x-expires", "x-delivery-limit", "x-single-active-consumer",
        ])
    }

    @Test func thereAreAtLeastFortyFiveBadConfigurations() {
        #expect(Self.cases.count >= 45)
        #expect(Set(Self.cases.map(\.name)).count == Self.cases.count, "case names must be unique")
    }

    @Test func reportsEveryProblemOfAFileInOnePassInFileOrder() throws {
        let source = """
            [broker]
            url = "amqp://warren:Sup3rS3cret@rabbit/"
            heartbeat = 30

            [defaults]
            prefetch = 0

            [log]
            level = "loud"

            [[queues]]
            name = "jobs"
            handler = "missing"
            retry = { max_attempts = 0 }

            [[queues]]
            name = "jobs"
            handler = "print"
            ack_mode = "sometimes"

            [handlers.print]
            kind = "log"
            colour = true
            """
        let error = try #require(ConfigFixture.issues(source))
        #expect(error.issues.map(\.description) == [
            #"test/warren.toml:3:13: broker.heartbeat: expected a duration with a unit such as "250ms", "30s", "5m" or "1h", got 30"#,
            "test/warren.toml:6:12: defaults.prefetch: expected a positive integer up to 65535, got 0",
            #"test/warren.toml:9:9: log.level: expected one of "trace", "debug", "info", "notice", "warning", "error", "critical", got "loud""#,
            #"test/warren.toml:13:11: queues[0].handler: no handler named "missing"; defined: print"#,
            "test/warren.toml:14:26: queues[0].retry.max_attempts: expected at least 1 (the first delivery counts), got 0",
            #"test/warren.toml:17:8: queues[1].name: queue "jobs" is declared twice"#,
            #"test/warren.toml:19:12: queues[1].ack_mode: expected one of "batched", "immediate", got "sometimes""#,
            #"test/warren.toml:23:1: handlers.print.colour: unknown key "colour""#,
        ])
    }

    @Test func loadReportsAMissingFileAtItsFirstLine() throws {
        let path = "/nonexistent-\(UUID().uuidString)/warren.toml"
        do {
            _ = try ConfigurationLoader.load(path: path, environment: ConfigFixture.environment, checks: FakeMachine.standard.checks)
            Issue.record("loaded a file that does not exist")
        } catch {
            #expect(error.issues.map(\.description) == ["\(path):1:1: the configuration file does not exist"])
        }
    }

    @Test func loadNamesTheFileInEveryIssue() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("warren-bad-\(UUID().uuidString).toml").path
        try "[broker]\nurl = \"amqp://rabbit/\"\nheartbeat = \"soon\"\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            _ = try ConfigurationLoader.load(path: path, environment: ConfigFixture.environment, checks: FakeMachine.standard.checks)
            Issue.record("loaded a bad file")
        } catch {
            #expect(error.issues.map(\.description) == [
                #"\#(path):3:13: broker.heartbeat: expected a duration with a unit such as "250ms", "30s", "5m" or "1h", got "soon""#
            ])
        }
    }
}

/// Loader bugs found while writing these tests (all fixed); each test states the correct behaviour.
@Suite("Fixed loader bugs")
struct KnownLoaderBugTests {
    // MARK: cascades of bogus follow-on errors

    @Test
    func handlerWithoutCommandReportsOnlyTheMissingCommand() {
        BadConfigTests.expectRefused(BadConfig(
            name: "exec without command, with env and working_directory",
            toml: "\(broker)\n[handlers.h]\nkind = \"exec\"\nenv = { A = \"1\" }\nworking_directory = \"/\"",
            path: "handlers.h", message: "this handler needs command", at: "3:1"))
    }

    @Test
    func handlerWithBadCommandReportsOnlyTheCommand() {
        BadConfigTests.expectRefused(BadConfig(
            name: "pipe with a command naming a missing variable, with env",
            toml: "\(broker)\n[handlers.h]\nkind = \"pipe\"\ncommand = [\"${WORKER}\"]\nenv = { A = \"1\" }",
            path: "handlers.h.command[0]", message: "environment variable WORKER is not set", at: "5:12"))
    }

    @Test
    func handlerWithNonStringKindReportsOnlyTheKind() {
        BadConfigTests.expectRefused(BadConfig(
            name: "kind = 3",
            toml: "\(broker)\n[handlers.h]\nkind = 3\ncommand = [\"/bin/cat\"]",
            path: "handlers.h.kind", message: "expected a string, got 3", at: "4:8"))
    }

    @Test
    func handlerWithoutKindReportsOnlyTheMissingKind() {
        BadConfigTests.expectRefused(BadConfig(
            name: "no kind, with timeout",
            toml: "\(broker)\n[handlers.h]\ntimeout = \"1s\"",
            path: "handlers.h", message: "this handler has no kind", at: "3:1"))
    }

    @Test
    func bindingWithoutExchangeReportsOnlyTheMissingExchange() {
        BadConfigTests.expectRefused(BadConfig(
            name: "binding with routing_key but no exchange",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nhandler = \"h\"\nbindings = [{ routing_key = \"k\" }]\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].bindings[0]", message: "this binding has no exchange", at: "6:13"))
    }

    @Test
    func invalidOnlyRouteReportsOnlyItsOwnProblem() {
        BadConfigTests.expectRefused(BadConfig(
            name: "the only route has no handlers",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nroutes = [{ match = {} }]",
            path: "queues[0].routes[0]", message: "this route has no handlers", at: "5:11"))
        BadConfigTests.expectRefused(BadConfig(
            name: "the only route has a non-string handler",
            toml: "\(broker)\n[[queues]]\nname = \"q\"\nroutes = [{ match = {}, handlers = [\"h\", 5] }]\n[handlers.h]\nkind = \"noop\"",
            path: "queues[0].routes[0].handlers[1]", message: "expected a string, got 5", at: "5:42"))
    }

    @Test
    func invalidCAFileReportsOnlyItsOwnProblem() {
        BadConfigTests.expectRefused(BadConfig(
            name: "ca_file naming a missing variable",
            toml: "[broker]\nurl = \"amqps://warren:Sup3rS3cret@rabbit/\"\n[broker.tls]\nca_file = \"${CA_FILE}\"",
            path: "broker.tls.ca_file", message: "environment variable CA_FILE is not set", at: "4:11"))
        BadConfigTests.expectRefused(BadConfig(
            name: "ca_file of the wrong type",
            toml: "[broker]\nurl = \"amqps://warren:Sup3rS3cret@rabbit/\"\n[broker.tls]\nca_file = 5",
            path: "broker.tls.ca_file", message: "expected a string, got 5", at: "4:11"))
    }

    @Test
    func invalidCertFileReportsOnlyItsOwnProblem() {
        BadConfigTests.expectRefused(BadConfig(
            name: "cert_file of the wrong type",
            toml: "\(broker)\n[broker.tls]\ncert_file = 5\nkey_file = \"/etc/warren/client.key\"",
            path: "broker.tls.cert_file", message: "expected a string, got 5", at: "4:13"))
    }

    @Test
    func defaultsConcurrencyAbovePrefetchIsReportedOnceAtDefaults() {
        let defaults = "\(broker)\n[defaults]\nprefetch = 4\nconcurrency = 8"
        BadConfigTests.expectRefused(BadConfig(
            name: "inconsistent [defaults], two queues inheriting them",
            toml: "\(defaults)\n[[queues]]\nname = \"a\"\nhandler = \"h\"\n[[queues]]\nname = \"b\"\nhandler = \"h\"\n[handlers.h]\nkind = \"noop\"",
            path: "defaults.concurrency", message: "concurrency 8 is above prefetch 4", at: "5:15"))
        BadConfigTests.expectRefused(BadConfig(
            name: "inconsistent [defaults], no queue",
            toml: defaults,
            path: "defaults.concurrency", message: "concurrency 8 is above prefetch 4", at: "5:15"))
    }

    // MARK: passwords in issue text

    @Test
    func unterminatedInterpolationDoesNotEchoThePassword() {
        BadConfigTests.expectRefused(BadConfig(
            name: "unterminated ${ in the broker URL",
            toml: "[broker]\nurl = \"amqp://warren:Sup3rS3cret@rabbit/${VHOST\"",
            path: "broker.url", message: "unterminated ${", at: "2:7"))
        BadConfigTests.expectRefused(BadConfig(
            name: "unterminated ${ in an http handler URL",
            toml: "\(broker)\n[handlers.h]\nkind = \"http\"\nurl = \"https://hook:Sup3rS3cret@hooks.example/${PATH_PART\"",
            path: "handlers.h.url", message: "unterminated ${", at: "5:7"))
    }

    @Test
    func urlWithoutSlashesDoesNotEchoThePassword() {
        BadConfigTests.expectRefused(BadConfig(
            name: "amqp:user:password@host",
            toml: "[broker]\nurl = \"amqp:warren:Sup3rS3cret@rabbit\"",
            path: "broker.url", message: "has no host", at: "2:7"))
    }

    @Test
    func httpHandlerURLMessageDoesNotEchoThePassword() {
        BadConfigTests.expectRefused(BadConfig(
            name: "ftp URL with credentials",
            toml: "\(broker)\n[handlers.h]\nkind = \"http\"\nurl = \"ftp://hook:Sup3rS3cret@files.example/\"",
            path: "handlers.h.url", message: "expected an http:// or https:// URL", at: "5:7"))
    }

    // MARK: crashes and silent truncation in the TOML layer

    /// Enabled before the fix, this test aborts the whole test process.
    @Test
    func tableHeaderWithAnInvalidFirstCharacterIsASyntaxError() {
        let headers = [
            ("[!a]", "3:2"), ("[[=a]]", "3:3"), ("[.a]", "3:2"), ("[[[a]]]", "3:3"), ("[{a}]", "3:2"),
            ("[\u{0E}andlers.audit]", "3:2"), ("[", "3:2"),
        ]
        for (header, position) in headers {
            BadConfigTests.expectRefused(BadConfig(
                name: "header \(header)",
                toml: "\(broker)\n\(header)\nx = 1",
                path: "", message: "syntax error", at: position))
        }
    }

    /// Enabled before the fix, this test aborts the whole test process.
    @Test
    func arrayElementStartingWithAClosingBraceIsASyntaxError() {
        for (value, column) in [("[}]", "6"), ("[1, }]", "9"), ("[[}]]", "7")] {
            BadConfigTests.expectRefused(BadConfig(
                name: "x = \(value)",
                toml: "\(broker)\nx = \(value)",
                path: "", message: "syntax error", at: "3:\(column)"))
        }
    }

    @Test
    func nulByteIsASyntaxError() {
        BadConfigTests.expectRefused(BadConfig(
            name: "NUL before a bad queue",
            toml: "\(broker)\n\u{0}\n[[queues]]\nname = 5",
            path: "", message: "syntax error", at: "3:1"))
    }

    // MARK: Rules not enforced

    @Test
    func enumeratedValuesAndDeadLetterAreInterpolated() throws {
        let c = try ConfigFixture.parse(
            """
            [broker]
            url = "amqp://rabbit"
            [log]
            level = "${LOG_LEVEL}"
            [[queues]]
            name = "q"
            handler = "h"
            ack_policy = "${POLICY}"
            dead_letter = "${DEAD_LETTER}"
            [handlers.h]
            kind = "noop"
            """,
            environment: ["LOG_LEVEL": "debug", "POLICY": "ack", "DEAD_LETTER": "drop"])
        #expect(c.log.level == .debug)
        #expect(c.queues.first?.ackPolicy == .ack)
        #expect(c.queues.first?.deadLetter == .drop)
    }

    @Test
    func invalidPercentEncodingInTheVhostIsRefused() {
        BadConfigTests.expectRefused(BadConfig(
            name: "vhost %zz",
            toml: "[broker]\nurl = \"amqp://warren:Sup3rS3cret@rabbit/%zz\"",
            path: "broker.url", message: "the vhost is not valid percent-encoding", at: "2:7"))
    }

    @Test
    func hugeMaxAttemptsWithAConstantLadderLoadsPromptly() {
        let source = """
            [broker]
            url = "amqp://rabbit"
            [[queues]]
            name = "q"
            handler = "h"
            retry = { max_attempts = 1000000000, multiplier = 1.0 }
            [handlers.h]
            kind = "noop"
            """
        let clock = ContinuousClock()
        let start = clock.now
        // Accepted (ladder [1s]) or refused with a bound on max_attempts: either is fine.
        do {
            let c = try ConfigFixture.parse(source)
            #expect(c.queues.first?.retry?.ladder == [.seconds(1)])
        } catch {
            #expect(error.issues.contains { $0.path == "queues[0].retry.max_attempts" })
        }
        #expect(clock.now - start < .seconds(2))
    }

    @Test
    func badHTTPMethodIsQuotedAsWritten() {
        BadConfigTests.expectRefused(BadConfig(
            name: "method = fetch",
            toml: "\(broker)\n[handlers.h]\nkind = \"http\"\nurl = \"http://127.0.0.1/hook\"\nmethod = \"fetch\"",
            path: "handlers.h.method", message: #"got "fetch""#, at: "6:10"))
    }
}
