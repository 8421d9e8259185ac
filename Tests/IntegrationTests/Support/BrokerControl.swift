import Foundation
import Synchronization
import TestSupport

/// `rabbitmqctl` for what AMQP cannot tell: the broker's count of unacknowledged messages.
/// Available where the broker runs locally (CI, the quick start).
enum BrokerControl {
    static var isAvailable: Bool {
        ["/usr/sbin/rabbitmqctl", "/usr/bin/rabbitmqctl", "/usr/lib/rabbitmq/bin/rabbitmqctl"].contains { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Runs rabbitmqctl to completion and returns its stdout, nil if it failed (blocking: call
    /// it through `offPool`).
    static func rabbitmqctl(_ arguments: [String]) -> String? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["rabbitmqctl", "-q"] + arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        // A failed command (the node busy or unreachable) is not an empty listing.
        guard process.terminationStatus == 0 else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    /// Closes (broker side) every connection whose client-provided name is `name`; returns how
    /// many it closed.
    static func closeConnections(named name: String) async -> Int {
        await offPool {
            // 3.10 has no user_provided_name column: the name is inside client_properties.
            let listing = rabbitmqctl(["list_connections", "pid", "client_properties"]) ?? ""
            var closed = 0
            for line in listing.split(separator: "\n") {
                let fields = line.split(separator: "\t", maxSplits: 1)
                guard fields.count == 2, fields[1].contains("\"\(name)\"") else { continue }
                if rabbitmqctl(["close_connection", String(fields[0]), "closed by a warren test"]) != nil { closed += 1 }
            }
            return closed
        }
    }

    /// Messages delivered to consumers and not yet acked, per the broker.
    static func unacknowledged(_ queue: String) async -> Int? {
        await offPool { unacknowledgedBlocking(queue) }
    }

    /// `unacknowledged`, blocking (for a thread of its own).
    static func unacknowledgedBlocking(_ queue: String) -> Int? {
        let data = rabbitmqctl(["list_queues", "name", "messages_unacknowledged"]) ?? ""
        for line in data.split(separator: "\n") {
            let fields = line.split(separator: "\t")
            if fields.count == 2, fields[0] == queue { return Int(fields[1]) }
        }
        return nil
    }
}

/// Samples a queue's unacked count on a thread of its own (rabbitmqctl blocks for about a second;
/// on the cooperative pool it would starve the code under test).
final class UnackedSampler: Sendable {
    private let samples = Mutex<[Int]>([])
    private let stopped = Atomic<Bool>(false)
    private let done = Atomic<Bool>(false)

    init(queue: String) {
        let thread = Thread { [self] in
            while !stopped.load(ordering: .acquiring) {
                if let value = BrokerControl.unacknowledgedBlocking(queue) { samples.withLock { $0.append(value) } }
            }
            done.store(true, ordering: .releasing)
        }
        thread.start()
    }

    /// Stops sampling and returns what was seen.
    func stop() async -> [Int] {
        stopped.store(true, ordering: .releasing)
        while !done.load(ordering: .acquiring) { try? await Task.sleep(for: .milliseconds(20)) }
        return samples.withLock { $0 }
    }
}
