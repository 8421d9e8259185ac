import ArgumentParser
import Foundation
import WarrenCore

/// `--config PATH`, defaulting to `$WARREN_CONFIG`, then /etc/warren/warren.toml.
struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The configuration file (default: $WARREN_CONFIG, else /etc/warren/warren.toml).", valueName: "path"))
    var config: String?

    var path: String {
        config ?? ProcessInfo.processInfo.environment["WARREN_CONFIG"] ?? ConfigurationLoader.defaultPath
    }

    /// Loads the file, or prints every problem to stderr and exits 78.
    func load() throws -> Configuration {
        do {
            return try ConfigurationLoader.load(path: path)
        } catch {
            printError(error.description)
            let count = error.issues.count
            printError("\(path): \(count) problem\(count == 1 ? "" : "s"); nothing was started")
            throw WarrenExit.config
        }
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
