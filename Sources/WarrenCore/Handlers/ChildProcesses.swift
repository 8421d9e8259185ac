import Glibc

/// What every handler kind that runs child processes (exec, pipe) needs of warren's process.
enum ChildProcesses {
    /// Writing to the stdin of a child that has exited, or closed stdin without reading, raises
    /// SIGPIPE, whose default action would kill warren. It is ignored process-wide, once; the
    /// write then fails with EPIPE, which both kinds handle. Harmless elsewhere: warren's
    /// sockets use MSG_NOSIGNAL anyway, and swift-subprocess resets every signal disposition to
    /// the default in the processes it starts.
    static let ignoreSIGPIPE: Void = {
        _ = signal(SIGPIPE, SIG_IGN)
    }()
}
