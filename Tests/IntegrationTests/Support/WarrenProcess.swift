import Foundation
import TestSupport
import Testing

/// Runs the `warren` executable built next to the test bundle, for end-to-end CLI tests.
struct WarrenProcess {
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static var executable: URL {
        // The test bundle lives in the products directory, next to the executables.
        let products = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let candidate = products.appendingPathComponent("warren")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        return URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(".build/debug/warren")
    }

    /// Runs to completion (killed after `timeout`), off the cooperative pool.
    static func run(_ arguments: [String], stdin: String? = nil, timeout: Duration = .seconds(60)) async throws -> Result {
        let output = try await runToCompletion(executable.path, arguments, stdin: Data((stdin ?? "").utf8), timeout: timeout)
        if output.timedOut { throw TestTimeout(what: "running warren \(arguments.joined(separator: " "))") }
        return Result(status: output.status, stdout: output.stdoutText, stderr: output.stderrText)
    }

    /// A configuration file in a temporary directory, removed by `remove()`.
    struct ConfigFile {
        let path: String

        init(_ contents: String) throws {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-test-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            path = directory.appendingPathComponent("warren.toml").path
            try contents.write(toFile: path, atomically: true, encoding: .utf8)
        }

        func remove() {
            try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path)
        }
    }

    /// A minimal configuration against the test broker with one queue.
    static func config(queue: String, queueExtra: String = "", extra: String = "") -> String {
        """
        [broker]
        urls = ["\(TestBroker.url)"]
        connection_name = "warren-tests"

        [[queues]]
        name = "\(queue)"
        handler = "sink"
        \(queueExtra)

        [handlers.sink]
        kind = "noop"
        \(extra)
        """
    }
}
