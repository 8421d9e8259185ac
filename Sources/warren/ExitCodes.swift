import ArgumentParser
import WarrenCore

/// The exit statuses of every subcommand, sysexits.h values (systemd's
/// `RestartPreventExitStatus=78` relies on 78 meaning "the configuration is wrong, restarting
/// will not help"). `docs/cli-exit-codes.md` is the table for operators.
enum WarrenExit {
    static let ok = ExitCode(0)
    /// A result, not an error: `publish` had messages that were not confirmed; a second SIGTERM
    /// or SIGINT stopped `run` without waiting.
    static let failure = ExitCode(1)
    static let usage = ExitCode(64)
    /// The broker cannot be reached, or refuses for reasons of its own: worth retrying later.
    static let unavailable = ExitCode(69)
    /// An internal error: a bug or a state warren did not expect. Never a configuration problem.
    static let software = ExitCode(70)
    /// The configuration is wrong: the file, or the live broker contradicting it.
    static let config = ExitCode(78)

    /// The status of `run` once its engine has stopped by itself, nil after a requested stop.
    static func status(after outcome: Engine.Outcome) -> ExitCode? {
        switch outcome {
        case .stopped: nil
        case .handlersRejected, .topologyRejected, .dedupStoreUnavailable: config
        }
    }

    /// How `main` ends after a command threw `error`.
    enum Ending: Equatable {
        /// An exit status chosen on purpose, or the argument parser's own answer (help, 0;
        /// bad usage, 64): ArgumentParser prints and exits as usual.
        case asThrown
        /// Anything else reached the top without being handled: exit 70 after printing it.
        case internalError
    }

    static func ending(for error: any Error) -> Ending {
        if error is ExitCode { return .asThrown }
        // ArgumentParser answers `.failure` (1) for every error it does not know; help, version
        // and parse or validation errors get their own status.
        return Warren.exitCode(for: error) == .failure ? .internalError : .asThrown
    }
}
