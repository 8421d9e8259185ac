import ArgumentParser

/// SPEC §2 exit codes (sysexits.h values, which systemd's RestartPreventExitStatus=78 relies on).
enum WarrenExit {
    static let ok = ExitCode(0)
    static let failure = ExitCode(1)
    static let usage = ExitCode(64)
    static let unavailable = ExitCode(69)
    static let software = ExitCode(70)
    static let config = ExitCode(78)
}
