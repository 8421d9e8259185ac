import AMQP
import Foundation
import Glibc
import Synchronization
import Testing

/// One fault scenario: a durable queue of its own, N numbered persistent messages (body and
/// `message_id` carry the number), a `warren run` child process whose handler records what it
/// processed, and the accounting at the end (lost, duplicates, time to recover) printed as one
/// `FAULT scenario=... messages=... lost=... duplicates=... recover_ms=...` line.
final class FaultScenario: Sendable {
    let name: String
    let broker: FaultBroker
    let queue: String
    let directory: String
    let count: Int
    /// What the handler appends to: a `file` handler's JSON lines, or one number per line.
    let recordPath: String
    private let recoveries = Mutex<[Duration]>([])
    private let warrens = Mutex<[RunningWarren]>([])
    /// What `processed()` has read of `recordPath` so far.
    private let recorded = Mutex<(offset: UInt64, numbers: [Int])>((0, []))

    /// Runs `body` with a fresh scenario and deletes its queues and files whatever happened.
    static func run(
        _ name: String, broker: FaultBroker = .shared, count: Int, also extra: [String] = [],
        _ body: (FaultScenario) async throws -> Void
    ) async throws {
        let scenario = try FaultScenario(name, broker: broker, count: count)
        do {
            try await body(scenario)
        } catch {
            await scenario.cleanUp(also: extra)
            throw error
        }
        await scenario.cleanUp(also: extra)
    }

    init(_ name: String, broker: FaultBroker = .shared, count: Int) throws {
        self.name = name
        self.broker = broker
        self.count = count
        queue = TestBroker.uniqueName("fault-\(name)")
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-fault-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        recordPath = "\(directory)/processed.jsonl"
    }

    /// `[broker]` with fast reconnects, so recovery time measures warren, not a long back-off.
    func brokerSection(url: String? = nil, heartbeat: String = "5s") -> String {
        """
        [broker]
        urls = ["\(url ?? broker.url)"]
        heartbeat = "\(heartbeat)"
        connect_timeout = "2s"
        reconnect_initial_delay = "100ms"
        reconnect_max_delay = "1s"
        connection_name = "warren-fault-\(name)"
        """
    }

    /// A queue consumed by a `file` handler recording into `recordPath` with fsync per message.
    func fileConfig(url: String? = nil, heartbeat: String = "5s", queueExtra: String = "", prefetch: Int = 10, concurrency: Int = 2) -> String {
        """
        \(brokerSection(url: url, heartbeat: heartbeat))

        [[queues]]
        name = "\(queue)"
        declare = true
        durable = true
        handler = "recorder"
        prefetch = \(prefetch)
        concurrency = \(concurrency)
        \(queueExtra)

        [handlers.recorder]
        kind = "file"
        path = "\(recordPath)"
        fsync = "always"
        """
    }

    /// Writes the configuration and starts `warren run`; returns once it logged `ready`.
    func startWarren(_ config: String) async throws -> RunningWarren {
        let path = "\(directory)/warren.toml"
        try config.write(toFile: path, atomically: true, encoding: .utf8)
        let warren = try RunningWarren(config: path)
        warrens.withLock { $0.append(warren) }
        guard await warren.waitForLog("event=ready", timeout: .seconds(30)) else {
            _ = await warren.waitForExit(timeout: .seconds(1))
            throw FaultError("warren did not get ready; log:\n\(warren.output.suffix(3000))")
        }
        return warren
    }

    /// Publishes the numbered messages with confirms (pipelined) to `queue` (default: ours).
    func publish(_ numbers: Range<Int>, to target: String? = nil) async throws {
        let connection = try await broker.connect()
        do {
            try await publish(numbers, to: target ?? queue, on: connection)
        } catch {
            await connection.close()
            throw error
        }
        await connection.close()
    }

    private func publish(_ numbers: Range<Int>, to target: String, on connection: AMQPConnection) async throws {
        let publisher = try await connection.openPublisher()
        var receipts: [PublishReceipt] = []
        for number in numbers {
            var properties = BasicProperties()
            properties.deliveryMode = 2
            properties.messageID = "m-\(number)"
            receipts.append(try publisher.submit(
                OutgoingMessage(routingKey: target, properties: properties, body: Array(String(number).utf8)),
                timeout: .seconds(30)))
        }
        for receipt in receipts {
            let outcome = try await receipt.outcome()
            guard outcome == .confirmed else { throw FaultError("test publish not confirmed: \(outcome)") }
        }
    }

    /// The message numbers the handler recorded, one entry per processing (duplicates kept).
    /// The file only grows: each call parses only the whole lines added since the last (tests
    /// poll this every 20 ms while thousands of lines accumulate, beside other suites).
    func processed() -> [Int] {
        recorded.withLock { recorded in
            guard let handle = FileHandle(forReadingAtPath: recordPath) else { return recorded.numbers }
            defer { try? handle.close() }
            guard (try? handle.seek(toOffset: recorded.offset)) != nil, let data = try? handle.readToEnd(),
                let end = data.lastIndex(of: UInt8(ascii: "\n"))
            else { return recorded.numbers }
            // A line still being appended is read whole next time.
            let lines = data[data.startIndex...end]
            recorded.offset += UInt64(lines.count)
            recorded.numbers += Self.numbers(in: lines)
            return recorded.numbers
        }
    }

