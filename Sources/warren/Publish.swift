import AMQP
import ArgumentParser
import Foundation
import Logging
import WarrenCore

struct Publish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish messages with confirms and mandatory routing.",
        discussion: """
            Prints one summary line (confirmed=N returned=N nacked=N timed_out=N) and exits 0 only \
            when every message was confirmed, 1 otherwise, 69 when the broker cannot be reached.
            """)

    @OptionGroup var options: ConfigOption
    @Option(help: "The exchange (default: the default exchange).") var exchange = ""
    @Option(name: .customLong("routing-key"), help: "The routing key.") var routingKey: String
    @Option(help: "The message body.") var body: String?
    @Option(help: ArgumentHelp("Read the body from this file.", valueName: "path")) var file: String?
    @Flag(help: "Publish each line of standard input as one message.") var lines = false
    @Option(help: "Publish each message this many times.") var count = 1
    @Option(name: .customLong("header"), help: ArgumentHelp("A header, k=v (repeatable).", valueName: "k=v")) var headers: [String] = []
    @Option(name: .customLong("property"), help: ArgumentHelp("A basic property in snake case, name=value (repeatable).", valueName: "name=value"))
    var properties: [String] = []
    @Flag(help: "Publish persistent messages (delivery_mode 2).") var persistent = false

    func validate() throws {
        let sources = [body != nil, file != nil, lines].filter { $0 }.count
        guard sources == 1 else { throw ValidationError("give exactly one of --body, --file or --lines") }
        guard count >= 1 else { throw ValidationError("--count must be at least 1") }
        _ = try Self.parseHeaders(headers)
        _ = try Self.parseProperties(properties, persistent: persistent, headers: [:])
    }

    func run() async throws {
        let configuration = try options.load()
        let logger = Bootstrap.logging(configuration.log, override: .warning)
        let basic = try Self.parseProperties(properties, persistent: persistent, headers: try Self.parseHeaders(headers))
        var fixedBody: [UInt8]?
        if let body { fixedBody = Array(body.utf8) }
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else {
                printError("cannot read \(file)")
                throw WarrenExit.usage
            }
            fixedBody = Array(data)
        }
        let connection = try await connectOnce(configuration, role: "publish", logger: logger)
        let publisher: Publisher
        do {
            publisher = try await connection.openPublisher(PublisherOptions(
                maxInFlight: configuration.publisher.maxInFlight, confirmTimeout: configuration.publisher.confirmTimeout))
        } catch {
            printError("cannot open a publishing channel: \(error)")
            throw WarrenExit.unavailable
        }
        var source = BodySource(fixed: fixedBody, count: count)
        let tally = try await publishAll(&source, publisher, basic, configuration.publisher)
        await connection.close()
        print(tally.summary)
        if !tally.allConfirmed { throw WarrenExit.failure }
    }

    /// Submits in order (so `--lines` keeps the order of its input), with at most the
    /// configured window of unconfirmed publishes outstanding.
    private func publishAll(_ source: inout BodySource, _ publisher: Publisher, _ properties: BasicProperties, _ settings: PublisherConfiguration) async throws -> Tally {
        var tally = Tally()
        var pending: [PublishReceipt] = []
        var next = 0
        func settleOldest() async {
            let receipt = pending[next]
            next += 1
            do throws(AMQPError) {
                tally.record(.success(try await receipt.outcome()))
            } catch {
                tally.record(.failure(error))
            }
            if next > 4096 {
                pending.removeFirst(next)
                next = 0
            }
        }
        while let body = source.next() {
            if pending.count - next >= settings.maxInFlight { await settleOldest() }
            let message = OutgoingMessage(exchange: exchange, routingKey: routingKey, mandatory: settings.mandatory, properties: properties, body: body)
            do {
                pending.append(try publisher.submit(message))
            } catch {
                tally.record(.failure(error))
            }
        }
        while next < pending.count { await settleOldest() }
        return tally
    }

    static func parseHeaders(_ pairs: [String]) throws -> FieldTable {
        var table = FieldTable()
        for pair in pairs {
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                throw ValidationError("--header expects k=v, got \"\(pair)\"")
            }
            table[String(pair[..<equals])] = .string(String(pair[pair.index(after: equals)...]))
        }
        return table
    }

    static let propertyNames = [
        "content_type", "content_encoding", "delivery_mode", "priority", "correlation_id", "reply_to", "expiration",
        "message_id", "timestamp", "type", "user_id", "app_id",
    ]

    static func parseProperties(_ pairs: [String], persistent: Bool, headers: FieldTable) throws -> BasicProperties {
        var p = BasicProperties()
        if persistent { p.deliveryMode = 2 }
        if !headers.isEmpty { p.headers = headers }
        for pair in pairs {
            guard let equals = pair.firstIndex(of: "=") else { throw ValidationError("--property expects name=value, got \"\(pair)\"") }
            let name = String(pair[..<equals])
            let value = String(pair[pair.index(after: equals)...])
            func number<T: FixedWidthInteger>(_: T.Type) throws -> T {
                guard let n = T(value) else { throw ValidationError("--property \(name) expects an integer, got \"\(value)\"") }
                return n
            }
            switch name {
            case "content_type": p.contentType = AMQPString(value)
            case "content_encoding": p.contentEncoding = AMQPString(value)
            case "delivery_mode":
                let mode = try number(UInt8.self)
                guard mode == 1 || mode == 2 else { throw ValidationError("--property delivery_mode is 1 (transient) or 2 (persistent)") }
                p.deliveryMode = mode
            case "priority": p.priority = try number(UInt8.self)
            case "correlation_id": p.correlationID = AMQPString(value)
            case "reply_to": p.replyTo = AMQPString(value)
            case "expiration": p.expiration = AMQPString(value)
            case "message_id": p.messageID = AMQPString(value)
            case "timestamp": p.timestamp = try number(UInt64.self)
            case "type": p.type = AMQPString(value)
            case "user_id": p.userID = AMQPString(value)
            case "app_id": p.appID = AMQPString(value)
            default:
                var message = "unknown --property \"\(name)\"; known: \(propertyNames.joined(separator: ", "))"
                if let guess = Suggestion.closest(to: name, among: propertyNames) {
                    message = "unknown --property \"\(name)\" (did you mean \"\(guess)\"?)"
                }
                throw ValidationError(message)
            }
        }
        return p
    }
}

