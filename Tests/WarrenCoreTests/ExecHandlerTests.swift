import AMQP
import Foundation
import Glibc
import Logging
import Synchronization
import TestSupport
import Testing

@testable import WarrenCore

/// The `exec` handler with real processes: small `#!/bin/sh` scripts written to a temporary
/// directory and executed directly (never through a shell by warren).
@Suite("exec handler", .timeLimit(.minutes(2)))
final class ExecHandlerTests: Sendable {
    let directory: String

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-exec-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: directory)
    }

    // MARK: input, environment, reply

    @Test(arguments: RunThread.allCases) func theBodyArrivesOnStdinAndStdoutBecomesTheReply(on thread: RunThread) async throws {
        let handler = try makeHandler(script("cat"))
        // Larger than a pipe buffer both ways: stdin is written while stdout is drained.
        let body = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let outcome = await Self.handle(handler, Self.input(body: body, properties: BasicProperties(correlationID: "c1", replyTo: "replies")), on: thread)
        guard case .success(let output) = outcome else { Issue.record("expected success, got \(outcome)"); return }
        #expect(output.reply == body)
    }

    @Test func metadataConfiguredEnvironmentAndWorkingDirectoryReachTheProcess() async throws {
        let workDir = "\(directory)/work"
        try FileManager.default.createDirectory(atPath: workDir, withIntermediateDirectories: true)
        let program = try script("""
            for name in WARREN_QUEUE WARREN_EXCHANGE WARREN_ROUTING_KEY WARREN_MESSAGE_ID WARREN_CORRELATION_ID \
                WARREN_REPLY_TO WARREN_CONTENT_TYPE WARREN_TYPE WARREN_REDELIVERED WARREN_ATTEMPT WARREN_HEADERS \
                BILLING_MODE INHERITED_ONLY OVERRIDDEN; do
              eval "printf '%s=%s\\n' \\"$name\\" \\"\\$$name\\""
            done
            printf 'PWD=%s\\n' "$(pwd -P)"
            printf 'ARGS=%s\\n' "$*"
            """)
        let handler = try ExecHandler(
            name: "env", command: [program, "one", "two words"],
            environment: ["BILLING_MODE": "live", "OVERRIDDEN": "configured", "WARREN_QUEUE": "spoofed"], workingDirectory: workDir,
            logger: Self.quietLogger, inherit: .all,
            inheritedEnvironment: ["PATH": "/usr/bin:/bin", "INHERITED_ONLY": "inherited", "OVERRIDDEN": "inherited"])
        let properties = BasicProperties(
            contentType: "application/json", headers: ["k": "v", "n": .int32(3)], replyTo: "replies", messageID: "m-1", type: "OrderCreated")
        let outcome = await handler.handle(HandlerInput(
            queue: "orders", exchange: "ex", routingKey: "order.created", redelivered: true, attempt: 2, properties: properties,
            body: [], deliveryTag: 7))
        guard case .success(let output) = outcome else { Issue.record("expected success, got \(outcome)"); return }
        let lines = String(decoding: output.reply ?? [], as: UTF8.self).split(separator: "\n").map(String.init)
        var seen: [String: String] = [:]
        for line in lines {
            guard let equals = line.firstIndex(of: "=") else { continue }
            seen[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        #expect(seen["WARREN_QUEUE"] == "orders", "WARREN_* wins over a configured variable")
        #expect(seen["WARREN_EXCHANGE"] == "ex")
        #expect(seen["WARREN_ROUTING_KEY"] == "order.created")
        #expect(seen["WARREN_MESSAGE_ID"] == "m-1")
        #expect(seen["WARREN_CORRELATION_ID"] == "", "an absent property is an empty string")
        #expect(seen["WARREN_REPLY_TO"] == "replies")
        #expect(seen["WARREN_CONTENT_TYPE"] == "application/json")
        #expect(seen["WARREN_TYPE"] == "OrderCreated")
        #expect(seen["WARREN_REDELIVERED"] == "1")
        #expect(seen["WARREN_ATTEMPT"] == "2")
        #expect(seen["WARREN_HEADERS"] == #"{"k":"v","n":3}"#)
        #expect(seen["BILLING_MODE"] == "live")
        #expect(seen["INHERITED_ONLY"] == "inherited")
        #expect(seen["OVERRIDDEN"] == "configured", "configured env wins over warren's own")
        #expect(seen["PWD"] == URL(fileURLWithPath: workDir).resolvingSymlinksInPath().path)
        #expect(seen["ARGS"] == "one two words", "argv is passed as is, without a shell splitting it")
    }

    @Test func aProgramNameIsLookedUpOnPath() async throws {
        let handler = try ExecHandler(
            name: "echo", command: ["printf", "%s", "found"], environment: [:], workingDirectory: nil, logger: Self.quietLogger,
            inheritedEnvironment: ["PATH": "/nonexistent:/usr/bin:/bin"])
        guard case .success(let output) = await handler.handle(Self.input(properties: Self.rpc)) else { Issue.record("expected success"); return }
        #expect(output.reply == Array("found".utf8))
    }

    @Test func aChildThatDoesNotReadStdinStillSucceeds() async throws {
        let handler = try makeHandler(script("echo done"))
        let outcome = await handler.handle(Self.input(body: [UInt8](repeating: 0x61, count: 2 * 1024 * 1024), properties: Self.rpc))
        guard case .success(let output) = outcome else { Issue.record("expected success, got \(outcome)"); return }
        #expect(output.reply == Array("done\n".utf8))
    }

    @Test func stdoutBeyondOneMiBFailsOnlyWhenAReplyIsExpected() async throws {
        // Without reply_to nobody reads stdout: it goes to /dev/null, so its size cannot matter.
        let handler = try makeHandler(script("head -c 1100000 /dev/zero"))
        let rpc = await handler.handle(Self.input(properties: BasicProperties(correlationID: "c", replyTo: "replies")))
        guard case .failure(let failure) = rpc else { Issue.record("expected failure, got \(rpc)"); return }
        #expect(failure.error == "reply on stdout exceeds 1 MiB")
        let plain = await handler.handle(Self.input())
        guard case .success(let output) = plain else { Issue.record("expected success, got \(plain)"); return }
        #expect(output.reply == nil, "stdout is not kept without reply_to")
    }

    @Test func stdoutIsKeptOnlyWhenTheMessageHasReplyTo() async throws {
        let handler = try makeHandler(script("echo answer"))
        guard case .success(let rpc) = await handler.handle(Self.input(properties: Self.rpc)) else { Issue.record("expected success"); return }
        #expect(rpc.reply == Array("answer\n".utf8))
        guard case .success(let plain) = await handler.handle(Self.input()) else { Issue.record("expected success"); return }
        #expect(plain.reply == nil)
    }

    // MARK: exit codes and signals

    @Test func exitCodeZeroIsSuccess() async throws {
        let outcome = try await makeHandler(script("exit 0")).handle(Self.input())
        guard case .success = outcome else { Issue.record("expected success, got \(outcome)"); return }
    }

    @Test func exitCode65IsTheRejectVerdictWithTheLastStderrLine() async throws {
        let outcome = try await makeHandler(script("echo 'noise' >&2; echo 'bad input: no id' >&2; exit 65")).handle(Self.input())
        guard case .verdict(.reject, let error, _, _) = outcome else { Issue.record("expected reject, got \(outcome)"); return }
        #expect(error == "exit code 65: bad input: no id")
    }

    @Test func exitCode75IsTheRetryVerdict() async throws {
        let outcome = try await makeHandler(script("exit 75")).handle(Self.input())
        guard case .verdict(.retry(let delay), let error, _, _) = outcome else { Issue.record("expected retry, got \(outcome)"); return }
        #expect(delay == nil)
        #expect(error == "exit code 75")
    }

    @Test func anotherExitCodeIsAFailureWithTheCodeAndTheStderrTail() async throws {
        let outcome = try await makeHandler(script("echo boom >&2; exit 3")).handle(Self.input())
        guard case .failure(let failure) = outcome else { Issue.record("expected failure, got \(outcome)"); return }
        #expect(failure.error == "exit code 3")
        #expect(failure.exitCode == 3)
        #expect(failure.stderrTail == "boom\n")
        #expect(!failure.isTimeout)
    }

    @Test func theStderrTailIsTheLastTwoKiB() async throws {
        let outcome = try await makeHandler(script("head -c 5000 /dev/zero | tr '\\0' x >&2; echo END >&2; exit 1")).handle(Self.input())
        guard case .failure(let failure) = outcome else { Issue.record("expected failure, got \(outcome)"); return }
        #expect(failure.stderrTail?.utf8.count == 2048)
        #expect(failure.stderrTail?.hasSuffix("xxEND\n") == true)
    }

    @Test func aProcessKilledBySIGKILLIsASignalFailure() async throws {
        let outcome = try await makeHandler(script("echo dying >&2; kill -9 $$")).handle(Self.input())
        guard case .failure(let failure) = outcome else { Issue.record("expected failure, got \(outcome)"); return }
        #expect(failure.error == "killed by SIGKILL")
        #expect(failure.signal == "SIGKILL")
        #expect(failure.exitCode == nil)
        #expect(failure.stderrTail == "dying\n")
    }

    // MARK: programs that cannot start

    @Test func aMissingProgramIsAFailureNotACrash() async throws {
        let outcome = try await makeHandler("\(directory)/does-not-exist").handle(Self.input())
        guard case .failure(let failure) = outcome else { Issue.record("expected failure, got \(outcome)"); return }
        #expect(failure.error == "cannot start \(directory)/does-not-exist: No such file or directory")
    }

    @Test func aProgramWithoutExecutePermissionIsAFailure() async throws {
        let path = "\(directory)/not-executable"
        try "#!/bin/sh\nexit 0\n".write(toFile: path, atomically: true, encoding: .utf8)
        let outcome = try await makeHandler(path).handle(Self.input())
        guard case .failure(let failure) = outcome else { Issue.record("expected failure, got \(outcome)"); return }
        #expect(failure.error == "cannot start \(path): Permission denied")
    }

    @Test func aProgramNameNotOnPathIsAFailure() async throws {
        let handler = try ExecHandler(
            name: "ghost", command: ["warren-no-such-program"], environment: [:], workingDirectory: nil, logger: Self.quietLogger,
            inheritedEnvironment: ["PATH": "/usr/bin:/bin"])
        guard case .failure(let failure) = await handler.handle(Self.input()) else { Issue.record("expected failure"); return }
        #expect(failure.error == "cannot start warren-no-such-program: not found on PATH")
    }

    @Test func aMissingWorkingDirectoryIsAFailure() async throws {
        let handler = try ExecHandler(
            name: "lost", command: [try script("exit 0")], environment: [:], workingDirectory: "\(directory)/gone", logger: Self.quietLogger)
        guard case .failure(let failure) = await handler.handle(Self.input()) else { Issue.record("expected failure"); return }
        #expect(failure.error.hasSuffix("working directory \(directory)/gone: No such file or directory"))
    }

    @Test func anInvalidConfiguredVariableNameIsRefusedAtSetup() throws {
        #expect(throws: ExecHandler.SetupError.self) {
            try ExecHandler(name: "bad", command: ["/bin/true"], environment: ["A=B": "x"], workingDirectory: nil, logger: Self.quietLogger)
        }
    }

    // MARK: helpers

    static let quietLogger: Logger = {
        var logger = Logger(label: "warren.exec-tests")
        logger.logLevel = .critical
        return logger
    }()

    /// Writes an executable `#!/bin/sh` script and returns its path.
    func script(_ body: String, name: String = UUID().uuidString) throws -> String {
        let path = "\(directory)/\(name).sh"
        try writeExecutable("#!/bin/sh\n\(body)\n", to: path)
        return path
    }

    func makeHandler(_ program: String, logger: Logger = ExecHandlerTests.quietLogger, grace: Duration = .seconds(5)) throws -> ExecHandler {
        try ExecHandler(name: "test", command: [program], environment: [:], workingDirectory: nil, logger: logger, terminationGrace: grace)
    }

    /// Properties of a message that wants a reply: stdout is kept only for those.
    static let rpc = BasicProperties(correlationID: "c-1", replyTo: "replies", messageID: "m-1")

    /// Where a run happens: on a thread of libdispatch's, handed over there and back (a handler
    /// run anywhere but a queue worker's thread), or on a worker's own thread, which the run
    /// blocks itself (queues whose handlers are all exec).
    enum RunThread: CaseIterable, Sendable {
        /// The run hands its wait to blocking threads (`BlockingWait.spare`).
        case handedOver
        case worker
    }

    static func handle(_ handler: ExecHandler, _ input: HandlerInput, on thread: RunThread) async -> HandlerOutcome {
        switch thread {
        case .handedOver:
            return await handler.handle(input)
        case .worker:
            let worker = BlockingThreads(name: "exec-test", count: 1)
            defer { worker.stop() }
            var onItsThread = input
            onItsThread.blocking = .here
            return await withTaskExecutorPreference(worker) { await handler.handle(onItsThread) }
        }
    }

    static func input(body: [UInt8] = [], properties: BasicProperties = BasicProperties(messageID: "m-1"), timeout: Duration = .seconds(30)) -> HandlerInput {
        HandlerInput(
            queue: "q", exchange: "", routingKey: "q", redelivered: false, attempt: 1, properties: properties, body: body, deliveryTag: 1,
            timeout: timeout)
    }
}

