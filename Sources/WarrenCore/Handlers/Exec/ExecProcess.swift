import CSpawn
import Glibc
import Synchronization

/// One run of an `exec` handler's program: spawn it in its own process group, feed the body on
/// stdin, drain stdout and stderr, and enforce the timeout by tearing the whole group down.
///
/// A run is one `poll` loop on a thread of its own: the spawn (posix_spawn, which does not copy
/// warren's address space), the pipes, the exit (a pidfd), the deadline and cancellation are
/// all waited for in one place, where the run's `HandlerInput.blocking` says: on a queue
/// worker's own thread (queues whose handlers are all exec) right there, with no thread
/// hand-over; anywhere else on one of the queue's `BlockingThreads`, at the cost of two
/// hand-overs (there and back). The queue has as many of those as its workers can run at once,
/// so a run that blocks never holds up the cooperative pool, and runs never queue behind each
/// other.
/// Every child is reaped and every descriptor closed before the run returns.
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

    /// Runs `program` once. Returns when the process has exited and been reaped.
    ///
    /// On timeout the group gets SIGTERM, then SIGKILL after the grace, while stdout and stderr
    /// are still drained: the handler can say what it was doing as it stops, and does not get
    /// SIGPIPE for it. Cancelling the caller (warren stopping) tears the group down the same way.
    ///
    /// - Parameter captureStdout: false when nobody reads stdout (the message has no
    ///   `reply_to`): it goes to /dev/null, and the run has one pipe fewer to wake up for.
    /// - Parameter blocking: where the run waits for its process.
    static func run(
        _ program: ExecProgram, environment: CStringBlock, input: [UInt8], captureStdout: Bool, timeout: Duration,
        stderr: StderrCollector, blocking: BlockingWait
    ) async -> Finished {
        let cancellation: Cancellation
        do {
            cancellation = try Cancellation()
        } catch {
            return Finished(ending: .notStarted("cannot start \(program.name): \(error.description)"), stderr: stderr)
        }
        defer { cancellation.close() }
        @Sendable func perform() -> Finished {
            var run = BlockingRun(
                program: program, timeout: timeout, cancellation: cancellation, result: Finished(ending: .notStarted("not run"), stderr: stderr))
            run.perform(environment: environment, input: input, captureStdout: captureStdout)
            return run.result
        }
        return await withTaskCancellationHandler {
            await blocking.run(perform) ?? Finished(ending: .notStarted("cannot start \(program.name): warren is stopping"), stderr: stderr)
        } onCancel: {
            cancellation.signal()
        }
    }

    /// An eventfd the run polls: written when the caller's task is cancelled. Closed only when
    /// the run is over, under the same lock as the write, so a late cancellation never writes
    /// to a descriptor number reused since.
    final class Cancellation: Sendable {
        private struct State {
            var fd: Int32
            var signalled = false
        }

        private let state: Mutex<State>
        let fd: Int32

        init() throws(SystemError) {
            let fd = warren_eventfd()
            guard fd >= 0 else { throw SystemError(call: "eventfd", code: errno) }
            self.fd = fd
            state = Mutex(State(fd: fd))
        }

        /// A run that ended without closing it (it always closes it) does not leak it.
        deinit { close() }

        var isSignalled: Bool { state.withLock { $0.signalled } }

        func signal() {
            state.withLock { state in
                state.signalled = true
                guard state.fd >= 0 else { return }
                var one: UInt64 = 1
                _ = Glibc.write(state.fd, &one, MemoryLayout<UInt64>.size)
            }
        }

        func close() {
            state.withLock { state in
                guard state.fd >= 0 else { return }
                _ = Glibc.close(state.fd)
                state.fd = -1
            }
        }
    }

    struct SystemError: Error, CustomStringConvertible {
        var call: String
        var code: Int32
        var description: String { "\(call): \(String(cString: strerror(code)))" }
    }
}

/// The blocking body of one run, on its own thread.
private struct BlockingRun {
    let program: ExecProgram
    let timeout: Duration
    let cancellation: ExecProcess.Cancellation
    var result: ExecProcess.Finished

