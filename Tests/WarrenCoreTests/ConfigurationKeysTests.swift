import Foundation
import Testing

@testable import WarrenCore

/// The decoder, `docs/configuration.md` and `config/warren.reference.toml` name the same keys.
///
/// The decoder's keys are the ones its getters ask for (`ConfigDecoder.keyRecorder`) while it
/// reads `everyTable`, a file that opens every table and holds one handler of every kind: a
/// getter runs whether or not its key is set, so a key added to the decoder shows up here without
/// touching this test. A new table or handler kind must be added to `everyTable` (the kinds are
/// checked against `HandlerKind.names`; a new top-level table already shows up as a root key).
///
/// Keys are compared per table pattern: indexes dropped (`queues.bindings`), handler names
/// written `handlers.NAME`, and the keys a handler of one kind reads and not every kind reads
/// under `handlers.NAME:<kind>`.
@Suite("Configuration keys: decoder, docs and reference file in step")
struct ConfigurationKeysTests {
    /// Opens every table the decoder reads; values are only what decoding requires.
    static let everyTable = """
        [broker]
        urls = ["amqps://guest:guest@localhost:5671/"]

        [broker.tls]
        ca_file = "/etc/warren/ca.pem"

        [publisher]
        [defaults]
        [log]
        [metrics]
        listen = "127.0.0.1:9419"
        [dedup]
        [state]
        [control]
        [tracing]

        [[exchanges]]
        name = "orders"

        [[queues]]
        name = "one-handler"
        handler = "h-exec"

        [[queues.bindings]]
        exchange = "orders"

        [queues.retry]
        [queues.dead_letter]

        [[queues]]
        name = "routed"
        routes = [{ match = { type = "T" }, handlers = ["h-pipe", "h-http", "h-plugin", "h-noop", "h-log", "h-file", "h-republish"] }]

        [handlers.h-exec]
        kind = "exec"
        command = ["/bin/true"]

        [handlers.h-pipe]
        kind = "pipe"
        command = ["/bin/cat"]

        [handlers.h-http]
        kind = "http"
        url = "http://127.0.0.1:8080/"

        [handlers.h-plugin]
        kind = "plugin"
        library = "/usr/lib/warren/plugins/libp.so"

        [handlers.h-noop]
        kind = "noop"

        [handlers.h-log]
        kind = "log"

        [handlers.h-file]
        kind = "file"
        path = "/tmp/out.jsonl"

        [handlers.h-republish]
        kind = "republish"
        """

    struct Key: Hashable, Comparable, CustomStringConvertible {
        var table: String
        var key: String
        var description: String { "[\(table)] \(key)" }
        static func < (a: Key, b: Key) -> Bool { (a.table, a.key) < (b.table, b.key) }
    }

    /// The keys the decoder's getters ask for, and the keys every handler kind reads.
    struct Schema {
        var keys: Set<Key>
        var commonHandlerKeys: Set<String>
        var tables: Set<String> { Set(keys.map(\.table)).union([""]) }
    }

    static func decoderSchema() throws -> Schema {
        let decoder = ConfigDecoder(file: "every-table.toml", source: everyTable, environment: [:])
        var recorded: [([ConfigPathComponent], String)] = []
        decoder.keyRecorder = { recorded.append(($0, $1)) }
        let root = TableReader(decoder, try ConfigNode(document: everyTable), at: [])
        let configuration = try #require(root.map { ConfigurationDecoding(d: decoder).decode($0) })
        #expect(decoder.issues.isEmpty, "the fixture decodes cleanly: \(decoder.issues.map(\.description))")
        let kinds = Dictionary(configuration.handlers.map { ($0.name, $0.kind.name) }, uniquingKeysWith: { a, _ in a })
        #expect(Set(kinds.values) == Set(HandlerKind.names), "the fixture holds one handler of every kind")

        var plain: Set<Key> = []
        var byKind: [String: Set<String>] = [:]
        for (path, key) in recorded {
            let names = path.compactMap { component -> String? in
                if case .key(let name) = component { return name }
                return nil
            }
            if names == ["handlers"] { continue }  // handler names, not keys
            if names.count == 2, names[0] == "handlers" {
                let kind = try #require(kinds[names[1]], "handler \(names[1]) decoded")
                byKind[kind, default: []].insert(key)
            } else {
                plain.insert(Key(table: names.joined(separator: "."), key: key))
            }
        }
        let common = byKind.values.reduce(into: byKind.values.first ?? []) { $0.formIntersection($1) }
        for (kind, keys) in byKind {
            for key in keys {
                plain.insert(common.contains(key) ? Key(table: "handlers.NAME", key: key) : Key(table: "handlers.NAME:\(kind)", key: key))
            }
        }
        return Schema(keys: plain, commonHandlerKeys: common)
    }

