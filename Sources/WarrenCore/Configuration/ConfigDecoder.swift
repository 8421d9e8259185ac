import AMQP

/// Collects every problem of one configuration file while it is being read, with positions.
/// Reading never stops at the first problem: each getter reports and returns `nil`, and the
/// caller carries on with defaults so that later problems are found in the same pass.
final class ConfigDecoder {
    let file: String
    let locator: SourceLocator
    let environment: [String: String]
    private(set) var issues: [ConfigIssue] = []
    /// Test-only: told of every key a getter asks for, with the path of its table, so a test can
    /// list the schema the getters define. `nil` (one branch per key) outside tests.
    var keyRecorder: ((_ table: [ConfigPathComponent], _ key: String) -> Void)?

    init(file: String, source: String, environment: [String: String]) {
        self.file = file
        self.locator = SourceLocator(source: source)
        self.environment = environment
    }

    /// A problem with the value at `path` (positioned at the value when known).
    func report(_ path: [ConfigPathComponent], _ message: String) {
        let position = locator.valuePosition(of: path) ?? locator.nearestPosition(of: path)
        issues.append(ConfigIssue(file: file, position: position, path: ConfigPath.render(path), message: message))
    }

    /// A problem with the key at `path` itself (unknown key, duplicate entry).
    func reportKey(_ path: [ConfigPathComponent], _ message: String) {
        issues.append(ConfigIssue(file: file, position: locator.nearestPosition(of: path), path: ConfigPath.render(path), message: message))
    }

    /// Whether a problem was already reported at `path` or below it: validation stays quiet
    /// about values that are only wrong because an earlier problem left them at a default.
    func hasIssue(under path: [ConfigPathComponent]) -> Bool {
        let prefix = ConfigPath.render(path)
        return issues.contains { $0.path == prefix || $0.path.hasPrefix(prefix + ".") || $0.path.hasPrefix(prefix + "[") }
    }

    func reportFile(_ position: SourcePosition, _ message: String) {
        issues.append(ConfigIssue(file: file, position: position, path: "", message: message))
    }

    /// `${NAME}` is replaced by the environment variable; `$${` is a literal `${`.
    func interpolate(_ text: String, at path: [ConfigPathComponent]) -> String? {
        guard text.contains("${") else { return text }
        var result = ""
        var rest = Substring(text)
        var ok = true
        while let dollar = rest.firstIndex(of: "$") {
            result += rest[..<dollar]
            let after = rest[dollar...]
            if after.hasPrefix("$${") {
                result += "${"
                rest = after.dropFirst(3)
            } else if after.hasPrefix("${") {
                guard let close = after.firstIndex(of: "}") else {
                    // The value itself is not shown: it may hold a password.
                    report(path, "unterminated ${ (a closing } is missing)")
                    return nil
                }
                let name = String(after[after.index(after.startIndex, offsetBy: 2)..<close])
                if let value = environment[name] {
                    result += value
                } else {
                    let valid = !name.isEmpty && name.unicodeScalars.allSatisfy { $0 == "_" || ("A"..."Z").contains($0) || ("a"..."z").contains($0) || ("0"..."9").contains($0) }
                    report(path, valid ? "environment variable \(name) is not set" : "\"${\(name)}\" is not a valid environment variable reference")
                    ok = false
                }
                rest = after[after.index(after: close)...]
            } else {
                result += "$"
                rest = after.dropFirst()
            }
        }
        result += rest
        return ok ? result : nil
    }
}

/// Reads one TOML table. Every key a getter asks for becomes a known key of the table, so
/// `finish()` can report the keys nobody asked for as unknown, with a "did you mean".
final class TableReader {
    let decoder: ConfigDecoder
    let path: [ConfigPathComponent]
    let entries: [String: ConfigNode]
    private var known: [String] = []

    init(_ decoder: ConfigDecoder, _ entries: [String: ConfigNode], at path: [ConfigPathComponent]) {
        self.decoder = decoder
        self.entries = entries
        self.path = path
    }

