import AMQP
import Foundation
import Glibc
import Logging
import Synchronization
import TestSupport
import Testing

@testable import WarrenCore

/// Timeouts, process groups, cancellation, stderr logging and resource hygiene of the `exec`
/// handler, with real processes.
extension ExecHandlerTests {
    // MARK: timeouts and process groups

    @Test(arguments: RunThread.allCases) func aTimedOutHandlerIsKilledTogetherWithItsChildren(on thread: RunThread) async throws {
        let pidFile = "\(directory)/grandchild.pid"
        // A grace far longer than the run: ending well before it shows SIGTERM was enough (not a
        // bound on the machine's speed).
        let handler = try makeHandler(script("sleep 300 & echo $! > '\(pidFile)'; sleep 300"), grace: .seconds(120))
        let started = ContinuousClock.now
        let outcome = await Self.handle(handler, Self.input(timeout: .seconds(1)), on: thread)
        guard case .failure(let failure) = outcome else { Issue.record("expected failure, got \(outcome)"); return }
        #expect(failure.isTimeout)
        #expect(failure.error == "timeout after 1s")
        #expect(ContinuousClock.now - started < .seconds(60), "SIGTERM stopped the group; no SIGKILL grace was needed")
        let grandchild = try #require(Self.pid(in: pidFile), "the script wrote its background child's pid")
        #expect(await Self.isGone(grandchild), "the background grandchild died with its group")
    }

    @Test(arguments: RunThread.allCases) func aHandlerThatTrapsSIGTERMGetsSIGKILLAfterTheGrace(on thread: RunThread) async throws {
        let pidFile = "\(directory)/stubborn.pid"
        // The leader survives SIGTERM (the trap runs and the loop goes on); its background child
        // ignores SIGTERM outright. Both must be gone after SIGKILL to the group.
        let program = try script("""
            trap 'echo "got TERM" >&2' TERM
            (trap '' TERM; exec sleep 300) &
            echo $! > '\(pidFile)'
            while :; do sleep 0.05; done
            """)
        let handler = try makeHandler(program, grace: .milliseconds(800))
        let started = ContinuousClock.now
        let outcome = await Self.handle(handler, Self.input(timeout: .milliseconds(700)), on: thread)
        let elapsed = ContinuousClock.now - started
        guard case .failure(let failure) = outcome else { Issue.record("expected failure, got \(outcome)"); return }
        #expect(failure.isTimeout)
        #expect(failure.error == "timeout after 700ms")
        #expect(elapsed >= .milliseconds(1500), "SIGKILL came only after the grace (took \(elapsed))")
        #expect(failure.stderrTail?.contains("got TERM") == true, "stderr was still read during the grace")
        let grandchild = try #require(Self.pid(in: pidFile))
        #expect(await Self.isGone(grandchild))
    }

    @Test func aChildIgnoringSIGTERMIsKilledWhenItsLeaderExits() async throws {
        let pidFile = "\(directory)/orphan.pid"
        let handler = try makeHandler(script("(trap '' TERM; exec sleep 300) & echo $! > '\(pidFile)'; sleep 300"), grace: .seconds(120))
        let started = ContinuousClock.now
        let outcome = await handler.handle(Self.input(timeout: .milliseconds(500)))
        guard case .failure(let failure) = outcome, failure.isTimeout else { Issue.record("expected a timeout, got \(outcome)"); return }
        let grandchild = try #require(Self.pid(in: pidFile))
        #expect(await Self.isGone(grandchild))
        #expect(ContinuousClock.now - started < .seconds(60), "no need to wait out the grace (120 s) once the leader is gone")
    }

    @Test func aBackgroundChildHoldingStdoutOpenDoesNotHoldTheRun() async throws {
        let pidFile = "\(directory)/lingering.pid"
        let handler = try makeHandler(try script("sleep 300 & echo $! > '\(pidFile)'; echo done"))
        let started = ContinuousClock.now
        let outcome = await handler.handle(Self.input(properties: Self.rpc))
        if let lingering = Self.pid(in: pidFile) { kill(lingering, SIGKILL) }
        guard case .success(let output) = outcome else { Issue.record("expected success, got \(outcome)"); return }
        #expect(output.reply == Array("done\n".utf8))
        #expect(ContinuousClock.now - started < .seconds(150), "the run ended with its process, not with the pipe (held 300 s)")
    }

