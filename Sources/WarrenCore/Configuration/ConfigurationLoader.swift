import Foundation
import TOMLKit

/// Loads `warren.toml`: syntax (TOMLKit), schema and defaults, then the cross-section and
/// machine checks, collecting every problem before giving up.
public enum ConfigurationLoader {
    /// The default path when neither `--config` nor `$WARREN_CONFIG` says otherwise.
    public static let defaultPath = "/etc/warren/warren.toml"

    public static func load(
        path: String, environment: [String: String] = ProcessInfo.processInfo.environment, checks: FileChecks = .live
    ) throws(ConfigError) -> Configuration {
        let source: String
        do {
            source = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            let reason = FileManager.default.fileExists(atPath: path) ? "cannot be read (permissions, or not UTF-8)" : "does not exist"
            throw ConfigError(issues: [
                ConfigIssue(file: path, position: SourcePosition(line: 1, column: 1), path: "", message: "the configuration file \(reason)")
            ])
        }
        return try parse(source: source, file: path, environment: environment, checks: checks)
    }

    public static func parse(
        source: String, file: String, environment: [String: String] = ProcessInfo.processInfo.environment,
        checks: FileChecks = .live
    ) throws(ConfigError) -> Configuration {
        let decoder = ConfigDecoder(file: file, source: source, environment: environment)
        if let (position, message) = TOMLPreflight.hazard(in: source) {
            decoder.reportFile(position, message)
            throw ConfigError(issues: decoder.issues)
        }
        let table: TOMLTable
        do {
            table = try TOMLTable(string: source)
        } catch let error as TOMLParseError {
            decoder.reportFile(
                SourcePosition(line: max(1, error.source.begin.line), column: max(1, error.source.begin.column)),
                "syntax error: \(error.description)")
            throw ConfigError(issues: decoder.issues)
        } catch {
            decoder.reportFile(SourcePosition(line: 1, column: 1), "syntax error: \(error)")
            throw ConfigError(issues: decoder.issues)
        }
        let root = TableReader(decoder, ConfigNode(table), at: [])
        var configuration = root.map { ConfigurationDecoding(d: decoder).decode($0) }
        if var decoded = configuration {
            // Runs even after schema problems, so one pass reports everything; it stays quiet
            // about values that already have a problem of their own.
            ConfigurationValidation(d: decoder, checks: checks).validate(&decoded)
            configuration = decoded
        }
        guard let configuration, decoder.issues.isEmpty else {
            let sorted = decoder.issues.sorted {
                ($0.position.line, $0.position.column) < ($1.position.line, $1.position.column)
            }
            throw ConfigError(issues: sorted)
        }
        return configuration
    }
}
