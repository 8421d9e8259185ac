import AMQP
import ArgumentParser
import WarrenCore

/// The `warren` command line (SPEC §2). Thin: parsing, bootstrap and signal wiring only; the
/// work lives in WarrenCore.
@main
struct Warren: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "warren",
        abstract: "A RabbitMQ consumer daemon: queues and handlers declared in one TOML file.",
        version: WarrenVersion.current,
        subcommands: [Run.self, Check.self, Publish.self, Version.self])
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print Warren's version and librabbitmq's.")

    func run() {
        print("warren \(WarrenVersion.current)")
        print("librabbitmq \(LibRabbitMQ.version)")
    }
}