    // MARK: docs/configuration.md

    static var docsPath: String {
        RepositoryConfigs.directory.deletingLastPathComponent().appendingPathComponent("docs/configuration.md").path
    }

    /// The keys of every `| key | type | default | meaning |` table, under the TOML table its
    /// heading names in backticks (`[broker.tls]`, `[[queues]]`, `[handlers.NAME]` with
    /// `kind = "exec"`), or the root under a heading that says "Top level".
    static func documentedKeys(_ text: String) -> (keys: Set<Key>, problems: [String]) {
        var keys: Set<Key> = []
        var problems: [String] = []
        var table: String?
        var headings: Set<String> = []
        var inKeysTable = false
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("#") {
                table = tablePattern(inHeading: trimmed)
                if let table, !headings.insert(table).inserted { problems.append("line \(number + 1): table \(table) documented twice") }
                inKeysTable = false
                continue
            }
            guard trimmed.hasPrefix("|") else {
                inKeysTable = false
                continue
            }
            let cells = trimmed.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            if cells.first == "key", cells.count == 4, cells[1] == "type", cells[2] == "default", cells[3] == "meaning" {
                inKeysTable = true
                if table == nil { problems.append("line \(number + 1): a keys table under a heading that names no TOML table") }
                continue
            }
            guard inKeysTable, let table, let first = cells.first, first.hasPrefix("`") else { continue }
            let key = first.dropFirst().prefix { $0 != "`" }
            if !keys.insert(Key(table: table, key: String(key))).inserted {
                problems.append("line \(number + 1): \(key) documented twice in [\(table)]")
            }
        }
        return (keys, problems)
    }

    static func tablePattern(inHeading heading: String) -> String? {
        if heading.contains("Top level") { return "" }
        for token in heading.split(separator: "`").enumerated().filter({ $0.offset % 2 == 1 }).map(\.element) {
            guard token.hasPrefix("[") else { continue }
            var name = token.drop { $0 == "[" }
            while name.last == "]" { name = name.dropLast() }
            guard let kindRange = heading.range(of: "kind = \"") else { return String(name) }
            let kind = heading[kindRange.upperBound...].prefix { $0 != "\"" }
            return "\(name):\(kind)"
        }
        return nil
    }

    @Test func everyDecoderKeyIsDocumentedAndEveryDocumentedKeyIsDecoded() throws {
        let schema = try Self.decoderSchema()
        let (documented, problems) = Self.documentedKeys(try String(contentsOfFile: Self.docsPath, encoding: .utf8))
        #expect(problems.isEmpty, "\(problems)")
        let undocumented = schema.keys.subtracting(documented).sorted()
        let unknown = documented.subtracting(schema.keys).sorted()
        #expect(undocumented.isEmpty, "keys the decoder reads that docs/configuration.md does not list: \(undocumented)")
        #expect(unknown.isEmpty, "keys docs/configuration.md lists that the decoder does not read: \(unknown)")
    }

    // MARK: config/warren.reference.toml

    /// The reference with its commented-out entries (`# key = ...`, `# [table]`) switched on.
    static func uncommentedReference() throws -> String {
        let text = try String(contentsOfFile: RepositoryConfigs.referencePath, encoding: .utf8)
        let entry = /^#\s*((\[.*\])|([A-Za-z0-9_-]+\s*=.*))$/
        return text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            if let match = String(line).wholeMatch(of: entry) { return String(match.output.1) }
            return String(line)
        }.joined(separator: "\n")
    }

    /// Every key the file sets, in the tables the decoder reads (free-form tables such as
    /// `arguments`, `env` or `headers` are values, not schema).
    static func keys(in node: ConfigNode, table: String, schema: Schema) -> Set<Key> {
        guard case .table(let entries) = node else { return [] }
        var keys: Set<Key> = []
        for (key, child) in entries {
            if table == "handlers" {
                guard case .table(let handler) = child else { continue }
                let kind: String
                if case .string(let name)? = handler["kind"] { kind = name } else { kind = "?" }
                for name in handler.keys {
                    keys.insert(schema.commonHandlerKeys.contains(name) ? Key(table: "handlers.NAME", key: name) : Key(table: "handlers.NAME:\(kind)", key: name))
                }
                continue
            }
            keys.insert(Key(table: table, key: key))
            let path = table.isEmpty ? key : "\(table).\(key)"
            guard path == "handlers" || schema.tables.contains(path) else { continue }
            switch child {
            case .table: keys.formUnion(Self.keys(in: child, table: path, schema: schema))
            case .array(let elements): for element in elements { keys.formUnion(Self.keys(in: element, table: path, schema: schema)) }
            default: break
            }
        }
        return keys
    }

    @Test func referenceConfigHoldsEveryDecoderKeyAndNoOther() throws {
        let schema = try Self.decoderSchema()
        let source = try Self.uncommentedReference()
        let present = Self.keys(in: try ConfigNode(document: source), table: "", schema: schema)
        let missing = schema.keys.subtracting(present).sorted()
        let unknown = present.subtracting(schema.keys).sorted()
        #expect(missing.isEmpty, "keys the decoder reads that config/warren.reference.toml does not show (even commented out): \(missing)")
        #expect(unknown.isEmpty, "keys config/warren.reference.toml sets that the decoder does not read: \(unknown)")
        // The decoder's own check agrees: no unknown key in the uncommented file. (It may have
        // other problems: `url` and `urls` are alternatives, both shown.)
        let accepting = FileChecks(
            isReadableFile: { _ in true }, isExecutableFile: { _ in true }, isDirectory: { _ in true }, readText: { _ in "secret" },
            pluginProblem: { _ in nil })
        var issues: [ConfigIssue] = []
        do {
            _ = try ConfigurationLoader.parse(source: source, file: "reference", environment: [:], checks: accepting)
        } catch {
            issues = error.issues
        }
        let unknownKeys = issues.filter { $0.message.hasPrefix("unknown key") }
        #expect(unknownKeys.isEmpty, "\(unknownKeys.map(\.description))")
    }

    /// The docs parser takes a key under the table its heading names, and the schema holds
    /// keys a short page lacks: the comparison above has something to fail on.
    @Test func documentedKeysAreReadUnderTheirTableHeading() throws {
        let schema = try Self.decoderSchema()
        let (documented, _) = Self.documentedKeys("""
            ## `[publisher]`
            | key | type | default | meaning |
            |---|---|---|---|
            | `confirm_timeout` | duration | `"5s"` | x |
            """)
        #expect(documented == [Key(table: "publisher", key: "confirm_timeout")])
        #expect(schema.keys.contains(Key(table: "publisher", key: "mandatory")))
        #expect(!schema.keys.subtracting(documented).isEmpty)
        #expect(schema.keys.contains(Key(table: "handlers.NAME:exec", key: "command")))
        #expect(schema.commonHandlerKeys == ["kind", "timeout"])
    }

    // MARK: docs/man/warren.toml.5

    /// The words set in bold on the manual page's request lines (`.B key`, `.BR a ", " b`,
    /// `.RB { a ", " b }`), where it names keys, and in its section headings (`.SH "[broker]"`),
    /// where it names tables.
    static func boldWords(inManualPage text: String) -> Set<String> {
        var words: Set<String> = []
        for line in text.split(separator: "\n") where [".B ", ".BR ", ".RB ", ".SH "].contains(where: { line.hasPrefix($0) }) {
            for word in line.dropFirst(3).split(whereSeparator: { !($0.isLetter || $0.isNumber || $0 == "_") }) {
                words.insert(String(word))
            }
        }
        return words
    }

    @Test func theManualPageNamesEveryKeyTheDecoderReads() throws {
        let schema = try Self.decoderSchema()
        let path = RepositoryConfigs.directory.deletingLastPathComponent().appendingPathComponent("docs/man/warren.toml.5").path
        let named = Self.boldWords(inManualPage: try String(contentsOfFile: path, encoding: .utf8))
        let missing = Set(schema.keys.map(\.key)).subtracting(named).sorted()
        #expect(missing.isEmpty, "keys the decoder reads that warren.toml(5) does not name in bold: \(missing)")
    }

}
