import AMQP
import Foundation
import Testing

@testable import WarrenCore

/// `rate_limit` against RabbitMQ: a backlog drains no faster than the limit (after the first
/// burst of `concurrency` runs), and nothing is lost or run twice.
@Suite("Rate limit against RabbitMQ", .requiresBroker, .timeLimit(.minutes(2)))
struct RateLimitIntegrationTests {
    @Test func aBacklogIsHandledNoFasterThanTheLimitOverTenSeconds() async throws {
        let queue = TestBroker.uniqueName("rate")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-rate-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let output = directory + "/handled.jsonl"
        let rate = 25.0
        let burst = 4
        let count = 260  // about ten seconds at 25/s
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: queue, durable: true, arguments: ["x-queue-type": "classic"]))
        let publisher = try await connection.openPublisher()
        for index in 0..<count {
            let outcome = try await publisher.publish(
                routingKey: queue, body: Array("m\(index)".utf8), properties: BasicProperties(messageID: AMQPString("m\(index)")))
            #expect(outcome == .confirmed)
        }
        let config = try WarrenProcess.ConfigFile("""
            [broker]
            urls = ["\(TestBroker.url)"]

            [[queues]]
            name = "\(queue)"
            handler = "record"
            prefetch = 32
            concurrency = \(burst)
            rate_limit = "\(Int(rate))/s"

            [handlers.record]
            kind = "file"
            path = "\(output)"
            fsync = "never"
            """)
        let warren = try RunningWarren(config: config.path)

        func handled() -> [(id: String, at: Date)] {
            guard let text = try? String(contentsOfFile: output, encoding: .utf8) else { return [] }
            let format = ISO8601DateFormatter()
            format.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            return text.split(separator: "\n").compactMap { line in
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                    let properties = object["properties"] as? [String: Any], let id = properties["message_id"] as? String,
                    let stamp = object["received_at"] as? String, let at = format.date(from: stamp)
                else { return nil }
                return (id, at)
            }
        }
        let deadline = ContinuousClock.now + .seconds(60)
        while handled().count < count, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        warren.signal()
        #expect(await warren.waitForExit(timeout: .seconds(30)) == 0)

        let runs = handled().sorted { $0.at < $1.at }
        #expect(runs.count == count, "every message handled once: \(runs.count)")
        #expect(Set(runs.map(\.id)).count == count)
        if runs.count == count {
            // After the burst, one run per 1/rate: the runs after the burst span at least
            // (count - burst) intervals, less the timestamps' millisecond rounding.
            let span = runs[count - 1].at.timeIntervalSince(runs[burst - 1].at)
            let observed = Double(count - burst) / span
            #expect(observed <= rate * 1.1, "\(observed) runs/s against a limit of \(rate)/s")
            // Not a timing bound on the machine: only that the limit is what throttles (it is
            // not, say, ten times slower because of a bug).
            #expect(observed >= rate * 0.5, "\(observed) runs/s against a limit of \(rate)/s")
        }
        config.remove()
        try? FileManager.default.removeItem(atPath: directory)
        await connection.close()
        await CommandLineTests.deleteWarrenQueues(queue)
    }
}
