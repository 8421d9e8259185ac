import Logging
import Subprocess
import SystemPackage

/// One worker process of a `pipe` handler, from spawn to exit, through swift-subprocess's
/// closure API: requests go to its stdin from one writer task (so frames never interleave),
/// answers come from its stdout, and its stderr lines go to the log.
///
/// swift-subprocess does the I/O on its own epoll thread, so a long-lived, two-way conversation
/// never blocks the cooperative pool, and it reaps the process itself (no zombies).
///
/// The process gets a session of its own, so that it and anything it starts form one process
/// group that warren signals as a whole, and no terminal signal meant for warren reaches it.
struct PipeWorker: Sendable {
    let settings: PipeHandler.Settings
    let index: Int
    let dispatcher: PipeDispatcher
    let logger: Logger

    /// How one run of the process ended.
    struct Exit: Sendable {
        /// Nil when the process could not be started.
        var pid: Int32?
        /// What its in-flight requests were failed with (or why it could not start).
        var failure: HandlerFailure
    }

    /// Why the body stopped talking to the process.
    enum Ending: Sendable {
        /// Stdout reached its end, or stdin could not be written: the process is gone or
        /// going. `exitedByItself` is false when warren had to kill it.
        case closed(Stream, exitedByItself: Bool)
        case invalidResponse(String)
        /// Warren stopped it (a request timed out), for the given reason.
        case stopped(String)
        /// The handler is stopping (task cancelled): stdin is closed and the process exits
        /// within the grace period, or is terminated.
        case shutdown
    }

    enum Stream: String, Sendable {
        case stdin
        case stdout
    }

    private enum Event: Sendable {
        case ended(Ending)
        case stderrTail(String)
        case done
    }

    private struct BodyResult: Sendable {
        var serial: UInt64
        var ending: Ending
        var stderrTail: String
    }

    /// Runs the process once. By the time this returns, the process has been reaped and every
    /// request it had in flight has been answered with `Exit.failure`.
    func run() async -> Exit {
        let (frames, framesInput) = AsyncStream.makeStream(of: PipeProtocol.Frame.self)
        let (stops, stopInput) = AsyncStream.makeStream(of: String.self)
        var serial: UInt64?
        do {
            let result = try await Subprocess.run(
                settings.executable, arguments: Arguments(Array(settings.command.dropFirst())), environment: environment(),
                workingDirectory: settings.workingDirectory.map { FilePath($0) }, platformOptions: platformOptions(),
                input: .inputWriter, output: .sequence, error: .sequence
            ) { execution in
                let pid = execution.processIdentifier.value
                let registered = dispatcher.workerStarted(index: index, pid: pid, frames: framesInput, stop: stopInput)
                serial = registered
                logger.info("pipe worker started", metadata: [LogKeys.handler: "\(settings.handler)", LogKeys.worker: "\(index)", LogKeys.pid: "\(pid)"])
                return await talk(to: execution, serial: registered, frames: frames, framesInput: framesInput, stops: stops, stopInput: stopInput)
            }
            let body = result.closureResult
            var failure = Self.failure(for: body.ending, status: result.terminationStatus)
            failure.stderrTail = body.stderrTail.isEmpty ? nil : body.stderrTail
            dispatcher.workerEnded(body.serial, failure: failure)
            return Exit(pid: result.processIdentifier.value, failure: failure)
        } catch {
            framesInput.finish()
            stopInput.finish()
            let failure = HandlerFailure("pipe worker failed: \(error)")
            if let serial { dispatcher.workerEnded(serial, failure: failure) }
            return Exit(pid: nil, failure: failure)
        }
    }

