import AMQP
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

@testable import WarrenCore

/// The shipped example worker and a test-only worker for the misbehaviours the example has no
/// reason to show.
enum PipeWorkers {
    static let repository = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let example = repository.appendingPathComponent("Examples/pipe-worker.py").path

    /// Behaviour per request by its `x-test` header: `echo` (default: ack with a reply naming
    /// the pid, the request id and the body), `hold` (answer nothing until `x-test-batch`
    /// requests are held, then answer them newest first), `hang` (never answer), `garbage`,
    /// `unknown-id`, `bad-verdict`, `exit` (with `x-test-code`), `close-stdout`, `close-stdin`
    /// (answer, then read nothing more), `stderr` (two
    /// stderr lines, one very long, then echo), `linger` (echo, and ignore the end of stdin).
    static let misbehavingSource = #"""
        import json, os, sys, time
        stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
        held, linger = [], False
        def send(obj):
            stdout.write(json.dumps(obj).encode() + b"\n")
            stdout.flush()
        while True:
            line = stdin.readline()
            if not line:
                break
            request = json.loads(line)
            body = stdin.read(request["body_length"])
            headers = request["properties"]["headers"] or {}
            mode = headers.get("x-test", "echo")
            reply = {"pid": os.getpid(), "id": request["id"], "body": body.decode("utf-8", "replace")}
            answer = {"id": request["id"], "verdict": "ack", "reply": json.dumps(reply)}
            if mode == "hold":
                held.append(answer)
                if len(held) >= int(headers.get("x-test-batch", 2)):
                    for each in reversed(held):
                        send(each)
                    held = []
            elif mode == "hang":
                pass
            elif mode == "garbage":
                stdout.write(b"this is not json\n")
                stdout.flush()
            elif mode == "unknown-id":
                send({"id": 10**12, "verdict": "ack"})
            elif mode == "bad-verdict":
                send({"id": request["id"], "verdict": "maybe"})
            elif mode == "exit":
                sys.stderr.write("exiting on request\n")
                sys.stderr.flush()
                sys.exit(int(headers.get("x-test-code", 3)))
            elif mode == "close-stdout":
                os.close(1)
                time.sleep(3600)
            elif mode == "close-stdin":
                os.close(0)
                send(answer)
                time.sleep(3600)
            elif mode == "stderr":
                sys.stderr.write("first diagnostic line\n" + "x" * 10000 + "\n")
                sys.stderr.flush()
                send(answer)
            elif mode == "linger":
                linger = True
                send(answer)
            else:
                send(answer)
        if linger:
            time.sleep(3600)
        """#

    /// Writes the test worker to a temporary file once per test process.
    static let misbehaving: String = {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("warren-pipe-test-worker-\(getpid()).py").path
        let written = FileManager.default.createFile(atPath: path, contents: Data(misbehavingSource.utf8))
        precondition(written, "cannot write the test worker to \(path)")
        return path
    }()

    static func settings(_ script: String, instances: Int = 1, maxInFlight: Int = 1, name: String = "worker") -> PipeHandler.Settings {
        var settings = PipeHandler.Settings(handler: name, command: ["python3", script], instances: instances, maxInFlightPerInstance: maxInFlight)
        settings.shutdownGrace = .seconds(2)
        settings.terminateGrace = .seconds(1)
        settings.restartInitialDelay = .milliseconds(50)
        return settings
    }

    static func input(_ body: String = "hello", id: String = "m", headers: FieldTable = [:], timeout: Duration = .seconds(20)) -> HandlerInput {
        HandlerInput(
            queue: "q", exchange: "", routingKey: "k", redelivered: false, attempt: 1, properties: BasicProperties(headers: headers, messageID: AMQPString(id)),
            body: Array(body.utf8), deliveryTag: 1, timeout: timeout)
    }

    /// Runs `handler.run()` beside `body`, then stops it (cancels it) and waits until it returned.
    static func withRunning<T: Sendable>(_ handler: PipeHandler, _ body: () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                await handler.run()
                return nil
            }
            let result = try await body()
            group.cancelAll()
            return result
        }
    }

    /// Waits until every instance slot has a running worker.
    static func waitForWorkers(_ handler: PipeHandler, count: Int, excluding old: Set<Int32> = []) async -> [Int: Int32] {
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            let pids = handler.workerPIDs
            if pids.count == count, pids.values.allSatisfy({ !old.contains($0) }) { return pids }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return handler.workerPIDs
    }

    /// The reply of a successful outcome, as the JSON object both workers answer with.
    static func reply(_ outcome: HandlerOutcome) -> [String: Any]? {
        guard case .success(let output) = outcome, let reply = output.reply else { return nil }
        return try? JSONSerialization.jsonObject(with: Data(reply)) as? [String: Any]
    }

    static func failure(_ outcome: HandlerOutcome) -> HandlerFailure? {
        guard case .failure(let failure) = outcome else { return nil }
        return failure
    }

    /// True while a process with this pid exists (a zombie counts: it has not been reaped).
    static func exists(_ pid: Int32) -> Bool {
        FileManager.default.fileExists(atPath: "/proc/\(pid)")
    }
}
