import AMQP
import Foundation
import Testing

@testable import WarrenCore

/// Stream queues (`type = "stream"`) against RabbitMQ: read from the configured offset the first
/// time, resumed after the last processed offset on restart, and a failure or a requeue handled
/// without ever sending basic.nack or basic.reject (which a stream answers by closing the
/// connection).
@Suite("Stream queues against RabbitMQ", .requiresBroker, .serialized, .timeLimit(.minutes(3)))
struct StreamTests {
    /// A pipe worker that appends {"id", "offset", "attempt"} per request to the file named by
    /// its first argument, and answers by the message's `x-test` header: `ack` (default),
    /// `requeue-once` (requeue the first time it sees the message id, then ack), `fail` (error).
    static let workerSource = #"""
        import json, sys
        stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
        out = open(sys.argv[1], "a")
        seen = set()
        while True:
            line = stdin.readline()
            if not line:
                break
            request = json.loads(line)
            stdin.read(request["body_length"])
            properties = request["properties"]
            headers = properties["headers"] or {}
            mid = properties["message_id"]
            out.write(json.dumps({"id": mid, "offset": request.get("stream_offset"), "attempt": request["attempt"]}) + "\n")
            out.flush()
            mode = headers.get("x-test", "ack")
            verdict = "ack"
            if mode == "requeue-once" and mid not in seen:
                verdict = "requeue"
            elif mode == "fail":
                verdict = "error"
            seen.add(mid)
            stdout.write(json.dumps({"id": request["id"], "verdict": verdict}).encode() + b"\n")
            stdout.flush()
        """#

    struct Run {
        var id: String
        var offset: Int64?
        var attempt: Int
    }

    /// A stream, a state directory and a pipe worker recording what it handled.
    final class Fixture: Sendable {
        let queue = TestBroker.uniqueName("stream")
        let directory: String
        let record: String
        let worker: String

        init() throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-stream-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: directory + "/state", withIntermediateDirectories: true)
            record = directory + "/handled.jsonl"
            worker = directory + "/worker.py"
            try StreamTests.workerSource.write(toFile: worker, atomically: true, encoding: .utf8)
        }

        func config(offset: String = "\"first\"", queueExtra: String = "") -> String {
            """
            [broker]
            urls = ["\(TestBroker.url)"]
            connection_name = "warren-stream-tests"
            reconnect_initial_delay = "100ms"
            reconnect_max_delay = "1s"

            [state]
            directory = "\(directory)/state"
            offset_flush_every = 1

            [[queues]]
            name = "\(queue)"
            type = "stream"
            offset = \(offset)
            handler = "worker"
            prefetch = 10
            concurrency = 2
            \(queueExtra)