    /// `nil` (and a report) when `node` is not a table.
    convenience init?(_ decoder: ConfigDecoder, _ node: ConfigNode, at path: [ConfigPathComponent]) {
        guard case .table(let entries) = node else {
            decoder.report(path, "expected a table, got \(node.rendered)")
            return nil
        }
        self.init(decoder, entries, at: path)
    }

    func at(_ key: String) -> [ConfigPathComponent] { path + [.key(key)] }

    func has(_ key: String) -> Bool {
        known.append(key)
        decoder.keyRecorder?(path, key)
        return entries[key] != nil
    }

    func node(_ key: String) -> ConfigNode? {
        known.append(key)
        decoder.keyRecorder?(path, key)
        return entries[key]
    }

    func string(_ key: String) -> String? {
        guard let node = node(key) else { return nil }
        return decoder.string(node, at: at(key))
    }

    func bool(_ key: String) -> Bool? {
        guard let node = node(key) else { return nil }
        guard case .boolean(let value) = node else {
            decoder.report(at(key), "expected true or false, got \(node.rendered)")
            return nil
        }
        return value
    }

    func int(_ key: String, in range: ClosedRange<Int>, _ expected: String) -> Int? {
        guard let node = node(key) else { return nil }
        guard case .integer(let value) = node, range.contains(value) else {
            decoder.report(at(key), "expected \(expected), got \(node.rendered)")
            return nil
        }
        return value
    }

    func double(_ key: String, _ expected: String, valid: (Double) -> Bool) -> Double? {
        guard let node = node(key) else { return nil }
        let value: Double
        switch node {
        case .float(let d): value = d
        case .integer(let i): value = Double(i)
        default:
            decoder.report(at(key), "expected \(expected), got \(node.rendered)")
            return nil
        }
        guard value.isFinite, valid(value) else {
            decoder.report(at(key), "expected \(expected), got \(node.rendered)")
            return nil
        }
        return value
    }

    /// A duration with a unit; `positive` refuses "0s".
    func duration(_ key: String, positive: Bool = true) -> Duration? {
        guard let node = node(key) else { return nil }
        let expected = "a duration with a unit such as \"250ms\", \"30s\", \"5m\" or \"1h\""
        guard case .string = node, let text = decoder.string(node, at: at(key)) else {
            if case .string = node { return nil }  // interpolation failed and was reported
            decoder.report(at(key), "expected \(expected), got \(node.rendered)")
            return nil
        }
        guard let duration = DurationText.parse(text) else {
            decoder.report(at(key), "expected \(expected), got \(node.rendered)")
            return nil
        }
        if positive && duration <= .zero {
            decoder.report(at(key), "expected a duration above zero, got \(node.rendered)")
            return nil
        }
        return duration
    }

    func size(_ key: String) -> Int? {
        guard let node = node(key) else { return nil }
        let expected = "a size with a unit such as \"512KiB\" or \"64MiB\""
        guard case .string = node, let text = decoder.string(node, at: at(key)) else {
            if case .string = node { return nil }
            decoder.report(at(key), "expected \(expected), got \(node.rendered)")
            return nil
        }
        guard let size = SizeText.parse(text), size > 0 else {
            decoder.report(at(key), "expected \(expected), got \(node.rendered)")
            return nil
        }
        return size
    }

    func enumeration<E: RawRepresentable & CaseIterable>(_ key: String, _ type: E.Type) -> E? where E.RawValue == String {
        guard let node = node(key) else { return nil }
        let choices = E.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
        guard case .string = node else {
            decoder.report(at(key), "expected one of \(choices), got \(node.rendered)")
            return nil
        }
        guard let text = decoder.string(node, at: at(key)) else { return nil }
        guard let value = E(rawValue: text) else {
            var message = "expected one of \(choices), got \(node.rendered)"
            if let guess = Suggestion.closest(to: text, among: E.allCases.map(\.rawValue)) { message += " (did you mean \"\(guess)\"?)" }
            decoder.report(at(key), message)
            return nil
        }
        return value
    }

