import Foundation
import Synchronization

/// `rabbitmqctl` for what AMQP cannot tell: the broker's count of unacknowledged messages.
/// Available where the broker runs locally (CI, the quick start).
enum BrokerControl {
    static var isAvailable: Bool {
        ["/usr/sbin/rabbitmqctl", "/usr/bin/rabbitmqctl", "/usr/lib/rabbitmq/bin/rabbitmqctl"].contains { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Messages delivered to consumers and not yet acked, per the broker.
    static func unacknowledged(_ queue: String) -> Int? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["rabbitmqctl", "-q", "list_queues", "name", "messages_unacknowledged"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
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
                if let value = BrokerControl.unacknowledged(queue) { samples.withLock { $0.append(value) } }
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
