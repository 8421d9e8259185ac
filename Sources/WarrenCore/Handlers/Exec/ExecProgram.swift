import Glibc
import Subprocess
import SystemPackage

/// The configured program of an `exec` handler, resolved once when the handler is built: the
/// executable, its argv (never through a shell), its working directory and the spawn options
/// every run shares.
struct ExecProgram: Sendable {
    /// `command[0]` as configured; argv[0] of the process, and the name in error texts.
    let name: String
    /// The file that runs: `name` itself, or where it was found on PATH; nil if not found.
    let path: String?
    let executable: Executable
    let arguments: Arguments
    let workingDirectory: FilePath?
    let platformOptions: PlatformOptions
    /// Between SIGTERM and SIGKILL to the process group when a run is stopped.
    let grace: Duration

    /// - Parameters:
    ///   - searchPath: where a bare program name is looked up (the `PATH` the process gets).
    ///   - grace: how long a process group has between SIGTERM and SIGKILL.
    init(command: [String], workingDirectory: String?, searchPath: String, grace: Duration) {
        precondition(!command.isEmpty, "an exec command has at least the program (the configuration refuses an empty one)")
        let program = command[0]
        name = program
        // Looked up once, not per message: `warren check` already required the program to be
        // found, and a PATH walk per run is pure overhead. A name not found now stays a name, so
        // each run reports it clearly instead of warren refusing to start.
        path = program.contains("/") ? program : Self.lookUp(program, in: searchPath)
        executable = path.map { .path(FilePath($0)) } ?? .name(program)
        arguments = Arguments(executablePathOverride: program, remainingValues: Array(command.dropFirst()))
        self.workingDirectory = workingDirectory.map { FilePath($0) }

        self.grace = grace
        var options = PlatformOptions()
        // Its own process group (pgid = its pid), so stopping a run reaches everything the
        // handler started. The teardown is what the library does when the run's task is
        // cancelled (warren stopping); a timeout is enforced by ExecProcess with the same steps.
        options.processGroupID = 0
        options.teardownSequence = [.send(signal: .terminate, toProcessGroup: true, allowedDurationToNextStep: grace)]
        platformOptions = options
    }

    /// The first executable regular file named `program` in `searchPath`, as execvp would find it.
    static func lookUp(_ program: String, in searchPath: String) -> String? {
        for directory in searchPath.split(separator: ":", omittingEmptySubsequences: true) where directory.hasPrefix("/") {
            let candidate = "\(directory)/\(program)"
            var status = stat()
            guard access(candidate, X_OK) == 0, stat(candidate, &status) == 0, status.st_mode & S_IFMT == S_IFREG else { continue }
            return candidate
        }
        return nil
    }

    /// Why the program could not be started, in words an operator can act on. The process
    /// library reports ENOENT and EACCES alike as "not found", so the file is looked at again
    /// (two metadata calls, on this failure path only; the spawn itself did more).
    func launchFailure(_ error: any Error) -> String {
        guard let error = error as? SubprocessError else { return "cannot start \(name): \(error)" }
        switch error.code {
        case .executableNotFound:
            guard let path else { return "cannot start \(name): not found on PATH" }
            var status = stat()
            if stat(path, &status) != 0 { return "cannot start \(path): \(Self.text(errno))" }
            if status.st_mode & S_IFMT != S_IFREG { return "cannot start \(path): not a regular file" }
            if access(path, X_OK) != 0 { return "cannot start \(path): \(Self.text(errno))" }
            // The file is there and executable, yet exec said ENOENT: its interpreter is not.
            return "cannot start \(path): \(Self.text(ENOENT)) (is its #! interpreter missing?)"
        case .failedToChangeWorkingDirectory:
            let reason = error.underlyingError.map { Self.text($0.rawValue) } ?? "unusable"
            return "cannot start \(name): working directory \(workingDirectory?.string ?? "?"): \(reason)"
        case .spawnFailed:
            if let underlying = error.underlyingError { return "cannot start \(name): \(Self.text(underlying.rawValue))" }
            return "cannot start \(name): \(error)"
        default:
            return "cannot run \(name): \(error)"
        }
    }

    private static func text(_ code: Int32) -> String {
        String(cString: strerror(code))
    }
}