/// `inherit_env`: which of warren's own variables reach an exec handler's process.
extension ExecHandlerTests {
    static let warrensEnvironment = [
        "PATH": "/usr/bin:/bin", "HOME": "/var/lib/warren", "LANG": "C.UTF-8", "LC_TIME": "en_GB.UTF-8",
        "AMQP_PASSWORD": "s3cret", "DEPLOY_TOKEN": "t0ken", "KEEP_ME": "kept",
    ]

    /// The variables the child printed, for the names asked.
    func childEnvironment(_ inherit: InheritedEnvironment, configured: [String: String] = [:], names: [String]) async throws -> [String: String] {
        let program = try script(names.map { "[ \"${\($0)+set}\" = set ] && printf '%s=%s\\n' \($0) \"$\($0)\"" }.joined(separator: "\n") + "\ntrue")
        let handler = try ExecHandler(
            name: "env", command: [program], environment: configured, workingDirectory: nil, logger: Self.quietLogger, inherit: inherit,
            inheritedEnvironment: Self.warrensEnvironment)
        let outcome = await handler.handle(Self.input(properties: BasicProperties(correlationID: "c", replyTo: "replies", messageID: "m-9")))
        guard case .success(let output) = outcome else {
            Issue.record("expected success, got \(outcome)")
            return [:]
        }
        var seen: [String: String] = [:]
        for line in String(decoding: output.reply ?? [], as: UTF8.self).split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            seen[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return seen
    }

    static let probed = ["PATH", "HOME", "LANG", "LC_TIME", "AMQP_PASSWORD", "DEPLOY_TOKEN", "KEEP_ME", "CONFIGURED", "WARREN_MESSAGE_ID"]

    @Test func byDefaultOnlyTheStandardVariablesAreInheritedAndSecretsAreNot() async throws {
        let seen = try await childEnvironment(.standard, configured: ["CONFIGURED": "yes"], names: Self.probed)
        #expect(seen["PATH"] == "/usr/bin:/bin")
        #expect(seen["HOME"] == "/var/lib/warren")
        #expect(seen["LANG"] == "C.UTF-8")
        #expect(seen["LC_TIME"] == "en_GB.UTF-8", "LC_* is a prefix")
        #expect(seen["AMQP_PASSWORD"] == nil, "a secret in warren's environment reached the child")
        #expect(seen["DEPLOY_TOKEN"] == nil)
        #expect(seen["KEEP_ME"] == nil)
        #expect(seen["CONFIGURED"] == "yes", "the handler's env is always passed")
        #expect(seen["WARREN_MESSAGE_ID"] == "m-9", "message variables are always passed")
    }

    @Test func inheritEnvFalsePassesOnlyTheHandlersEnvAndWarrensMessageVariables() async throws {
        let seen = try await childEnvironment(.only([]), configured: ["CONFIGURED": "yes"], names: Self.probed)
        // Not PATH: /bin/sh sets a default one of its own when it gets none.
        #expect(seen["HOME"] == nil)
        #expect(seen["LANG"] == nil)
        #expect(seen["AMQP_PASSWORD"] == nil)
        #expect(seen["CONFIGURED"] == "yes")
        #expect(seen["WARREN_MESSAGE_ID"] == "m-9")
    }

    @Test func anInheritEnvListPassesExactlyTheNamedVariables() async throws {
        let seen = try await childEnvironment(.only(["KEEP_ME", "LC_*"]), names: Self.probed)
        #expect(seen["KEEP_ME"] == "kept")
        #expect(seen["LC_TIME"] == "en_GB.UTF-8")
        #expect(seen["HOME"] == nil)
        #expect(seen["AMQP_PASSWORD"] == nil)
    }

    @Test func inheritEnvTruePassesEverything() async throws {
        let seen = try await childEnvironment(.all, names: Self.probed)
        #expect(seen["AMQP_PASSWORD"] == "s3cret")
        #expect(seen["KEEP_ME"] == "kept")
    }

    @Test func aProgramNameIsFoundOnWarrensPathWhenThePathIsNotInherited() async throws {
        let handler = try ExecHandler(
            name: "echo", command: ["printf", "%s", "found"], environment: [:], workingDirectory: nil, logger: Self.quietLogger,
            inherit: .only([]), inheritedEnvironment: ["PATH": "/nonexistent:/usr/bin:/bin"])
        guard case .success(let output) = await handler.handle(Self.input(properties: Self.rpc)) else { Issue.record("expected success"); return }
        #expect(output.reply == Array("found".utf8))
    }
}