    @Test(arguments: RunThread.allCases) func cancellingTheRunKillsTheProcessGroup(on thread: RunThread) async throws {
        let pidFile = "\(directory)/cancelled.pid"
        let handler = try makeHandler(script("sleep 300 & echo $! > '\(pidFile)'; sleep 300"), grace: .milliseconds(500))
        let outcome = await withTaskGroup(of: HandlerOutcome?.self) { group in
            group.addTask { await Self.handle(handler, Self.input(timeout: .seconds(60)), on: thread) }
            group.addTask {
                _ = await Self.poll { Self.pid(in: pidFile) != nil }
                return nil
            }
            _ = await group.next()  // the pid file exists: the process group is running
            group.cancelAll()
            return await group.next() ?? nil
        }
        guard case .failure(let failure)? = outcome else { Issue.record("expected failure, got \(String(describing: outcome))"); return }
        #expect(!failure.isTimeout)
        #expect(failure.error.contains("cancelled"))
        let grandchild = try #require(Self.pid(in: pidFile))
        #expect(await Self.isGone(grandchild))
    }

    // MARK: stderr in the log

    @Test func stderrLinesAreLoggedWithTheMessageContextAndCapped() async throws {
        let records = CapturedLog()
        let logger = records.logger(label: "exec")
        let program = try script("""
            head -c 3000 /dev/zero | tr '\\0' y >&2; echo >&2
            i=1; while [ $i -le 59 ]; do echo "line $i" >&2; i=$((i+1)); done
            printf 'no newline at the end' >&2
            """)
        let handler = try makeHandler(program, logger: logger)
        let input = HandlerInput(
            queue: "orders", exchange: "", routingKey: "orders", redelivered: false, attempt: 3, properties: BasicProperties(messageID: "m-9"),
            body: [], deliveryTag: 42)
        _ = await handler.handle(input)
        let logged = records.all
        let lines = logged.filter { $0.message == "handler stderr" }
        #expect(lines.count == StderrCollector.maxLoggedLines)
        #expect(lines.allSatisfy { $0.level == .warning })
        let first = try #require(lines.first)
        #expect(first.metadata[LogKeys.queue] == "orders")
        #expect(first.metadata[LogKeys.handler] == "test")
        #expect(first.metadata[LogKeys.messageID] == "m-9")
        #expect(first.metadata[LogKeys.deliveryTag] == "42")
        #expect(first.metadata[LogKeys.attempt] == "3")
        #expect(first.metadata["line"] == String(repeating: "y", count: StderrCollector.maxLineBytes) + "…", "a long line is cut at 1 KiB")
        #expect(lines.last?.metadata["line"] == "line 49")
        let summary = try #require(logged.first { $0.message == "handler stderr suppressed" })
        #expect(summary.metadata["suppressed_lines"] == "11", "lines 50…59 and the unterminated last line")
        #expect(summary.metadata[LogKeys.messageID] == "m-9")
    }

    @Test func aHandlerWithoutStderrLogsNothing() async throws {
        let records = CapturedLog()
        let logger = records.logger(label: "exec")
        let outcome = try await makeHandler(script("cat >/dev/null; echo ok"), logger: logger).handle(Self.input(body: [1, 2, 3]))
        guard case .success = outcome else { Issue.record("expected success, got \(outcome)"); return }
        #expect(records.all.filter { $0.message.contains("stderr") }.isEmpty, "\(records.all.map(\.message))")
    }

    // MARK: resource hygiene

