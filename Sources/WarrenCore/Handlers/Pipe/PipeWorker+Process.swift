import Foundation
import Glibc
import Subprocess

// How a worker process is started and how its end is put into words.

extension PipeWorker {
    /// The variables of warren's own environment that `inherit_env` lets through, then
    /// `WARREN_HANDLER` / `WARREN_WORKER` (so a worker can tell which instance it is), then the
    /// handler's `env`, which wins.
    func environment() -> Environment {
        var values: [Environment.Key: String] = [:]
        let inherited = settings.inheritedEnvironment ?? ProcessInfo.processInfo.environment
        for (name, value) in settings.inherit.filter(inherited) {
            if let key = Environment.Key(rawValue: name) { values[key] = value }
        }
        for (name, value) in [("WARREN_HANDLER", settings.handler), ("WARREN_WORKER", "\(index)")] {
            if let key = Environment.Key(rawValue: name) { values[key] = value }
        }
        for (name, value) in settings.environment {
            if let key = Environment.Key(rawValue: name) { values[key] = value }
        }
        return .custom(values)
    }

    /// A session (and so a process group) of its own. At shutdown, once the body has returned,
    /// swift-subprocess closes stdin; the teardown then waits out the grace period (the null
    /// signal only checks that the group still exists), sends SIGTERM to the group, and ends
    /// with SIGKILL to the group.
    func platformOptions() -> PlatformOptions {
        var options = PlatformOptions()
        options.createSession = true
        options.teardownSequence = [
            .send(signal: Signal(rawValue: 0), toProcessGroup: true, allowedDurationToNextStep: settings.shutdownGrace),
            .gracefulShutDown(toProcessGroup: true, allowedDurationToNextStep: settings.terminateGrace),
        ]
        return options
    }

    /// The failure every in-flight request of an ended worker gets.
    static func failure(for ending: Ending, status: TerminationStatus) -> HandlerFailure {
        switch ending {
        case .closed(_, exitedByItself: true):
            return exitFailure(status)
        case .closed(let stream, exitedByItself: false):
            return HandlerFailure("pipe worker closed its \(stream.rawValue)")
        case .invalidResponse(let detail):
            return HandlerFailure("pipe worker sent an invalid response: \(detail)")
        case .stopped(let reason):
            return HandlerFailure(reason)
        case .shutdown:
            return HandlerFailure("pipe worker stopped: the handler is stopping")
        }
    }

    static func exitFailure(_ status: TerminationStatus) -> HandlerFailure {
        switch status {
        case .exited(let code):
            return HandlerFailure("pipe worker exited with code \(code)", exitCode: code)
        case .signaled(let number):
            let name = SignalName.of(number)
            return HandlerFailure("pipe worker killed by \(name)", signal: name)
        }
    }

    /// Polls (every 5 ms) whether child `pid` has exited, without reaping it: swift-subprocess
    /// reaps it and reports the status. There is no event to await here that would not consume
    /// the status first.
    static func waitForExit(_ pid: pid_t, upTo limit: Duration) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while true {
            var info = siginfo_t()
            let rc = waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT)
            // With WNOHANG, a child that has not changed state leaves `info` zeroed.
            if rc == 0, info.si_signo != 0 { return true }
            if rc != 0, errno != EINTR { return false }
            guard ContinuousClock.now < deadline else { return false }
            do {
                try await Task.sleep(for: .milliseconds(5))
            } catch {
                return false
            }
        }
    }
}
