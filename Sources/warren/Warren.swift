import AMQP
import ArgumentParser
import Foundation
import WarrenCore

/// The `warren` command line. Thin: parsing, bootstrap and signal wiring only; the work lives
/// in WarrenCore.
@main
struct Warren: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "warren",
        abstract: "A RabbitMQ consumer daemon: queues and handlers declared in one TOML file.",
        // Also the DESCRIPTION of the warren(1) manual page, which is generated from this
        // definition (scripts/install.sh, MANUAL=1): say here what a reader of the page needs.
        discussion: """
            Warren consumes the queues declared in its configuration file and runs a handler for \
            every message: a process per message, long-lived worker processes, an HTTP request, \
            a shared library loaded in process, or a built-in. By default a message is \
            acknowledged once its handler succeeds; failures are retried through delay queues \
            and then dead-lettered.

            The configuration file is --config, else $WARREN_CONFIG, else \
            /etc/warren/warren.toml. Its format is described in warren.toml(5); \
            warren.reference.toml, installed with the documentation (/usr/share/doc/warren from \
            the Debian package), lists every key with its default.

            Exit statuses follow sysexits.h: 64 bad usage, 69 broker unavailable (for `ctl`: its socket), 70 internal \
            error, 78 configuration error (systemd does not restart after 78); `publish` exits \
            1 when a message was not confirmed, `ctl` when warren answers with an error.
            """,
        version: WarrenVersion.current,
        subcommands: [Run.self, Check.self, Publish.self, DeadLetters.self, Ctl.self, Version.self])

    /// ArgumentParser's own `main`, except that an error nothing handled exits 70 (EX_SOFTWARE)
    /// rather than 1, which `publish` uses for unconfirmed messages.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            switch WarrenExit.ending(for: error) {
            case .asThrown:
                exit(withError: error)
            case .internalError:
                printError("warren: internal error: \(String(reflecting: error))")
                exit(withError: WarrenExit.software)
            }
        }
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print Warren's version, the commit it was built from, and librabbitmq's version.")

    func run() {
        print("warren \(WarrenVersion.description)")
        print("librabbitmq \(LibRabbitMQ.version)")
    }
}