    private static func numbers(in lines: Data) -> [Int] {
        String(decoding: lines, as: UTF8.self).split(separator: "\n").compactMap { line -> Int? in
            if let number = Int(line.split(separator: " ").first ?? "") { return number }
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                let body = object["body"] as? String
            else { return nil }
            return Int(body)
        }
    }

    /// Polls `condition` every 20 ms until it holds (true) or `timeout` passes (false).
    func wait(_ timeout: Duration, until condition: () async -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if await condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return await condition()
    }

    func waitForProcessed(atLeast distinct: Int, timeout: Duration = .seconds(60)) async -> Bool {
        await wait(timeout) { Set(processed()).count >= distinct }
    }

    /// Call when the fault is repaired: measures until the handler records something new.
    /// Returns false if nothing new arrives within `timeout`.
    @discardableResult
    func measureRecovery(since repaired: ContinuousClock.Instant = .now, timeout: Duration = .seconds(60)) async -> Bool {
        let before = processed().count
        if Set(processed()).count >= count {
            recoveries.withLock { $0.append(.zero) }
            return true
        }
        guard await wait(timeout, until: { processed().count > before }) else { return false }
        let elapsed = ContinuousClock.now - repaired
        recoveries.withLock { $0.append(elapsed) }
        return true
    }

    /// Records a recovery time measured by the scenario itself.
    func noteRecovery(_ elapsed: Duration) {
        recoveries.withLock { $0.append(elapsed) }
    }

    /// Ready messages in a queue, from a passive declare (nil when it cannot be asked).
    func messages(in name: String) async -> Int? {
        guard let connection = try? await broker.connect() else { return nil }
        let state = try? await connection.declareQueue(QueueDeclaration(name: name, passive: true))
        await connection.close()
        return state.map { Int($0.messageCount) }
    }

    /// Waits until the broker reports our queue empty with nothing unacked.
    func waitForQueueDrained(timeout: Duration = .seconds(30)) async -> Bool {
        await wait(timeout) {
            let counts = await broker.queueCounts()
            guard let mine = counts[queue] else { return false }
            return mine.messages == 0 && mine.unacked == 0
                && counts.filter { $0.key.hasPrefix("\(queue).retry.") }.allSatisfy { $0.value.messages == 0 }
        }
    }

    /// Graceful stop; warren must exit 0.
    func stop(_ warren: RunningWarren) async {
        warren.signal(SIGTERM)
        let status = await warren.waitForExit(timeout: .seconds(30))
        #expect(status == 0, "warren did not stop cleanly; log tail:\n\(warren.output.suffix(3000))")
    }

    /// Drains a queue (after warren stopped) and returns the numbers in its messages.
    func drain(_ name: String) async throws -> [Int] {
        try await parkedMessages(name).compactMap { Int(String(decoding: $0.body, as: UTF8.self)) }
    }

    /// Drains a queue (after warren stopped) and returns its messages, acked.
    func parkedMessages(_ name: String) async throws -> [Delivery] {
        let connection = try await broker.connect()
        do {
            let state = try await connection.declareQueue(QueueDeclaration(name: name, passive: true))
            var deliveries: [Delivery] = []
            if state.messageCount > 0 {
                let consumer = try await connection.consume(ConsumeOptions(queue: name, prefetch: 500))
                deliveries = try await collect(Int(state.messageCount), from: consumer, within: .seconds(30)) { connection.ack($0) }
                try await consumer.close()
            }
            await connection.close()
            return deliveries
        } catch {
            await connection.close()
            throw error
        }
    }

    /// Every number in `expected` processed or parked: prints the summary line and records an
    /// issue for each lost message.
    func account(processed: [Int], parked: [Int] = [], expected: Range<Int>? = nil) {
        let expected = Set(expected ?? 0..<count)
        let seen = Set(processed).union(parked)
        let lost = expected.subtracting(seen)
        let duplicates = processed.count - Set(processed).count
        let recover = recoveries.withLock { $0.max() ?? .zero }
        print("FAULT scenario=\(name) messages=\(expected.count) lost=\(lost.count) duplicates=\(duplicates) recover_ms=\(recover.inMilliseconds)")
        #expect(lost.isEmpty, "\(name): lost \(lost.count): \(lost.sorted().prefix(20))")
    }

    /// How often `text` occurs in warren's log so far.
    func occurrences(of text: String, in warren: RunningWarren) -> Int {
        warren.output.components(separatedBy: text).count - 1
    }

    func cleanUp(also extra: [String] = []) async {
        for warren in warrens.withLock({ $0 }) where warren.process.isRunning {
            _ = await warren.waitForExit(timeout: .zero)
        }
        await broker.deleteQueues(startingWith: queue, also: extra)
        try? FileManager.default.removeItem(atPath: directory)
    }
}
