import AMQP
import ArgumentParser
import Foundation
import Logging

/// Throughput of the AMQP layer alone against a local broker: publish with confirms (a window
/// of unconfirmed publishes), then consume + ack (coalesced and immediate settlement).
/// Prints a table of medians over several rounds; not a test, no assertions.
@main
struct AMQPBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "amqp-bench", abstract: "Benchmark Warren's AMQP layer.",
        subcommands: [AMQPBench.self, WaitEmpty.self, Declare.self], defaultSubcommand: AMQPBench.self)
}

/// Waits until a queue has no ready messages, polling with passive declares on one connection
/// (cheap, unlike rabbitmqctl), and prints the seconds it took. Used by scripts/bench-drain.
struct WaitEmpty: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "wait-empty")
    @Option var url = ProcessInfo.processInfo.environment["WARREN_TEST_AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5672/"
    @Option var queue: String

    func run() async throws {
        var logger = Logger(label: "amqp-bench")
        logger.logLevel = .warning
        let connection = try await AMQPConnection.connect(try ConnectionConfiguration(urls: [url]), logger: logger)
        let clock = ContinuousClock()
        let started = clock.now
        while try await connection.declareQueue(QueueDeclaration(name: queue, passive: true)).messageCount > 0 {
            try await Task.sleep(for: .milliseconds(10))
        }
        print(String(format: "%.3f", (clock.now - started) / .seconds(1)))
        await connection.close()
    }
}

/// Declares (or deletes, with --delete) a transient queue.
struct Declare: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "declare")
    @Option var url = ProcessInfo.processInfo.environment["WARREN_TEST_AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5672/"
    @Option var queue: String
    @Flag var delete = false

    func run() async throws {
        var logger = Logger(label: "amqp-bench")
        logger.logLevel = .warning
        let connection = try await AMQPConnection.connect(try ConnectionConfiguration(urls: [url]), logger: logger)
        if delete {
            try await connection.deleteQueue(queue)
        } else {
            try await connection.declareQueue(QueueDeclaration(name: queue, durable: false))
        }
        await connection.close()
    }
}

struct AMQPBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "throughput", abstract: "Publish with confirms, then consume + ack.")

    @Option(help: "Broker URL.") var url = ProcessInfo.processInfo.environment["WARREN_TEST_AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5672/"
    @Option(help: "Messages per round.") var count = 100_000
    @Option(help: "Body size in bytes.") var size = 100
    @Option(help: "Unconfirmed publishes in flight.") var window = 1000
    @Option(help: "Consumer prefetch.") var prefetch: UInt16 = 1000
    @Option(help: "Rounds (the median is reported).") var rounds = 3
    @Option(help: "Write the results as JSON to this file.") var json: String?

    struct Row: Codable {
        var name: String
        var ratesPerSecond: [Double]
        var median: Double { ratesPerSecond.sorted()[ratesPerSecond.count / 2] }
    }

    func run() async throws {
        var logger = Logger(label: "amqp-bench")
        logger.logLevel = .warning
        var configuration = try ConnectionConfiguration(urls: [url])
        configuration.connectionName = "amqp-bench"
        let connection = try await AMQPConnection.connect(configuration, logger: logger)
        let queue = "amqp-bench.\(UUID().uuidString.prefix(8))"
        try await connection.declareQueue(QueueDeclaration(name: queue, durable: false))
        let body = [UInt8](repeating: 0x61, count: size)

        var publish = Row(name: "publish, confirms, window \(window)", ratesPerSecond: [])
        var coalesced = Row(name: "consume + ack, prefetch \(prefetch), coalesced", ratesPerSecond: [])
        var immediate = Row(name: "consume + ack, prefetch \(prefetch), immediate", ratesPerSecond: [])
        for round in 1...rounds {
            publish.ratesPerSecond.append(try await publishRound(connection, queue, body))
            coalesced.ratesPerSecond.append(try await consumeRound(connection, queue, .default))
            publish.ratesPerSecond.append(try await publishRound(connection, queue, body))
            immediate.ratesPerSecond.append(try await consumeRound(connection, queue, .immediate))
            FileHandle.standardError.write(Data("round \(round)/\(rounds) done\n".utf8))
        }
        try await connection.deleteQueue(queue)
        await connection.close()

        let rows = [publish, coalesced, immediate]
        print("AMQP layer, \(count) messages of \(size) bytes, \(rounds) rounds, librabbitmq \(LibRabbitMQ.version)")
        print(String(repeating: "-", count: 78))
        for row in rows {
            let all = row.ratesPerSecond.map { String(format: "%.0f", $0) }.joined(separator: " ")
            print(row.name.padding(toLength: 48, withPad: " ", startingAt: 0) + String(format: "%10.0f msg/s", row.median) + "  [\(all)]")
        }
        if let json {
            let data = try JSONEncoder().encode(rows.map { ["name": $0.name, "median": String(format: "%.0f", $0.median)] })
            try data.write(to: URL(fileURLWithPath: json))
        }
    }

    private func publishRound(_ connection: AMQPConnection, _ queue: String, _ body: [UInt8]) async throws -> Double {
        let publisher = try await connection.openPublisher(PublisherOptions(maxInFlight: window, confirmTimeout: .seconds(30)))
        let count = count
        let workers = min(window, count)
        let clock = ContinuousClock()
        let started = clock.now
        let confirmed = try await withThrowingTaskGroup(of: Int.self) { group in
            for worker in 0..<workers {
                group.addTask {
                    var confirmed = 0
                    var index = worker
                    while index < count {
                        if try await publisher.publish(routingKey: queue, body: body, mandatory: false) == .confirmed { confirmed += 1 }
                        index += workers
                    }
                    return confirmed
                }
            }
            return try await group.reduce(0, +)
        }
        let seconds = (clock.now - started) / .seconds(1)
        guard confirmed == count else { throw ValidationError("only \(confirmed) of \(count) publishes were confirmed") }
        return Double(count) / seconds
    }

    private func consumeRound(_ connection: AMQPConnection, _ queue: String, _ settlement: SettlementMode) async throws -> Double {
        let ready = try await connection.declareQueue(QueueDeclaration(name: queue, passive: true)).messageCount
        if ready < count {
            _ = try await publishRound(connection, queue, [UInt8](repeating: 0x61, count: size))
        }
        let consumer = try await connection.consume(ConsumeOptions(queue: queue, prefetch: prefetch, settlement: settlement))
        let clock = ContinuousClock()
        let started = clock.now
        var received = 0
        for try await delivery in consumer.deliveries {
            consumer.ack(delivery)
            received += 1
            if received == count { break }
        }
        try await consumer.close()
        let seconds = (clock.now - started) / .seconds(1)
        return Double(received) / seconds
    }
}
