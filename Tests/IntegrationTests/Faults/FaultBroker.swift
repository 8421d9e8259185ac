import AMQP
import Foundation
import Glibc
import TestSupport

/// A broker a fault scenario runs against: its AMQP URL and how to run `rabbitmqctl` on it (for
/// what AMQP cannot tell, like the unacked count, and for faults like memory alarms).
struct FaultBroker: Sendable {
    var url: String
    var ctl: [String]
    var environment: [String: String]?

    /// The shared broker on 5672. `rabbitmqctl` through the Debian wrapper (which switches to the
    /// rabbitmq user and its cookie).
    static let shared = FaultBroker(url: TestBroker.url, ctl: ["/usr/bin/env", "rabbitmqctl"], environment: nil)

    var port: Int { (try? AMQPEndpoint(url: url).port) ?? 5672 }

    func ctl(_ arguments: [String]) async -> ToolRun.Result {
        await ToolRun.run(ctl + arguments, environment: environment)
    }

    func connect(heartbeat: Duration = .seconds(10)) async throws -> AMQPConnection {
        let endpoint = try AMQPEndpoint(url: url)
        return try await AMQPConnection.connect(TestBroker.configuration(heartbeat: heartbeat, endpoint: endpoint), logger: TestBroker.logger)
    }

    /// `messages` and `messages_unacknowledged` per queue, per the broker.
    func queueCounts() async -> [String: (messages: Int, unacked: Int)] {
        let result = await ctl(["-q", "list_queues", "name", "messages", "messages_unacknowledged"])
        var counts: [String: (messages: Int, unacked: Int)] = [:]
        for line in result.output.split(separator: "\n") {
            let fields = line.split(separator: "\t")
            guard fields.count == 3, let messages = Int(fields[1]), let unacked = Int(fields[2]) else { continue }
            counts[String(fields[0])] = (messages, unacked)
        }
        return counts
    }

    /// Deletes `queue` and every queue named `<queue>.*` (the parking queue, the retry ladder).
    func deleteQueues(startingWith queue: String, also extra: [String] = []) async {
        let names = Set(await queueCounts().keys.filter { $0 == queue || $0.hasPrefix("\(queue).") } + [queue, "\(queue).dead"] + extra)
        guard let connection = try? await connect() else { return }
        for name in names { _ = try? await connection.deleteQueue(name) }
        await connection.close()
    }
}

/// Runs a command line tool to completion on a thread of its own: `rabbitmqctl` boots an Erlang
/// VM and blocks for about a second, which must not happen on the cooperative pool.
enum ToolRun {
    struct Result: Sendable {
        var status: Int32
        var output: String
    }

    static func run(_ command: [String], environment: [String: String]? = nil) async -> Result {
        await withCheckedContinuation { continuation in
            let thread = Thread {
                continuation.resume(returning: runBlocking(command, environment: environment))
            }
            thread.start()
        }
    }

    /// `sh -c line` through `spawnAndWait`, off the pool, for a daemon that detaches:
    /// Foundation's `Process` never saw `rabbitmq-server -detached` exit (its `waitUntilExit`
    /// hung after the fork), the detached daemon would keep an output pipe open forever, and
    /// `system(3)` would hand it every socket the test process holds. Returns the exit status.
    static func shell(_ line: String) async -> Int32 {
        await offPool { spawnAndWait(["/bin/sh", "-c", line]) ?? -1 }
    }

    private static func runBlocking(_ command: [String], environment: [String: String]?) -> Result {
        guard let executable = command.first else { return Result(status: -1, output: "empty command") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = Array(command.dropFirst())
        if let environment { process.environment = environment }
        process.standardInput = FileHandle.nullDevice
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        do { try process.run() } catch { return Result(status: -1, output: "\(error)") }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self))
    }
}
