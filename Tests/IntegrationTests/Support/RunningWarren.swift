import Foundation
import Glibc
import Synchronization

/// `warren run` as a child process, with its stderr collected so tests can wait for log events.
final class RunningWarren: Sendable {
    let process: Process
    private let log = Mutex("")

    /// `environment` is added to the test process's own.
    init(config: String, arguments: [String] = [], environment: [String: String] = [:]) throws {
        process = Process()
        process.executableURL = WarrenProcess.executable
        process.arguments = ["run", "--config", config] + arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let reader = err.fileHandleForReading
        let thread = Thread { [self] in
            while true {
                let chunk = reader.availableData
                if chunk.isEmpty { return }
                self.append(String(decoding: chunk, as: UTF8.self))
            }
        }
        thread.start()
    }

    var output: String { log.withLock { $0 } }

    private func append(_ text: String) { log.withLock { $0 += text } }

    /// Waits until the log contains `text`; false after `timeout`.
    func waitForLog(_ text: String, timeout: Duration = .seconds(30)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if output.contains(text) { return true }
            if !process.isRunning { return output.contains(text) }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    func signal(_ number: Int32 = SIGTERM) {
        kill(process.processIdentifier, number)
    }

    /// The exit status, or nil if it is still running after `timeout` (then it is killed).
    func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }
}
