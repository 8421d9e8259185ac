import AMQP
import Foundation
import Glibc
import TestSupport
import Testing
import WarrenCore

/// `warren ctl` against the built binary and the real broker: a pause cancels the queue's
/// consumer on the broker, messages wait there, and resume delivers them.
@Suite(.requiresBroker) struct ControlTests {
    private static func source(queue: String, socket: String, sink: String, port: Int?) -> String {
        """
        [broker]
        urls = ["\(TestBroker.url)"]
        connection_name = "warren-ctl-tests"

        \(port.map { "[metrics]\nlisten = \"127.0.0.1:\($0)\"" } ?? "")

        [control]
        socket = "\(socket)"

        [[queues]]
        name = "\(queue)"
        durable = false
        handler = "archive"

        [handlers.archive]
        kind = "file"
        path = "\(sink)"
        """
    }

    /// Lines the file handler wrote: one per handled message.
    private static func handled(_ sink: String) -> Int {
        guard let text = try? String(contentsOfFile: sink, encoding: .utf8) else { return 0 }
        return text.split(separator: "\n").count
    }

    /// Polls `condition` every 50 ms; false once `timeout` passes without it holding.
    private static func eventually(within timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async rethrows -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return try await condition()
    }

    private static func declared(_ queue: String) async throws -> QueueDeclareResult {
        let connection = try await TestBroker.connect()
        do {
            let result = try await connection.declareQueue(QueueDeclaration(name: queue, durable: false, passive: true))
            await connection.close()
            return result
        } catch {
            await connection.close()
            throw error
        }
    }

    @Test func pauseHoldsMessagesOnTheBrokerAndResumeDeliversThem() async throws {
        let queue = TestBroker.uniqueName("ctl")
        do {
            try await pauseAndResume(queue)
        } catch {
            await CommandLineTests.deleteWarrenQueues(queue)
            throw error
        }
        await CommandLineTests.deleteWarrenQueues(queue)
    }

    private func pauseAndResume(_ queue: String) async throws {
        let port = try MetricsScrape.freePort()
        let base = "http://127.0.0.1:\(port)"
        let config = try WarrenProcess.ConfigFile("")
        defer { config.remove() }
        let directory = URL(fileURLWithPath: config.path).deletingLastPathComponent().path
        // Traversable by anyone, so that only the socket's own mode keeps another user out.
        chmod(directory, 0o755)
        let socket = directory + "/control.sock"
        let sink = directory + "/handled.jsonl"
        try Self.source(queue: queue, socket: socket, sink: sink, port: port).write(toFile: config.path, atomically: true, encoding: .utf8)

        let warren = try RunningWarren(config: config.path)
        defer { if warren.process.isRunning { warren.signal(SIGKILL) } }
        let ready = await Self.eventually { (try? await MetricsScrape.get("\(base)/readyz"))?.status == 200 }
        try #require(ready, "never ready; log:\n\(warren.output)")
        #expect(warren.output.contains("control socket listening"))
        var info = stat()
        #expect(lstat(socket, &info) == 0 && info.st_mode & 0o777 == 0o660)

        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        for index in 0..<5 { _ = try await publisher.publish(routingKey: queue, body: Array("before \(index)".utf8)) }
        #expect(await Self.eventually { Self.handled(sink) == 5 }, "log:\n\(warren.output)")

        // Pause: the consumer goes away on the broker.
        let pause = try await WarrenProcess.run(["ctl", "pause", queue, "--socket", socket])
        #expect(pause.status == 0, "stderr: \(pause.stderr)")
        #expect(pause.stdout == "ok paused \"\(queue)\"\n")
        #expect(try await Self.eventually { try await Self.declared(queue).consumerCount == 0 })
        #expect(await warren.waitForLog("queue paused by operator"))

        // New messages stay ready on the broker.
        for index in 0..<7 { _ = try await publisher.publish(routingKey: queue, body: Array("while paused \(index)".utf8)) }
        #expect(try await Self.eventually { try await Self.declared(queue).messageCount == 7 })
        #expect(Self.handled(sink) == 5)

        // Status, found through --config.
        let status = try await WarrenProcess.run(["ctl", "status", "--config", config.path])
        #expect(status.status == 0, "stderr: \(status.stderr)")
        #expect(status.stdout == "ok\nqueue=\(queue) state=paused held_by=operator in_flight=0 handled=5 failed=0\n")

        // Paused on purpose: still ready, and the summary says which queue.
        let readyz = try await MetricsScrape.get("\(base)/readyz")
        #expect(readyz.status == 200)
        #expect(readyz.body.contains("paused by an operator: \(queue)"))

        // A second warren on the same socket is refused before it connects.
        let secondConfig = try WarrenProcess.ConfigFile(Self.source(queue: queue, socket: socket, sink: sink, port: nil))
        defer { secondConfig.remove() }
        let second = try RunningWarren(config: secondConfig.path)
        #expect(await second.waitForExit(timeout: .seconds(30)) == 78)
        #expect(second.output.contains("another warren is listening there"), "log:\n\(second.output)")

        // Another user: the socket's mode refuses them.
        if getuid() == 0 {
            let other = try await Self.runAsNobody([WarrenProcess.executable.path, "ctl", "status", "--socket", socket])
            #expect(other.status == 69)
            #expect(other.stderr.contains("permission denied"), "stderr: \(other.stderr)")
        }

        // Resume: everything that waited is handled.
        let resume = try await WarrenProcess.run(["ctl", "resume", queue, "--socket", socket])
        #expect(resume.status == 0, "stderr: \(resume.stderr)")
        #expect(resume.stdout == "ok resumed \"\(queue)\"\n")
        #expect(await Self.eventually { Self.handled(sink) == 12 }, "log:\n\(warren.output)")
        #expect(try await Self.declared(queue).consumerCount == 1)
        #expect(await warren.waitForLog("queue resumed by operator"))
        let after = try await WarrenProcess.run(["ctl", "status", "--socket", socket])
        #expect(after.stdout == "ok\nqueue=\(queue) state=consuming in_flight=0 handled=12 failed=0\n")

        // An unknown queue is an error answer: exit 1, on stderr.
        let unknown = try await WarrenProcess.run(["ctl", "pause", "no-such-queue", "--socket", socket])
        #expect(unknown.status == 1)
        #expect(unknown.stdout.isEmpty)
        #expect(unknown.stderr == "error: no queue named \"no-such-queue\" in the running configuration\n")

        await connection.close()
        warren.signal(SIGTERM)
        #expect(await warren.waitForExit(timeout: .seconds(30)) == 0)
        #expect(!FileManager.default.fileExists(atPath: socket), "the socket file outlived warren")
    }

    @Test func ctlWithoutARunningWarrenExits69AndSaysWhy() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-ctl-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let missing = try await WarrenProcess.run(["ctl", "status", "--socket", directory + "/none.sock"])
        #expect(missing.status == 69)
        #expect(missing.stderr.contains("no such file (warren is not running"), "stderr: \(missing.stderr)")
        #expect(missing.stdout.isEmpty)
    }

    /// Runs `arguments` as the user nobody.
    private static func runAsNobody(_ arguments: [String]) async throws -> WarrenProcess.Result {
        let output = try await runToCompletion("/usr/sbin/runuser", ["-u", "nobody", "--"] + arguments)
        return WarrenProcess.Result(status: output.status, stdout: output.stdoutText, stderr: output.stderrText)
    }
}
