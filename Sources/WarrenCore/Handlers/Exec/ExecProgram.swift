import Glibc

/// The configured program of an `exec` handler, resolved once when the handler is built: the
/// executable, its argv (never through a shell), its working directory and the grace every
/// run shares.
struct ExecProgram: Sendable {
    /// `command[0]` as configured; argv[0] of the process, and the name in error texts.
    let name: String
    /// The file that runs: `name` itself, or where it was found on PATH; nil if not found.
    let path: String?
    /// `command`, as the process's argv.
    let arguments: CStringBlock
    let workingDirectory: String?
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
        // found, and a PATH walk per run is pure overhead. A name not found now stays unfound,
        // so each run reports it clearly instead of warren refusing to start.
        path = program.contains("/") ? program : Self.lookUp(program, in: searchPath)
        arguments = CStringBlock(command)
        self.workingDirectory = workingDirectory
        self.grace = grace
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

    /// Why the program could not be started, in words an operator can act on. posix_spawn
    /// reports a failed chdir and a failed exec alike (ENOENT, EACCES), so the directory and
    /// the file are looked at again (a few metadata calls, on this failure path only).
    func launchFailure(_ error: Int32) -> String {
        guard let path else { return "cannot start \(name): not found on PATH" }
        if let workingDirectory, let reason = Self.unusableDirectory(workingDirectory) {
            return "cannot start \(name): working directory \(workingDirectory): \(reason)"
        }
        guard error == ENOENT || error == EACCES else { return "cannot start \(path): \(Self.text(error))" }
        var status = stat()
        if stat(path, &status) != 0 { return "cannot start \(path): \(Self.text(errno))" }
        if status.st_mode & S_IFMT != S_IFREG { return "cannot start \(path): not a regular file" }
        if access(path, X_OK) != 0 { return "cannot start \(path): \(Self.text(errno))" }
        // The file is there and executable, yet exec said ENOENT: its interpreter is not.
        if error == ENOENT { return "cannot start \(path): \(Self.text(ENOENT)) (is its #! interpreter missing?)" }
        return "cannot start \(path): \(Self.text(error))"
    }

    /// Why `directory` cannot be a working directory, or nil if it can.
    private static func unusableDirectory(_ directory: String) -> String? {
        var status = stat()
        if stat(directory, &status) != 0 { return text(errno) }
        if status.st_mode & S_IFMT != S_IFDIR { return text(ENOTDIR) }
        if access(directory, X_OK) != 0 { return text(errno) }
        return nil
    }

    private static func text(_ code: Int32) -> String {
        String(cString: strerror(code))
    }
}
