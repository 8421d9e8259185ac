import TOMLKit

/// A parsed TOML value as plain Sendable Swift data. TOMLKit's tables are reference types over
/// toml++ nodes; the configuration keeps none of them past parsing.
indirect enum ConfigNode: Sendable {
    case table([String: ConfigNode])
    case array([ConfigNode])
    case string(String)
    case integer(Int)
    case float(Double)
    case boolean(Bool)
    /// Dates and times have no meaning in Warren's configuration; kept for messages.
    case other(String)

    init(_ value: any TOMLValueConvertible) {
        switch value.type {
        case .table:
            var entries: [String: ConfigNode] = [:]
            if let table = value.table {
                for (key, child) in table { entries[key] = ConfigNode(child) }
            }
            self = .table(entries)
        case .array:
            self = .array(value.array.map { $0.map { ConfigNode($0) } } ?? [])
        case .string: self = .string(value.string ?? "")
        case .int: self = .integer(value.int ?? 0)
        case .double: self = .float(value.double ?? 0)
        case .bool: self = .boolean(value.bool ?? false)
        case .date, .time, .dateTime: self = .other(value.debugDescription)
        }
    }

    /// A whole TOML document, without the loader's preflight and error positions (for tests
    /// that read the shipped files).
    init(document source: String) throws {
        self.init(try TOMLTable(string: source))
    }

    /// "a string", "an integer", ... for "expected X, got Y" messages.
    var kindDescription: String {
        switch self {
        case .table: "a table"
        case .array: "an array"
        case .string: "a string"
        case .integer: "an integer"
        case .float: "a number"
        case .boolean: "a boolean"
        case .other: "a date/time"
        }
    }

    /// The value as the messages quote it: strings in quotes, scalars as written, and the kind
    /// for tables and arrays.
    var rendered: String {
        switch self {
        case .string(let s): "\"\(s.count > 60 ? String(s.prefix(57)) + "..." : s)\""
        case .integer(let i): "\(i)"
        case .float(let d): "\(d)"
        case .boolean(let b): "\(b)"
        case .table, .array, .other: kindDescription
        }
    }
}
