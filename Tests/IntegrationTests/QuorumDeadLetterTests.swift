import AMQP
import Foundation
import Testing

@testable import WarrenCore

/// `dead_letter = "broker"` on a quorum queue: warren declares at-least-once dead-lettering, and
/// keeps a queue an earlier warren declared without it.
@Suite("Quorum queues with broker dead-lettering against RabbitMQ", .requiresBroker, .timeLimit(.minutes(2)))
struct QuorumDeadLetterTests {
    static func config(_ queue: String) -> String {
        WarrenProcess.config(queue: queue, queueExtra: """
            type = "quorum"
            dead_letter = "broker"
            arguments = { "x-dead-letter-exchange" = "amq.fanout" }
            """)
    }

    static let earlier: FieldTable = ["x-queue-type": "quorum", "x-dead-letter-exchange": "amq.fanout"]

    @Test func aNewQueueIsDeclaredWithAtLeastOnceDeadLettering() async throws {
        let queue = TestBroker.uniqueName("quorum-dlx")
        let config = try WarrenProcess.ConfigFile(Self.config(queue))
        let warren = try RunningWarren(config: config.path)
        #expect(await warren.waitForLog("event=ready"), "\(warren.output)")
        warren.signal()
        #expect(await warren.waitForExit(timeout: .seconds(30)) == 0)

        // The broker accepts a declaration only when its arguments equal the queue's.
        let connection = try await TestBroker.connect()
        var withStrategy = Self.earlier
        withStrategy["x-dead-letter-strategy"] = "at-least-once"
        withStrategy["x-overflow"] = "reject-publish"
        await #expect(throws: Never.self) {
            _ = try await connection.declareQueue(QueueDeclaration(name: queue, durable: true, arguments: withStrategy))
        }
        let without = await #expect(throws: AMQPError.self) {
            _ = try await connection.declareQueue(QueueDeclaration(name: queue, durable: true, arguments: Self.earlier))
        }
        #expect(without?.replyCode == 406)
        await connection.close()
        config.remove()
        await CommandLineTests.deleteWarrenQueues(queue)
    }

    @Test func aQueueDeclaredEarlierWithoutItIsKeptWithAWarning() async throws {
        let queue = TestBroker.uniqueName("quorum-dlx-earlier")
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: queue, durable: true, arguments: Self.earlier))
        await connection.close()
        let config = try WarrenProcess.ConfigFile(Self.config(queue))
        let warren = try RunningWarren(config: config.path)
        #expect(await warren.waitForLog("event=ready"), "\(warren.output)")
        #expect(warren.output.contains("queue was declared with at-most-once dead-lettering: kept"))
        #expect(!warren.output.contains("topology rejected"))
        let check = try await WarrenProcess.run(["check", "--config", config.path, "--connect"])
        #expect(check.status == 0, "check --connect accepts it too: \(check.stderr)")
        warren.signal()
        #expect(await warren.waitForExit(timeout: .seconds(30)) == 0)
        config.remove()
        await CommandLineTests.deleteWarrenQueues(queue)
    }
}
