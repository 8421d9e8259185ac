import Foundation
import Glibc
import Logging

/// `exec`: one process per message (docs/handlers.md, "exec"). The body goes to the program's stdin, the
/// message's metadata to its environment (`WARREN_*`), and its exit status decides the outcome:
/// `0` success (stdout, up to 1 MiB, is the RPC reply), `65` (EX_DATAERR) the verdict reject,
/// `75` (EX_TEMPFAIL) the verdict retry, anything else, a signal or the timeout a failure with
/// the stderr tail attached.
///
/// The handler enforces its own timeout: the process group gets SIGTERM, then SIGKILL after
/// `terminationGrace`, so nothing the handler started outlives its message.
struct ExecHandler: MessageHandler {
    /// SIGKILL follows SIGTERM after 5 s.
    static let defaultTerminationGrace: Duration = .seconds(5)

    struct SetupError: Error, CustomStringConvertible {
        var description: String
    }

    let name: String
    let program: ExecProgram
    let environment: ExecEnvironment
    let logger: Logger

    var enforcesOwnTimeout: Bool { true }
    /// The process is waited for on a thread of its own (`ExecProcess`): the worker's, when
    /// its queue runs only exec handlers.
    var threading: HandlerThreading { .ownThread }

    /// - Parameters:
    ///   - terminationGrace: between SIGTERM and SIGKILL on timeout; tests shorten it.
    ///   - inheritedEnvironment: warren's environment, of which `inherit` chooses what every
    ///     process sees.
    init(
        name: String, command: [String], environment: [String: String], workingDirectory: String?, logger: Logger,
        terminationGrace: Duration = Self.defaultTerminationGrace,
        inherit: InheritedEnvironment = .standard,
        inheritedEnvironment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(SetupError) {
        guard !command.isEmpty else { throw SetupError(description: "command is empty") }
        do {
            self.environment = try ExecEnvironment(
                inherited: inherit.filter(inheritedEnvironment), configured: environment,
                fallbackSearchPath: inheritedEnvironment["PATH"])
        } catch {
            throw SetupError(description: error.description)
        }
        self.name = name
        self.program = ExecProgram(
            command: command, workingDirectory: workingDirectory, searchPath: self.environment.searchPath, grace: terminationGrace)
        self.logger = logger
        _ = ChildProcesses.ignoreSIGPIPE
    }

    func handle(_ input: HandlerInput) async -> HandlerOutcome {
        let wantsReply = input.properties.replyTo.map { !$0.isEmpty } ?? false
        let result = await ExecProcess.run(
            program, environment: environment.environment(for: input), input: input.body, captureStdout: wantsReply,
            timeout: input.timeout, stderr: StderrCollector(logger: logger, context: .init(handler: name, input: input)),
            blocking: input.blocking)
        return Self.outcome(of: result, timeout: input.timeout, wantsReply: wantsReply)
    }

    /// Reads a finished run as an outcome. A timeout or cancellation wins over the exit status:
    /// the process was stopped by us, so what it returned says nothing about the message.
    static func outcome(of run: ExecProcess.Finished, timeout: Duration, wantsReply: Bool) -> HandlerOutcome {
        let tail = run.stderr.tail
        if run.timedOut {
            return .failure(HandlerFailure("timeout after \(timeout.configText)", isTimeout: true, stderrTail: tail))
        }
        if run.cancelled {
            return .failure(HandlerFailure("cancelled before the handler finished (warren is stopping)", stderrTail: tail))
        }
        switch run.ending {
        case .notStarted(let reason):
            return .failure(HandlerFailure(reason))
        case .signaled(let signal):
            let signalName = SignalName.of(signal)
            return .failure(HandlerFailure("killed by \(signalName)", signal: signalName, stderrTail: tail))
        case .exited(0):
            // A cut reply would be wrong data delivered as if it were right; without a reply_to
            // nobody reads stdout, so its size does not matter.
            if wantsReply && run.stdout.overflowed {
                return .failure(HandlerFailure("reply on stdout exceeds 1 MiB", stderrTail: tail))
            }
            return .success(HandlerOutput(reply: wantsReply ? run.stdout.bytes : nil))
        case .exited(Self.exitReject):
            let error = verdictError(Self.exitReject, run.stderr)
            return .verdict(.reject, error: error, output: .none, details: HandlerFailure(error, exitCode: Self.exitReject, stderrTail: tail))
        case .exited(Self.exitRetry):
            let error = verdictError(Self.exitRetry, run.stderr)
            return .verdict(.retry(delay: nil), error: error, output: .none, details: HandlerFailure(error, exitCode: Self.exitRetry, stderrTail: tail))
        case .exited(let code):
            return .failure(HandlerFailure("exit code \(code)", exitCode: code, stderrTail: tail))
        }
    }

    /// EX_DATAERR: the input is bad, retrying cannot help.
    static let exitReject: Int32 = 65
    /// EX_TEMPFAIL: try again later.
    static let exitRetry: Int32 = 75

    /// `exit code 65: <the last line the program wrote to stderr>`: a verdict's reason in the
    /// handler's own words, as it lands in `x-warren-error`.
    private static func verdictError(_ code: Int32, _ stderr: StderrCollector) -> String {
        guard let line = stderr.lastLine else { return "exit code \(code)" }
        return "exit code \(code): \(line)"
    }
}