    /// The life of one process: returns when it has closed its stdout, misbehaved, been
    /// stopped, or the task is cancelled; every descriptor read or written here is done by then.
    private func talk(
        to execution: Execution<CustomWriteInput, SequenceOutput, SequenceOutput>, serial: UInt64,
        frames: AsyncStream<PipeProtocol.Frame>, framesInput: AsyncStream<PipeProtocol.Frame>.Continuation,
        stops: AsyncStream<String>, stopInput: AsyncStream<String>.Continuation
    ) async -> BodyResult {
        let pid = execution.processIdentifier.value
        let output = execution.standardOutput
        let errors = execution.standardError
        let writer = execution.standardInputWriter
        let stderr = PipeStderr(handler: settings.handler, index: index, pid: pid, logger: logger)
        return await withTaskGroup(of: Event.self) { group in
            group.addTask { .ended(await readResponses(output, serial: serial)) }
            group.addTask { await writeRequests(frames, to: writer, stderr: stderr) }
            group.addTask {
                for await reason in stops { return .ended(.stopped(reason)) }
                return .done
            }
            group.addTask { .stderrTail(await stderr.drain(errors)) }
            var ending: Ending?
            var tail = ""
            while let event = await group.next() {
                switch event {
                case .stderrTail(let text):
                    tail = text
                case .done:
                    break
                case .ended(let cause):
                    guard ending == nil else { continue }
                    dispatcher.retire(serial)
                    // Ends the writer and the stop watcher; the readers end when the process has
                    // gone (swift-subprocess cancels their reads when it exits).
                    framesInput.finish()
                    stopInput.finish()
                    ending = await settle(cause, execution)
                }
            }
            return BodyResult(serial: serial, ending: ending ?? .shutdown, stderrTail: tail)
        }
    }

    /// Makes sure the process is on its way out, and says how it ended.
    private func settle(_ cause: Ending, _ execution: Execution<CustomWriteInput, SequenceOutput, SequenceOutput>) async -> Ending {
        if Task.isCancelled {
            // Shutdown: swift-subprocess closes stdin when the body returns and runs the
            // teardown sequence (grace period, SIGTERM, SIGKILL to the group).
            return .shutdown
        }
        var ending = cause
        if case .closed(let stream, _) = cause {
            // A pipe usually closes because the process died: give its exit status a moment to
            // appear, so the failure says "exited with code 1" rather than "closed its stdout".
            let exited = await Self.waitForExit(execution.processIdentifier.value, upTo: .seconds(1))
            ending = .closed(stream, exitedByItself: exited)
        }
        // The whole group: a worker's own children must not outlive it.
        try? execution.send(signal: .kill, toProcessGroup: true)
        return ending
    }

    private func readResponses(_ output: SubprocessOutputSequence, serial: UInt64) async -> Ending {
        var lines = LineBuffer(limit: settings.maxResponseLine, mode: .failing)
        do {
            for try await chunk in output {
                let complete = chunk.withUnsafeBytes { lines.append($0) }
                for line in complete {
                    let response: PipeProtocol.Response
                    do {
                        response = try PipeProtocol.response(line.bytes)
                    } catch {
                        return .invalidResponse(error.description)
                    }
                    guard dispatcher.complete(serial, response) else {
                        return .invalidResponse("an answer to request \(response.id), which it does not have")
                    }
                }
                if lines.overflowed {
                    return .invalidResponse("a line longer than \(settings.maxResponseLine) bytes")
                }
            }
        } catch {
            // A failed read means the same as the end of the stream: nothing more will come.
        }
        return .closed(.stdout, exitedByItself: true)
    }

    private func writeRequests(_ frames: AsyncStream<PipeProtocol.Frame>, to writer: StandardInputWriter, stderr: PipeStderr) async -> Event {
        for await frame in frames {
            // Each message sent gives the worker's stderr a new logging allowance.
            stderr.messageSent()
            do {
                // A short count means the process has exited (swift-subprocess stops writing).
                guard try await writer.write(frame.header) == frame.header.count else { return .ended(.closed(.stdin, exitedByItself: true)) }
                if !frame.body.isEmpty {
                    guard try await writer.write(frame.body) == frame.body.count else { return .ended(.closed(.stdin, exitedByItself: true)) }
                }
            } catch {
                return .ended(.closed(.stdin, exitedByItself: true))
            }
        }
        return .done
    }
}
