import Glibc
import Subprocess

/// One run of an `exec` handler's program: spawn it in its own process group, feed the body on
/// stdin, drain stdout and stderr, and enforce the timeout by tearing the whole group down.
///
/// Everything runs on the process library's own I/O and monitor threads (epoll and pidfd
/// based); the tasks here only await them, so a run never blocks the cooperative pool, and
/// the library reaps every child it spawned (no zombies) and closes every pipe it opened.
enum ExecProcess {
    /// How the run ended, before it is read as an outcome.
    enum Ending: Sendable {
        case exited(Int32)
        case signaled(Int32)
        /// The program could not be started; the text says why.
        case notStarted(String)
    }

    struct Finished: Sendable {
        var ending: Ending
        /// The timeout passed and the process group was torn down.
        var timedOut = false
        /// The caller's task was cancelled (warren stopping) and the group was torn down.
        var cancelled = false
        var stdout = BoundedOutput()
        /// Complete: every line is logged and the tail is final.
        var stderr: StderrCollector
    }

    /// What the run's body hands back to the race in `run`.
    private struct Captured: Sendable {
        var stdout: BoundedOutput
        var stderr: StderrCollector
    }

    private enum Event: Sendable {
        case ended(Ending, Captured?)
        /// The timeout task ended; `fired` when the timeout passed (the group was signalled).
        case timer(fired: Bool)
    }

    /// Runs `program` once. Returns when the process has exited and been reaped.
    ///
    /// On timeout the group gets SIGTERM, then SIGKILL after the grace, while stdout and stderr
    /// are still drained: the handler can say what it was doing as it stops, and does not get
    /// SIGPIPE for it. If the caller is cancelled instead (warren stopping), the library runs the
    /// same teardown for the cancelled run.
    static func run(
        _ program: ExecProgram, environment: Environment, input: [UInt8], timeout: Duration, stderr: StderrCollector
    ) async -> Finished {
        let processGroup = ProcessGroupSignaller()
        return await withTaskGroup(of: Event.self) { group in
            group.addTask {
                await spawn(program, environment: environment, input: input, stderr: stderr, processGroup: processGroup)
            }
            group.addTask {
                do {
                    try await Task.sleep(for: timeout)
                } catch {
                    return .timer(fired: false)
                }
                processGroup.signal(SIGTERM)
                do {
                    try await Task.sleep(for: program.grace)
                    processGroup.signal(SIGKILL)
                } catch {
                    // The run ended within the grace.
                }
                return .timer(fired: true)
            }
            var result = Finished(ending: .notStarted("not run"), stderr: stderr)
            var ended = false
            for await event in group {
                switch event {
                case .ended(let ending, let captured):
                    result.ending = ending
                    if let captured {
                        result.stdout = captured.stdout
                        result.stderr = captured.stderr
                    }
                    ended = true
                    group.cancelAll()
                case .timer(let fired):
                    if fired {
                        result.timedOut = true
                    } else if !ended {
                        // Not stopped by us: the caller was cancelled, and with it the run.
                        result.cancelled = true
                    }
                }
            }
            // The teardown ends when the leader exits; anything of its group that survived
            // SIGTERM gets SIGKILL now rather than run on unowned.
            if result.timedOut || result.cancelled { processGroup.signal(SIGKILL) }
            return result
        }
    }

    private static func spawn(
        _ program: ExecProgram, environment: Environment, input: [UInt8], stderr: StderrCollector, processGroup: ProcessGroupSignaller
    ) async -> Event {
        do {
            let result = try await Subprocess.run(
                program.executable, arguments: program.arguments, environment: environment,
                workingDirectory: program.workingDirectory, platformOptions: program.platformOptions,
                input: .inputWriter, output: .sequence, error: .sequence
            ) { execution in
                processGroup.started(execution.processIdentifier.value)
                return await exchange(with: execution, input: input, stderr: stderr)
            }
            let ending: Ending = switch result.terminationStatus {
            case .exited(let code): .exited(code)
            case .signaled(let signal): .signaled(signal)
            }
            return .ended(ending, result.closureResult)
        } catch {
            return .ended(.notStarted(program.launchFailure(error)), nil)
        }
    }

    /// Writes the body while draining stdout and stderr, all at once: a child that fills one
    /// pipe before reading the other must not deadlock against us. The streams end at EOF, or
    /// when the process exits (the library stops waiting for a grandchild that keeps a pipe
    /// open), or when the run is cancelled.
    private static func exchange(
        with execution: Execution<CustomWriteInput, SequenceOutput, SequenceOutput>, input: [UInt8], stderr: StderrCollector
    ) async -> Captured {
        await withTaskGroup(of: BoundedOutput?.self) { group in
            group.addTask {
                let writer = execution.standardInputWriter
                // A child that exits or closes stdin before reading it all makes this fail
                // (EPIPE; SIGPIPE is ignored, see ChildProcesses). That is the child's choice: its
                // exit status says how the run went.
                _ = try? await writer.write(input)
                try? await writer.finish()
                return nil
            }
            group.addTask {
                var stdout = BoundedOutput()
                do {
                    for try await chunk in execution.standardOutput { chunk.withUnsafeBytes { stdout.append($0) } }
                } catch {
                    // A read error ends the capture; the exit status still decides the outcome.
                }
                return stdout
            }
            var stderr = stderr
            do {
                for try await chunk in execution.standardError { chunk.withUnsafeBytes { stderr.append($0) } }
            } catch {
                // As for stdout.
            }
            stderr.finish()
            var stdout = BoundedOutput()
            for await drained in group {
                if let drained { stdout = drained }
            }
            return Captured(stdout: stdout, stderr: stderr)
        }
    }
}