    @Test(arguments: RunThread.allCases) func aThousandRunsLeaveNoZombiesAndNoLeakedDescriptors(on thread: RunThread) async throws {
        // Each child notes its pid and the pipes it was given as 0, 1 and 2: other suites run
        // beside these (with children and descriptors of their own), so "reaped" and "closed"
        // are checked for these children's processes and pipes, not counted process-wide.
        // The pid first, with a builtin alone: a sleeper is killed 50 ms after it started.
        let pids = "\(directory)/pids"
        let pipes = "\(directory)/pipes"
        let note = "echo $$ >> \(pids); echo $(readlink /proc/$$/fd/0) $(readlink /proc/$$/fd/1) $(readlink /proc/$$/fd/2) >> \(pipes)"
        let worker = try makeHandler(script("\(note); cat >/dev/null; echo \"$WARREN_MESSAGE_ID\"; [ \"$WARREN_ATTEMPT\" = 1 ] || { echo bad >&2; exit 3; }"))
        let failing = try makeHandler(script("\(note); echo boom >&2; exit 3"))
        let missing = try makeHandler("\(directory)/missing-program")
        let sleeper = try makeHandler(script("\(note); sleep 300"), grace: .milliseconds(200))

        let total = 1000
        let handlers = (worker: worker, failing: failing, missing: missing, sleeper: sleeper)
        // A queue with concurrency = 8 has 8 blocking threads: its workers run on them (and
        // wait there), or hand their runs' waits to them.
        let threads = BlockingThreads(name: "exec-test", count: 8)
        defer { threads.stop() }
        let blocking: BlockingWait = thread == .worker ? .here : .on(threads)
        let failures = await withTaskGroup(of: Bool.self) { group in
            var started = 0
            var failures = 0
            func start() {
                let index = started
                group.addTask(executorPreference: thread == .worker ? threads : nil) {
                    await Self.runsAsScripted(index, handlers, blocking: blocking)
                }
                started += 1
            }
            // At most 8 at a time, as a queue with concurrency = 8 would run them.
            while started < 8 { start() }
            for await ok in group {
                if !ok { failures += 1 }
                if started < total { start() }
            }
            return failures
        }
        #expect(failures == 0, "every run ended as its script says")
        let ours = Set(((try? String(contentsOfFile: pids, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { pid_t($0) })
        let noted = ((try? String(contentsOfFile: pipes, encoding: .utf8)) ?? "").split(whereSeparator: { $0 == " " || $0 == "\n" })
        let theirPipes = Set(noted.filter { $0.hasPrefix("pipe:") }.map(String.init))
        // Every child noted its pid but the sleepers', which may be killed (50 ms in) first.
        #expect(ours.count >= total - 2 * total / 100, "the children noted their pids")
        #expect(theirPipes.count >= ours.count, "the children noted their pipes")
        #expect(Self.zombieChildren().filter(ours.contains).isEmpty, "every child was reaped")
        // Warren's ends of a run's pipes, and its pidfd, are closed when the run ends.
        let held = Self.descriptorsHeld(pipes: theirPipes, pidfdsOf: ours)
        #expect(held.isEmpty, "\(held.count) descriptors still open for these runs' children, such as \(held.prefix(5))")
    }

    /// One run of the mix above; true when it ended as its script says.
    static func runsAsScripted(
        _ index: Int, _ handlers: (worker: ExecHandler, failing: ExecHandler, missing: ExecHandler, sleeper: ExecHandler),
        blocking: BlockingWait
    ) async -> Bool {
        func placed(_ input: HandlerInput) -> HandlerInput {
            var input = input
            input.blocking = blocking
            return input
        }
        switch index % 100 {
        case 1:
            if case .failure(let failure) = await handlers.failing.handle(placed(input())) { return failure.exitCode == 3 }
        case 2:
            if case .failure(let failure) = await handlers.missing.handle(placed(input())) { return failure.error.hasPrefix("cannot start") }
        case 3:
            if case .failure(let failure) = await handlers.sleeper.handle(placed(input(timeout: .milliseconds(50)))) { return failure.isTimeout }
        default:
            let id = "m-\(index)"
            let outcome = await handlers.worker.handle(placed(input(body: Array(repeating: 7, count: index), properties: BasicProperties(replyTo: "replies", messageID: AMQPString(id)))))
            if case .success(let output) = outcome { return output.reply == Array("\(id)\n".utf8) }
        }
        return false
    }

    // MARK: process helpers

    static func pid(in file: String) -> pid_t? {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        return pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Dead: no such process, or a zombie waiting for its (new) parent, init, to reap it.
    static func isGone(_ pid: pid_t) async -> Bool {
        await poll {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
            return stat.split(separator: ")").last?.split(separator: " ").first == "Z"
        }
    }

    /// Polls `condition` every 20 ms for up to 5 s (for states no event announces).
    static func poll(_ condition: @Sendable () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return condition()
    }

    /// This process's descriptors that are one of `pipes` (as `readlink` names them:
    /// "pipe:[inode]") or a pidfd of one of `pidfdsOf`, each as "fd -> what".
    static func descriptorsHeld(pipes: Set<String>, pidfdsOf pids: Set<pid_t>) -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return entries.compactMap { entry -> String? in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(entry)") else { return nil }
            if pipes.contains(target) { return "\(entry) -> \(target)" }
            guard target == "anon_inode:[pidfd]",
                let info = try? String(contentsOfFile: "/proc/self/fdinfo/\(entry)", encoding: .utf8),
                let line = info.split(separator: "\n").first(where: { $0.hasPrefix("Pid:") }),
                let pid = pid_t(line.dropFirst(4).trimmingCharacters(in: .whitespaces)), pids.contains(pid)
            else { return nil }
            return "\(entry) -> pidfd of \(pid)"
        }
    }

    /// Our children in state Z: exited but never reaped.
    static func zombieChildren() -> [pid_t] {
        let me = getpid()
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { entry -> pid_t? in
            guard let pid = pid_t(entry), let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return nil }
            // "pid (comm) state ppid ...": comm may hold spaces, so read after the last ')'.
            let fields = stat.split(separator: ")").last?.split(separator: " ") ?? []
            guard fields.count > 1, fields[0] == "Z", pid_t(fields[1]) == me else { return nil }
            return pid
        }
    }
}