            [handlers.worker]
            kind = "pipe"
            command = ["/usr/bin/python3", "\(worker)", "\(record)"]
            """
        }

        var runs: [Run] {
            guard let text = try? String(contentsOfFile: record, encoding: .utf8) else { return [] }
            return text.split(separator: "\n").compactMap { line in
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                    let id = object["id"] as? String
                else { return nil }
                return Run(id: id, offset: (object["offset"] as? NSNumber)?.int64Value, attempt: (object["attempt"] as? Int) ?? 0)
            }
        }

        func waitForRuns(_ count: Int, timeout: Duration = .seconds(30)) async -> Bool {
            let deadline = ContinuousClock.now + timeout
            while runs.count < count, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(50)) }
            return runs.count >= count
        }

        /// The offset warren stored for the queue, if any.
        var storedOffset: String? {
            let path = "\(directory)/state/stream-offsets/%2F/\(queue.map { $0.isLetter || $0.isNumber || "._-".contains($0) ? String($0) : String(format: "%%%02X", $0.asciiValue ?? 0) }.joined())"
            return (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        func declareStream(on connection: AMQPConnection) async throws {
            try await connection.declareQueue(QueueDeclaration(name: queue, durable: true, arguments: ["x-queue-type": "stream"]))
        }

        func publish(_ ids: [String], test: String = "ack", on connection: AMQPConnection) async throws {
            let publisher = try await connection.openPublisher()
            for id in ids {
                let outcome = try await publisher.publish(
                    routingKey: queue, body: Array(id.utf8),
                    properties: BasicProperties(headers: ["x-test": .string(test)], deliveryMode: 2, messageID: AMQPString(id)))
                #expect(outcome == .confirmed)
            }
        }

        func cleanUp() async {
            // The default ladder, and the 100 ms step of the retry test's own.
            await CommandLineTests.deleteWarrenQueues(queue, ladder: RetryPolicy().delaySeries.map { $0.configText } + ["100ms"])
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    @Test func aStreamIsReadFromTheConfiguredOffsetAndResumedAfterTheLastProcessedOffset() async throws {
        let fixture = try Fixture()
        let connection = try await TestBroker.connect()
        try await fixture.declareStream(on: connection)
        try await fixture.publish((0..<10).map { "m\($0)" }, on: connection)
        let config = try WarrenProcess.ConfigFile(fixture.config())

        let first = try RunningWarren(config: config.path)
        #expect(await fixture.waitForRuns(10), "\(first.output)")
        first.signal()
        #expect(await first.waitForExit(timeout: .seconds(30)) == 0, "\(first.output)")
        #expect(fixture.runs.map(\.id) .sorted() == (0..<10).map { "m\($0)" }.sorted())
        #expect(Set(fixture.runs.compactMap(\.offset)) == Set(0...9), "each handler saw its offset")
        #expect(fixture.storedOffset == "9", "the last processed offset is stored on stop")

        try await fixture.publish((10..<15).map { "m\($0)" }, on: connection)
        let second = try RunningWarren(config: config.path)
        #expect(await fixture.waitForRuns(15), "\(second.output)")
        second.signal()
        #expect(await second.waitForExit(timeout: .seconds(30)) == 0, "\(second.output)")
        let ids = fixture.runs.map(\.id)
        #expect(ids.count == 15, "nothing processed twice after the restart: \(ids)")
        #expect(Set(ids) == Set((0..<15).map { "m\($0)" }))
        #expect(fixture.storedOffset == "14")

        config.remove()
        await connection.close()
        await fixture.cleanUp()
    }

    @Test func aRequeueReadsTheMessageAgainAndAFailureIsRetriedAsACopyThenParked() async throws {
        let fixture = try Fixture()
        let connection = try await TestBroker.connect()
        try await fixture.declareStream(on: connection)
        let config = try WarrenProcess.ConfigFile(fixture.config(
            offset: "\"next\"", queueExtra: "retry = { max_attempts = 2, delay = \"100ms\", max_delay = \"100ms\" }"))
        let warren = try RunningWarren(config: config.path)
        #expect(await warren.waitForLog("event=ready"), "\(warren.output)")

        // r1 twice: requeued, then read again at the same offset by the next consumer.
        try await fixture.publish(["r1"], test: "requeue-once", on: connection)
        #expect(await fixture.waitForRuns(2), "\(warren.output)")
        // Published after, so that the read again of r1 does not read them twice too.
        try await fixture.publish(["f1"], test: "fail", on: connection)
        try await fixture.publish(["a1", "a2"], on: connection)
        // f1 twice (the second run is its retry copy), a1 and a2.
        #expect(await fixture.waitForRuns(6), "\(warren.output)")
        let parkedDeadline = ContinuousClock.now + .seconds(30)
        var parked: UInt32 = 0
        while parked == 0, ContinuousClock.now < parkedDeadline {
            parked = (try? await connection.declareQueue(QueueDeclaration(name: "\(fixture.queue).dead", passive: true)))?.messageCount ?? 0
            if parked == 0 { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(parked == 1, "f1 is parked after its two attempts")

        let runs = fixture.runs
        let requeued = runs.filter { $0.id == "r1" }
        #expect(requeued.count >= 2)
        #expect(Set(requeued.map(\.offset)).count == 1, "a requeue reads the same offset again: \(requeued.map(\.offset))")
        let failed = runs.filter { $0.id == "f1" }
        #expect(failed.map(\.attempt) == [1, 2], "\(failed)")
        if failed.count == 2, let firstOffset = failed[0].offset, let copyOffset = failed[1].offset {
            #expect(copyOffset > firstOffset, "the retry copy came back as a new message of the stream")
        }
        #expect(Set(runs.map(\.id)).isSuperset(of: ["a1", "a2"]))
        #expect(warren.process.isRunning)
        #expect(!warren.output.contains("NOT_IMPLEMENTED"), "warren never nacked or rejected on the stream")
        #expect(!warren.output.contains("connection lost"))

        warren.signal()
        #expect(await warren.waitForExit(timeout: .seconds(30)) == 0)
        config.remove()
        await connection.close()
        await fixture.cleanUp()
    }
}
