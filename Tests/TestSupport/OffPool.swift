import Foundation
import Synchronization

/// Runs blocking `work` on a thread of its own and returns its result.
///
/// Every suite runs at once in one process, on Swift's cooperative pool, which has one thread
/// per core: two on a small CI machine. Work that holds a pool thread (waiting for a child
/// process, reading a pipe or a socket, a long CPU-bound loop such as a fuzzer's) takes that
/// thread from every other test, and their timers and handlers then run seconds late. Such work
/// goes through here: the kernel shares the cores between this thread and the pool fairly, so
/// the pool keeps answering within milliseconds.
public func offPool<T: Sendable, E: Error>(_ work: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
    let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, E>, Never>) in
        let thread = Thread { continuation.resume(returning: Result { () throws(E) -> T in try work() }) }
        // As much stack as a pool thread has: recursive parsers and fuzzers run here.
        thread.stackSize = 8 << 20
        thread.name = "test-off-pool"
        thread.start()
    }
    return try result.get()
}

/// A child process run to completion, with what it wrote.
public struct ProcessOutput: Sendable {
    public var status: Int32
    public var stdout: Data
    public var stderr: Data
    /// It was still running at the timeout and was sent SIGTERM.
    public var timedOut = false

    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    public var stderrText: String { String(decoding: stderr, as: UTF8.self) }
}

/// Runs `executable` to completion off the cooperative pool (see `offPool`), feeding it `stdin`
/// and collecting stdout and stderr (each read on a thread of its own, so a child that fills
/// one pipe while we write or read another cannot deadlock). `environment` replaces the test
/// process's. A child still running after `timeout` gets SIGTERM (and the output says so).
public func runToCompletion(
    _ executable: String, _ arguments: [String], stdin: Data? = nil, environment: [String: String]? = nil,
    timeout: Duration = .seconds(120)
) async throws -> ProcessOutput {
    try await offPool { () throws -> ProcessOutput in
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        let (input, output, errors) = (Pipe(), Pipe(), Pipe())
        process.standardInput = stdin == nil ? FileHandle.nullDevice : input
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let watchdog = Watchdog(process, timeout: timeout)
        let stdoutReader = PipeReader(output.fileHandleForReading)
        let stderrReader = PipeReader(errors.fileHandleForReading)
        if let stdin {
            // A child that exits without reading all of it makes this fail (EPIPE): its exit
            // status says how it went.
            try? input.fileHandleForWriting.write(contentsOf: stdin)
            try? input.fileHandleForWriting.close()
        }
        let (stdout, stderr) = (stdoutReader.wait(), stderrReader.wait())
        process.waitUntilExit()
        return ProcessOutput(status: process.terminationStatus, stdout: stdout, stderr: stderr, timedOut: watchdog.disarm())
    }
}

/// Reads a pipe to its end on a thread of its own; `wait()` returns what it read.
final class PipeReader: Sendable {
    private let done = DispatchSemaphore(value: 0)
    // Written once by the reading thread before `done` is signalled, read after waiting on it.
    private nonisolated(unsafe) var data = Data()

    init(_ handle: FileHandle) {
        let thread = Thread { [self] in
            data = handle.readDataToEndOfFile()
            done.signal()
        }
        thread.start()
    }

    /// Blocking: call it only off the cooperative pool.
    func wait() -> Data {
        done.wait()
        return data
    }
}

/// Sends SIGTERM to a process still running at its timeout, unless disarmed first.
final class Watchdog: Sendable {
    private let state = Mutex<(armed: Bool, fired: Bool)>((true, false))

    init(_ process: Process, timeout: Duration) {
        let pid = process.processIdentifier
        let (seconds, attoseconds) = timeout.components
        let delay = Double(seconds) + Double(attoseconds) / 1e18
        DispatchQueue.global().asyncAfter(deadline: .now() + delay) { [self] in
            // Armed until the child was waited for, so the pid is still the child's (but for the
            // moment between Foundation reaping it and `disarm`).
            state.withLock { state in
                guard state.armed else { return }
                state.fired = true
                kill(pid, SIGTERM)
            }
        }
    }

    /// Stops the watchdog once the process is reaped; true if it had fired.
    func disarm() -> Bool {
        state.withLock { state in
            state.armed = false
            return state.fired
        }
    }
}