    func stringArray(_ key: String, nonEmpty: Bool = false) -> [String]? {
        guard let node = node(key) else { return nil }
        guard case .array(let elements) = node else {
            decoder.report(at(key), "expected an array of strings, got \(node.rendered)")
            return nil
        }
        if nonEmpty && elements.isEmpty {
            decoder.report(at(key), "expected a non-empty array of strings, got []")
            return nil
        }
        var values: [String] = []
        var ok = true
        for (index, element) in elements.enumerated() {
            if let value = decoder.string(element, at: at(key) + [.index(index)]) { values.append(value) } else { ok = false }
        }
        return ok ? values : nil
    }

    /// A table of string values (environment, HTTP headers). Numbers and booleans are accepted
    /// and written as text.
    func stringTable(_ key: String) -> [String: String]? {
        guard let node = node(key) else { return nil }
        guard case .table(let entries) = node else {
            decoder.report(at(key), "expected a table of strings, got \(node.rendered)")
            return nil
        }
        var values: [String: String] = [:]
        for (name, value) in entries {
            let path = at(key) + [.key(name)]
            switch value {
            case .integer(let i): values[name] = "\(i)"
            case .boolean(let b): values[name] = "\(b)"
            case .float(let d): values[name] = "\(d)"
            default: if let text = decoder.string(value, at: path) { values[name] = text }
            }
        }
        return values
    }

    /// An AMQP arguments table (queue/exchange/binding arguments).
    func fieldTable(_ key: String) -> FieldTable? {
        guard let node = node(key) else { return nil }
        guard case .table = node else {
            decoder.report(at(key), "expected a table, got \(node.rendered)")
            return nil
        }
        guard case .table(let table)? = decoder.fieldValue(node, at: at(key)) else { return nil }
        return table
    }

    func table(_ key: String) -> TableReader? {
        guard let node = node(key) else { return nil }
        return TableReader(decoder, node, at: at(key))
    }

    /// `[[key]]` (or an inline array of tables).
    func tables(_ key: String) -> [TableReader] {
        guard let node = node(key) else { return [] }
        guard case .array(let elements) = node else {
            decoder.report(at(key), "expected an array of tables ([[\(key)]]), got \(node.rendered)")
            return []
        }
        return elements.enumerated().compactMap { index, element in
            TableReader(decoder, element, at: at(key) + [.index(index)])
        }
    }

    func acceptAllKeys() {
        known.append(contentsOf: entries.keys)
    }

    /// Reports every key no getter asked for.
    func finish() {
        for key in entries.keys.sorted() where !known.contains(key) {
            var message = "unknown key \"\(key)\""
            if let guess = Suggestion.closest(to: key, among: Array(Set(known))) {
                message += " (did you mean \"\(guess)\"?)"
            }
            decoder.reportKey(at(key), message)
        }
    }
}

extension ConfigDecoder {
    func string(_ node: ConfigNode, at path: [ConfigPathComponent]) -> String? {
        guard case .string(let text) = node else {
            report(path, "expected a string, got \(node.rendered)")
            return nil
        }
        return interpolate(text, at: path)
    }

    func fieldValue(_ node: ConfigNode, at path: [ConfigPathComponent]) -> FieldValue? {
        switch node {
        case .string: return string(node, at: path).map { .string($0) }
        case .integer(let i): return .int64(Int64(i))
        case .float(let d): return .double(d)
        case .boolean(let b): return .boolean(b)
        case .array(let elements):
            var values: [FieldValue] = []
            for (index, element) in elements.enumerated() {
                guard let value = fieldValue(element, at: path + [.index(index)]) else { return nil }
                values.append(value)
            }
            return .array(values)
        case .table(let entries):
            var table = FieldTable()
            for key in entries.keys.sorted() {
                guard let child = entries[key], let value = fieldValue(child, at: path + [.key(key)]) else { return nil }
                table[key] = value
            }
            return .table(table)
        case .dateTime, .other:
            report(path, "dates and times are not supported here, got \(node.rendered)")
            return nil
        }
    }
}