/// The bodies to publish: a fixed body `count` times, or each stdin line `count` times.
struct BodySource {
    let fixed: [UInt8]?
    let count: Int
    private var current: [UInt8]?
    private var remaining = 0

    init(fixed: [UInt8]?, count: Int) {
        self.fixed = fixed
        self.count = count
    }

    mutating func next() -> [UInt8]? {
        if remaining == 0 {
            if let fixed {
                guard current == nil else { return nil }
                current = fixed
            } else {
                guard let line = readLine(strippingNewline: true) else { return nil }
                current = Array(line.utf8)
            }
            remaining = count
        }
        remaining -= 1
        return current
    }
}

struct Tally {
    var confirmed = 0
    var returned = 0
    var nacked = 0
    var timedOut = 0
    var failed = 0
    private var reported: Set<String> = []

    mutating func record(_ result: Result<PublishOutcome, AMQPError>) {
        switch result {
        case .success(.confirmed): confirmed += 1
        case .success(.returned): returned += 1
        case .success(.nacked): nacked += 1
        case .success(.timedOut): timedOut += 1
        case .failure(let error):
            failed += 1
            if reported.insert(error.description).inserted { printError("publish failed: \(error)") }
        }
    }

    var allConfirmed: Bool { returned == 0 && nacked == 0 && timedOut == 0 && failed == 0 }

    /// The summary line `warren publish` prints; `failed=` (a channel or connection error, e.g. 404 for a missing
    /// exchange) is added only when something failed that way.
    var summary: String {
        "confirmed=\(confirmed) returned=\(returned) nacked=\(nacked) timed_out=\(timedOut)" + (failed > 0 ? " failed=\(failed)" : "")
    }
}
