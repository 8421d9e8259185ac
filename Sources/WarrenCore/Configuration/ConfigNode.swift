import Foundation
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
    /// A date-time as written (`text`) and, when it has a time zone (an offset date-time such
    /// as `2026-12-01T00:00:00Z`), the instant it names. A local date-time (no zone) names no
    /// instant: `instant` is `nil`, and only a message can use it.
    case dateTime(text: String, instant: Date?)
    /// A date or a time alone: no meaning in Warren's configuration; kept for messages.
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
        case .dateTime:
            if let dateTime = value.dateTime {
                self = .dateTime(text: Self.text(of: dateTime), instant: Self.instant(of: dateTime))
            } else {
                self = .other(value.debugDescription)
            }
        case .date, .time: self = .other(value.debugDescription)
        }
    }

    /// A whole TOML document, without the loader's preflight and error positions (for tests
    /// that read the shipped files).
    init(document source: String) throws {
        self.init(try TOMLTable(string: source))
    }

    /// The instant an offset date-time names. TOMLKit's own `fDate` reads the fields in the
    /// process's time zone and drops the offset, so the fields are read here in UTC and the
    /// offset taken off. `nil` for a local date-time.
    static func instant(of dateTime: TOMLDateTime) -> Date? {
        guard let offset = dateTime.offset, let utc = TimeZone(secondsFromGMT: 0) else { return nil }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = utc
        let fields = DateComponents(
            year: dateTime.date.year, month: dateTime.date.month, day: dateTime.date.day, hour: dateTime.time.hour,
            minute: dateTime.time.minute, second: dateTime.time.second, nanosecond: dateTime.time.nanoSecond)
        guard let asIfUTC = calendar.date(from: fields) else { return nil }
        return asIfUTC.addingTimeInterval(-Double(offset.offset) * 60)
    }

    /// The date-time as TOML writes it. TOMLKit's `debugDescription` adds a `Z` to a local
    /// date-time, which would hide the very problem a message is about.
    static func text(of dateTime: TOMLDateTime) -> String {
        func padded(_ value: Int, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        let date = dateTime.date
        let time = dateTime.time
        var text = "\(padded(date.year, 4))-\(padded(date.month, 2))-\(padded(date.day, 2))T"
        text += "\(padded(time.hour, 2)):\(padded(time.minute, 2)):\(padded(time.second, 2))"
        if time.nanoSecond > 0 {
            var fraction = padded(time.nanoSecond, 9)
            while fraction.hasSuffix("0") { fraction.removeLast() }
            text += ".\(fraction)"
        }
        if let offset = dateTime.offset?.offset {
            let magnitude = offset.magnitude
            text += offset == 0 ? "Z" : "\(offset < 0 ? "-" : "+")\(padded(Int(magnitude / 60), 2)):\(padded(Int(magnitude % 60), 2))"
        }
        return text
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
        case .dateTime, .other: "a date/time"
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
        case .dateTime(let text, _): text
        case .table, .array, .other: kindDescription
        }
    }
}
