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
        version: WarrenVersion.current,
        subcommands: [Run.self, Check.self, Publish.self, Version.self])

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
    static let configuration = CommandConfiguration(abstract: "Print Warren's version and librabbitmq's.")

    func run() {
        print("warren \(WarrenVersion.current)")
        print("librabbitmq \(LibRabbitMQ.version)")
    }
}
