import AMQP
import Foundation
import Glibc
import TestSupport
import Testing

@testable import WarrenCore

/// `warren dead-letters` against RabbitMQ.
@Suite("warren dead-letters against RabbitMQ", .requiresBroker, .timeLimit(.minutes(2)))
struct DeadLettersCommandTests {
    @Test func listPrintsEveryParkedMessageAndLeavesThemInPlaceInOrder() async throws {
        let queue = TestBroker.uniqueName("dl-list")
        let parking = "\(queue).dead"
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: parking, durable: true))
        let publisher = try await connection.openPublisher()
        for index in 0..<3 {
            let headers: FieldTable = [
                "x-warren-reason": "failed", "x-warren-handler": "billing", "x-warren-attempts": .int64(5),
                "x-warren-error": "exit code 3: boom\nmore", "x-warren-failed-at": "2026-12-07T04:14:58.416Z",
                "x-warren-original-exchange": "", "x-warren-original-routing-key": .string(queue),
            ]
            #expect(try await publisher.publish(
                routingKey: parking, body: Array("b\(index)".utf8),
                properties: BasicProperties(headers: headers, messageID: AMQPString("m\(index)"))) == .confirmed)
        }
        #expect(try await publisher.publish(routingKey: parking, body: [0xFF], properties: BasicProperties(messageID: "x1")) == .confirmed)
        let config = try WarrenProcess.ConfigFile(WarrenProcess.config(queue: queue))
        defer { config.remove() }

        var listings: [[[String: Any]]] = []
        for _ in 0..<2 {
            let result = try await WarrenProcess.run(["dead-letters", "list", queue, "--json", "--config", config.path])
            #expect(result.status == 0, "\(result.stderr)")
            listings.append(result.stdout.split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            })
            // The broker requeues the walk's messages when its channel closes, asynchronously.
            let deadline = ContinuousClock.now + .seconds(10)
            while (try await connection.declareQueue(QueueDeclaration(name: parking, passive: true))).messageCount < 4,
                ContinuousClock.now < deadline
            {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        for listing in listings {
            #expect(listing.map { $0["message_id"] as? String } == ["m0", "m1", "m2", "x1"], "the same messages, in the same order")
            #expect(listing.map { $0["reason"] as? String } == ["failed", "failed", "failed", "unknown"])
            #expect(listing.first?["attempts"] as? Int == 5)
            #expect(listing.first?["original_routing_key"] as? String == queue)
            #expect(listing.last?["body_bytes"] as? Int == 1)
        }
        #expect(try await connection.declareQueue(QueueDeclaration(name: parking, passive: true)).messageCount == 4, "listing removed nothing")

        let limited = try await WarrenProcess.run(["dead-letters", "list", queue, "--limit", "2", "--config", config.path])
        #expect(limited.stdout.split(separator: "\n") == [
            #"message_id=m0 reason=failed handler=billing attempts=5 failed_at=2026-12-07T04:14:58.416Z error="exit code 3: boom""#,
            #"message_id=m1 reason=failed handler=billing attempts=5 failed_at=2026-12-07T04:14:58.416Z error="exit code 3: boom""#,
        ])

        // purge: nothing without --yes; then only what the filters select.
        let refused = try await WarrenProcess.run(["dead-letters", "purge", queue, "--reason", "unknown", "--config", config.path])
        #expect(refused.status == 64)
        #expect(refused.stderr.contains("add --yes"))
        let recent = try await WarrenProcess.run(["dead-letters", "purge", queue, "--older-than", "3650d", "--yes", "--config", config.path])
        #expect(recent.stdout == "purged=0 kept=4\n", "\(recent.stdout) \(recent.stderr)")
        await waitForCount(4, parking, connection)
        let purged = try await WarrenProcess.run(["dead-letters", "purge", queue, "--reason", "unknown", "--yes", "--config", config.path])
        #expect(purged.status == 0, "\(purged.stderr)")
        #expect(purged.stdout == "purged=1 kept=3\n")
        await waitForCount(3, parking, connection)
        let after = try await WarrenProcess.run(["dead-letters", "list", queue, "--json", "--config", config.path])
        #expect(after.stdout.split(separator: "\n").count == 3)
        #expect(!after.stdout.contains("\"x1\""), "the foreign message is gone, the parked ones stay")

        await connection.close()
        await CommandLineTests.deleteWarrenQueues(queue)
    }

    /// Parks `count` messages (as warren does) whose original destination is `target`, in
    /// `parking`.
    private func park(_ count: Int, in parking: String, target: String, on connection: AMQPConnection, idPrefix: String = "m") async throws {
        let publisher = try await connection.openPublisher()
        for index in 0..<count {
            let headers: FieldTable = [
                "x-warren-reason": "failed", "x-warren-handler": "billing", "x-warren-attempts": .int64(5), "x-warren-attempt": .int64(5),
                "x-warren-error": "exit code 3", "x-warren-failed-at": "2026-12-07T04:14:58.416Z",
                "x-warren-original-exchange": "", "x-warren-original-routing-key": .string(target), "x-kind": "refund",
            ]
            let receipt = try publisher.submit(OutgoingMessage(
                routingKey: parking, properties: BasicProperties(headers: headers, deliveryMode: 2, messageID: AMQPString("\(idPrefix)\(index)")),
                body: Array("\(idPrefix)\(index)".utf8)))
            if index % 200 == 199 || index == count - 1 { #expect(try await receipt.outcome() == .confirmed) }
        }
    }

    @Test func replayPublishesEachParkedMessageToItsOriginalDestinationAndRemovesItOnlyOnceConfirmed() async throws {
        let queue = TestBroker.uniqueName("dl-replay")
        let parking = "\(queue).dead"
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: parking, durable: true))
        try await connection.declareQueue(QueueDeclaration(name: queue, durable: true))
        try await park(3, in: parking, target: queue, on: connection)
        // One whose original routing key reaches no queue: returned, so it stays parked.
        try await park(1, in: parking, target: "\(queue).nowhere", on: connection, idPrefix: "gone")
        let config = try WarrenProcess.ConfigFile(WarrenProcess.config(queue: queue))
        defer { config.remove() }

        let dry = try await WarrenProcess.run(["dead-letters", "replay", queue, "--dry-run", "--config", config.path])
        #expect(dry.stdout.hasSuffix("would replay=4 kept=0 failed=0\n"), "\(dry.stdout)")
        await waitForCount(4, parking, connection)
        #expect(try await connection.declareQueue(QueueDeclaration(name: queue, passive: true)).messageCount == 0, "a dry run publishes nothing")

        let result = try await WarrenProcess.run(["dead-letters", "replay", queue, "--config", config.path])
        #expect(result.status == 1, "one replay was returned: \(result.stderr)")
        #expect(result.stdout == "replayed=3 kept=0 failed=1\n", "\(result.stdout)")
        #expect(result.stderr.contains("message_id=gone0"))
        await waitForCount(1, parking, connection)
        let walk = try await connection.openGetChannel()
        var replayed: [Delivery] = []
        while let got = try await walk.get(queue) { replayed.append(got.delivery) }
        let parked = try await walk.get(parking)
        try await walk.close()
        #expect(replayed.map { $0.properties.messageID?.text } == ["m0", "m1", "m2"])
        let headers = try #require(replayed.first?.properties.headers)
        #expect(headers.entries.map { $0.key.text ?? "" }.sorted() == ["x-kind", "x-warren-replays"], "warren's forensic and attempt headers removed")
        #expect(headers["x-warren-replays"] == .int64(1))
        #expect(replayed.first?.body == Array("m0".utf8))
        #expect(parked?.delivery.properties.messageID?.text == "gone0", "the returned one is still parked")
        await connection.close()
        await CommandLineTests.deleteWarrenQueues(queue)
    }

    @Test func aReplayKilledMidwayLosesNothing() async throws {
        let queue = TestBroker.uniqueName("dl-kill")
        let parking = "\(queue).dead"
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: parking, durable: true))
        try await connection.declareQueue(QueueDeclaration(name: queue, durable: true))
        try await park(2000, in: parking, target: queue, on: connection)
        let config = try WarrenProcess.ConfigFile(WarrenProcess.config(queue: queue))
        defer { config.remove() }

        let process = Process()
        process.executableURL = WarrenProcess.executable
        process.arguments = ["dead-letters", "replay", queue, "--config", config.path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Killed once it has replayed some, before it is done.
        let deadline = ContinuousClock.now + .seconds(30)
        while (try await connection.declareQueue(QueueDeclaration(name: queue, passive: true))).messageCount < 100, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()

        // Every message is replayed or still parked (possibly both: a duplicate, never a loss).
        // The parked copies the killed walk held come back once the broker sees it gone.
        func total() async throws -> UInt32 {
            try await connection.declareQueue(QueueDeclaration(name: queue, passive: true)).messageCount
                + connection.declareQueue(QueueDeclaration(name: parking, passive: true)).messageCount
        }
        let settle = ContinuousClock.now + .seconds(10)
        while try await total() < 2000, ContinuousClock.now < settle { try await Task.sleep(for: .milliseconds(50)) }
        let stillParked = try await connection.declareQueue(QueueDeclaration(name: parking, passive: true)).messageCount
        #expect(stillParked > 0, "the replay was killed before it finished")
        var seen: Set<String> = []
        let walk = try await connection.openGetChannel()
        for name in [queue, parking] {
            while let got = try await walk.get(name) {
                if let id = got.delivery.properties.messageID?.text { seen.insert(id) }
            }
        }
        try await walk.close()
        #expect(seen.count == 2000, "\(2000 - seen.count) messages lost")
        await connection.close()
        await CommandLineTests.deleteWarrenQueues(queue)
    }

    /// The operator's path end to end, with a running warren: the handler fails, every message is
    /// parked; the handler is fixed; `replay` brings every message through it once more, each as a
    /// first attempt, and the parking queue ends empty.
    @Test func replayAfterTheHandlerIsFixedBringsEveryMessageThroughOnceMore() async throws {
        let queue = TestBroker.uniqueName("dl-fixed")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-fixed-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let broken = directory + "/broken"
        let handled = directory + "/handled"
        let script = directory + "/handler"
        try "down".write(toFile: broken, atomically: true, encoding: .utf8)
        try writeExecutable("""
            #!/bin/sh
            if [ -e '\(broken)' ]; then echo 'downstream unavailable' >&2; exit 3; fi
            echo "$WARREN_MESSAGE_ID $WARREN_ATTEMPT" >> '\(handled)'
            """, to: script)
        let config = try WarrenProcess.ConfigFile("""
            [broker]
            urls = ["\(TestBroker.url)"]

            [[queues]]
            name = "\(queue)"
            handler = "work"
            ack_policy = "reject_on_error"
            retry = false
            concurrency = 4

            [handlers.work]
            kind = "exec"
            command = ["\(script)"]
            """)
        defer { config.remove() }
        let warren = try RunningWarren(config: config.path)
        let connection = try await TestBroker.connect()
        let count = 20
        #expect(await warren.waitForLog("ready"))
        let publisher = try await connection.openPublisher()
        for index in 0..<count {
            #expect(try await publisher.publish(
                routingKey: queue, body: Array("b\(index)".utf8), properties: BasicProperties(messageID: AMQPString("f\(index)"))) == .confirmed)
        }
        await waitForCount(UInt32(count), "\(queue).dead", connection, within: .seconds(60))
        #expect(try await connection.declareQueue(QueueDeclaration(name: "\(queue).dead", passive: true)).messageCount == UInt32(count))
        #expect(!FileManager.default.fileExists(atPath: handled), "nothing succeeded while the handler was broken")

        try FileManager.default.removeItem(atPath: broken)
        let replay = try await WarrenProcess.run(["dead-letters", "replay", queue, "--config", config.path])
        #expect(replay.status == 0, "\(replay.stderr)")
        #expect(replay.stdout.contains("replayed=\(count) kept=0 failed=0"), "\(replay.stdout)")

        func lines() -> [Substring] {
            ((try? String(contentsOfFile: handled, encoding: .utf8)) ?? "").split(separator: "\n")
        }
        let deadline = ContinuousClock.now + .seconds(60)
        while lines().count < count, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        await waitForCount(0, "\(queue).dead", connection)
        warren.signal()
        #expect(await warren.waitForExit(timeout: .seconds(30)) == 0)
        let runs = lines()
        #expect(runs.count == count, "each message handled exactly once after the replay: \(runs.count)")
        #expect(Set(runs) == Set((0..<count).map { "f\($0) 1" }), "every message, each as a first attempt")
        #expect(try await connection.declareQueue(QueueDeclaration(name: "\(queue).dead", passive: true)).messageCount == 0)
        await connection.close()
        await CommandLineTests.deleteWarrenQueues(queue)
    }

    /// The broker requeues a walk's unacked messages when its channel closes, asynchronously.
    private func waitForCount(_ count: UInt32, _ queue: String, _ connection: AMQPConnection, within timeout: Duration = .seconds(10)) async {
        let deadline = ContinuousClock.now + timeout
        while ((try? await connection.declareQueue(QueueDeclaration(name: queue, passive: true)))?.messageCount ?? 0) != count,
            ContinuousClock.now < deadline
        {
            try? await Task.sleep(for: .milliseconds(50))
        }
    }
}