    /// Descriptors this side holds; -1 once closed.
    private var stdinFD: Int32 = -1
    private var stdoutFD: Int32 = -1
    private var stderrFD: Int32 = -1
    private var exitFD: Int32 = -1
    private var pid: pid_t = 0
    /// When the next step of the teardown is due (nil: none is).
    private var deadline: ContinuousClock.Instant?
    private var stopping = false
    /// Where pipe reads land; allocated for the run by `perform`.
    private var readBuffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)

    init(program: ExecProgram, timeout: Duration, cancellation: ExecProcess.Cancellation, result: ExecProcess.Finished) {
        self.program = program
        self.timeout = timeout
        self.cancellation = cancellation
        self.result = result
    }

    mutating func perform(environment: CStringBlock, input: [UInt8], captureStdout: Bool) {
        defer { result.stderr.finish() }
        guard let path = program.path else {
            result.ending = .notStarted(program.launchFailure(ENOENT))
            return
        }
        if cancellation.isSignalled {
            result.cancelled = true
            result.ending = .notStarted("not started: warren is stopping")
            return
        }
        if let failure = spawn(path: path, environment: environment, captureStdout: captureStdout) {
            result.ending = .notStarted(failure)
            return
        }
        deadline = .now + timeout
        readBuffer = .allocate(byteCount: 64 * 1024, alignment: 16)
        defer { readBuffer.deallocate() }
        exchange(input: input)
        closeAll()
    }

    /// Where the stdout of runs nobody reads goes: /dev/null, opened once (close-on-exec, above
    /// 2 like the pipes) and kept open; or the errno that opening it failed with.
    private static let devNull: (fd: Int32, error: Int32) = {
        let fd = Glibc.open("/dev/null", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return (-1, errno) }
        guard fd <= STDERR_FILENO else { return (fd, 0) }
        let moved = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1)
        let error = errno
        Glibc.close(fd)
        return moved >= 0 ? (moved, 0) : (-1, error)
    }()

    /// Starts the process with its three pipes; nil on success, else why it could not start.
    private mutating func spawn(path: String, environment: CStringBlock, captureStdout: Bool) -> String? {
        var input: [Int32] = [-1, -1]
        var output: [Int32] = [-1, -1]
        var errors: [Int32] = [-1, -1]
        var code = warren_pipe(&input)
        if code == 0 {
            if captureStdout {
                code = warren_pipe(&output)
            } else if Self.devNull.fd >= 0 {
                output[1] = Self.devNull.fd
            } else {
                code = Self.devNull.error
            }
        }
        if code == 0 { code = warren_pipe(&errors) }
        guard code == 0 else {
            for fd in input + output + errors where fd >= 0 && fd != Self.devNull.fd { Glibc.close(fd) }
            return "cannot start \(program.name): pipe: \(String(cString: strerror(code)))"
        }
        var child: pid_t = 0
        code = program.arguments.withPointers { argv in
            environment.withPointers { envp in
                warren_spawn(&child, path, argv, envp, program.workingDirectory, input[0], output[1], errors[1])
            }
        }
        // The child's ends are its own now (or nobody's, if it did not start).
        Glibc.close(input[0])
        if captureStdout { Glibc.close(output[1]) }
        Glibc.close(errors[1])
        stdinFD = input[1]
        stdoutFD = output[0]
        stderrFD = errors[0]
        guard code == 0 else {
            closeAll()
            return program.launchFailure(code)
        }
        pid = child
        for fd in [stdinFD, stdoutFD, stderrFD] where fd >= 0 { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        // Without a pidfd (Linux before 5.3) the exit is noticed by polling waitpid.
        exitFD = warren_pidfd_open(child)
        return nil
    }

    /// Writes the body while draining stdout and stderr, all at once (a child that fills one
    /// pipe before reading the other must not deadlock against us), until the process exits.
    private mutating func exchange(input: [UInt8]) {
        var written = 0
        if input.isEmpty { closeStdin() }
        var watchCancellation = true
        var fds: [pollfd] = []
        var exited = false
        while true {
            fds.removeAll(keepingCapacity: true)
            if exitFD >= 0 { fds.append(pollfd(fd: exitFD, events: Int16(POLLIN), revents: 0)) }
            if watchCancellation { fds.append(pollfd(fd: cancellation.fd, events: Int16(POLLIN), revents: 0)) }
            if stdinFD >= 0 { fds.append(pollfd(fd: stdinFD, events: Int16(POLLOUT), revents: 0)) }
            if stdoutFD >= 0 { fds.append(pollfd(fd: stdoutFD, events: Int16(POLLIN), revents: 0)) }
            if stderrFD >= 0 { fds.append(pollfd(fd: stderrFD, events: Int16(POLLIN), revents: 0)) }
            let ready = poll(&fds, nfds_t(fds.count), pollTimeout())
            if ready < 0 && errno != EINTR { break }

            for entry in fds where entry.revents != 0 {
                switch entry.fd {
                case cancellation.fd:
                    watchCancellation = false
                    if !result.timedOut { result.cancelled = true }
                    beginTeardown()
                case stdinFD:
                    written += writeInput(input, from: written)
                    if written == input.count { closeStdin() }
                case stdoutFD:
                    if !drain(stdoutFD, into: .stdout) { Self.closeFD(&stdoutFD) }
                case stderrFD:
                    if !drain(stderrFD, into: .stderr) { Self.closeFD(&stderrFD) }
                case exitFD:
                    exited = true
                default:
                    break
                }
            }
            if exited || (exitFD < 0 && hasExited()) {
                finish()
                return
            }
            if let due = deadline, due <= .now { deadlinePassed() }
        }
        // poll itself failed (EFAULT, ENOMEM): stop the group and collect it rather than leave it.
        stopping = true
        stopGroup(SIGKILL)
        finish()
    }

    private enum Stream { case stdout, stderr }

    /// Reads what `fd` has now into `stream`; false at end of file or on an error.
    private mutating func drain(_ fd: Int32, into stream: Stream, limit: Int = .max) -> Bool {
        var total = 0
        while total < limit {
            let count = read(fd, readBuffer.baseAddress, readBuffer.count)
            if count > 0 {
                total += count
                let chunk = UnsafeRawBufferPointer(rebasing: readBuffer[0..<count])
                switch stream {
                case .stdout: result.stdout.append(chunk)
                case .stderr: result.stderr.append(chunk)
                }
                continue
            }
            if count < 0 && errno == EINTR { continue }
            // EAGAIN: nothing more for now. Any other error ends the capture; the exit status
            // still decides the outcome.
            return count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
        }
        return true
    }

    /// Writes what the pipe takes of the rest of `input`; returns how much. A child that exits
    /// or closes stdin before reading it all makes this fail (EPIPE; SIGPIPE is ignored, see
    /// ChildProcesses): that is the child's choice, and its exit status says how the run went.
    private mutating func writeInput(_ input: [UInt8], from offset: Int) -> Int {
        let count = input.withUnsafeBytes { bytes in
            write(stdinFD, bytes.baseAddress! + offset, bytes.count - offset)
        }
        if count >= 0 { return count }
        if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR { closeStdin() }
        return 0
    }

    /// Whether the leader has exited, for kernels without pidfds. It is not reaped here
    /// (WNOWAIT): a zombie leader keeps the group id ours for the last SIGKILL.
    private func hasExited() -> Bool {
        var info = siginfo_t()
        return waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info._sifields._sigchld.si_pid == pid
    }

    /// The leader has exited: stop what is left of a torn-down group, reap, and collect what it
    /// wrote before exiting. A grandchild may keep the pipes open; the run does not wait for it.
    private mutating func finish() {
        // Anything of the group that survived SIGTERM gets SIGKILL rather than run on unowned.
        if stopping { stopGroup(SIGKILL) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // At most what the pipes hold (64 KiB each) was left by the leader; the limit stops a
        // grandchild that keeps writing from keeping the run here.
        if stdoutFD >= 0 { _ = drain(stdoutFD, into: .stdout, limit: 1024 * 1024) }
        if stderrFD >= 0 { _ = drain(stderrFD, into: .stderr, limit: 1024 * 1024) }
        if status & 0x7f == 0 {
            result.ending = .exited((status >> 8) & 0xff)
        } else {
            result.ending = .signaled(status & 0x7f)
        }
    }

    private mutating func deadlinePassed() {
        if stopping {
            stopGroup(SIGKILL)
            deadline = nil
        } else {
            result.timedOut = true
            beginTeardown()
        }
    }

    /// SIGTERM to the group now, SIGKILL after the grace.
    private mutating func beginTeardown() {
        guard !stopping else { return }
        stopping = true
        stopGroup(SIGTERM)
        deadline = .now + program.grace
    }

    /// Signals the run's process group. Only while the leader is unreaped: until then the group
    /// id cannot belong to anyone else.
    private func stopGroup(_ signal: Int32) {
        guard pid > 1 else { return }
        // ESRCH (everything has exited) is the expected answer late in a teardown.
        _ = kill(-pid, signal)
    }

    /// Milliseconds until the deadline, rounded up; -1 when there is none. Without a pidfd, at
    /// most 10 ms, so the exit is noticed.
    private func pollTimeout() -> Int32 {
        var timeout: Int32 = -1
        if let deadline {
            let left = ContinuousClock.now.duration(to: deadline)
            let milliseconds = max(0, left.components.seconds * 1000 + (left.components.attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
            timeout = Int32(clamping: milliseconds)
        }
        if exitFD < 0 { timeout = timeout < 0 ? 10 : min(timeout, 10) }
        return timeout
    }

    private mutating func closeStdin() { Self.closeFD(&stdinFD) }

    private static func closeFD(_ fd: inout Int32) {
        guard fd >= 0 else { return }
        Glibc.close(fd)
        fd = -1
    }

    private mutating func closeAll() {
        Self.closeFD(&stdinFD)
        Self.closeFD(&stdoutFD)
        Self.closeFD(&stderrFD)
        Self.closeFD(&exitFD)
    }
}
