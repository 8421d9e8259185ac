/// A 1-based line and column in a configuration file.
///
/// Columns count Unicode scalars from the start of the line: a tab is one column, a multi-scalar
/// character (an emoji with a modifier, a letter with a combining accent) counts once per scalar,
/// and a byte-order mark at the very start of the file is not counted. This is how toml++ counts
/// the columns of its syntax errors, so both kinds of diagnostic agree.
public struct SourcePosition: Sendable, Hashable, CustomStringConvertible {
    public var line: Int
    public var column: Int

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    /// `LINE:COL`, ready to follow `file.toml:` in a diagnostic.
    public var description: String { "\(line):\(column)" }
}

/// One step of a path into the configuration: a table key or a 0-based array index.
public enum ConfigPathComponent: Sendable, Hashable {
    case key(String)
    case index(Int)
}

/// Where each key of a TOML document is written, so validation errors can say
/// `warren.toml:12:1: queues[2].prefetch: must be at least 1`.
///
/// Warren parses its configuration with TOMLKit, which wraps toml++ through a C API that hands
/// back values but none of the source regions toml++ tracks internally. This type re-lexes the
/// raw text (TOML 1.0: comments, the four string kinds, multi-line arrays, inline tables, dotted
/// and quoted keys, `[table]` and `[[array of tables]]` headers) and records, for every key, the
/// position of the key and of its value, indexed by the same path the validator walks.
///
/// It is not a parser and never rejects anything: on malformed input it records what it can and
/// moves on (TOMLKit reports the syntax error). It runs in linear time, never traps, and bounds
/// its recursion, so it is safe on arbitrary bytes.
///
/// Positions recorded:
/// - a key (`prefetch = 10`, `a.b.c = 1`, a key inside an inline table, each dotted or header
///   component the first time it is seen): the key's first character (the quote if quoted);
/// - a `[table]` header's own path, and `[[array]]` element `.index(n)`: the header's first `[`;
/// - an element of an inline array: its first character (`{`, `[`, a quote, a digit);
/// - `valuePosition`: the first character of the value after `=` (or of an array element).
/// A key written twice (an error TOMLKit reports) keeps its first position.
public struct SourceLocator: Sendable {
    private let keys: [[ConfigPathComponent]: SourcePosition]
    private let values: [[ConfigPathComponent]: SourcePosition]

    public init(source: String) {
        var scanner = KeyScanner(source)
        scanner.scanDocument()
        keys = scanner.keys
        values = scanner.values
    }

    /// Position of the key at `path` (for an array element `.index(i)` as last component: the
    /// position of the element's start, e.g. the `[[queues]]` header line or the `{` of an inline
    /// table or the first char of a scalar element).
    public func position(of path: [ConfigPathComponent]) -> SourcePosition? {
        keys[path]
    }

    /// Nearest known position: tries `path`, then drops trailing components until something is
    /// found; falls back to 1:1.
    public func nearestPosition(of path: [ConfigPathComponent]) -> SourcePosition {
        var path = path
        while !path.isEmpty {
            if let found = keys[path] { return found }
            path.removeLast()
        }
        return SourcePosition(line: 1, column: 1)
    }

    /// Position of the VALUE at path (first character of the value after `=`), when known.
    public func valuePosition(of path: [ConfigPathComponent]) -> SourcePosition? {
        values[path]
    }
}

private typealias Path = [ConfigPathComponent]

/// The lexer behind `SourceLocator`: a cursor over the document's Unicode scalars that tracks the
/// line, and one `scan…` method per TOML construct. Every loop advances or returns.
private struct KeyScanner {
    /// Deeper nesting is abandoned: a config nests a handful of levels, a fuzzed file can be a
    /// long run of `[`, and each level is a stack frame.
    static let maxDepth = 64
    static let escapes: [Unicode.Scalar: Unicode.Scalar] = [
        "b": "\u{8}", "t": "\t", "n": "\n", "f": "\u{C}", "r": "\r", "e": "\u{1B}",
    ]

    let text: [Unicode.Scalar]
    var index = 0
    var line = 1
    var lineStart = 0
    /// Nothing but blanks has been consumed on the current line so far.
    var lineIsBlank = true
    var keys: [Path: SourcePosition] = [:]
    var values: [Path: SourcePosition] = [:]
    /// Elements seen so far per array of tables, by resolved path (`queues`, `queues[1].bindings`).
    var arrayTableCounts: [Path: Int] = [:]
    /// The table that the following key/value lines belong to.
    var table: Path = []

    init(_ source: String) {
        text = Array(source.unicodeScalars)
        if text.first == "\u{FEFF}" { (index, lineStart) = (1, 1) }
    }

    // MARK: Cursor

    var current: Unicode.Scalar? { index < text.count ? text[index] : nil }
    var position: SourcePosition { SourcePosition(line: line, column: index - lineStart + 1) }

    func peek(_ offset: Int) -> Unicode.Scalar? { index + offset < text.count ? text[index + offset] : nil }

    mutating func advance() {
        guard index < text.count else { return }
        let scalar = text[index]
        index += 1
        if scalar == "\n" {
            (line, lineStart, lineIsBlank) = (line + 1, index, true)
        } else if !Self.isBlank(scalar) {
            lineIsBlank = false
        }
    }

    mutating func advance(_ count: Int) {
        for _ in 0..<count { advance() }
    }

    static func isBlank(_ c: Unicode.Scalar) -> Bool { c == " " || c == "\t" || c == "\r" }

    static func isBareKey(_ c: Unicode.Scalar) -> Bool {
        switch c {
        case "A"..."Z", "a"..."z", "0"..."9", "_", "-": true
        default: false
        }
    }

    /// Where an unquoted value (number, date, boolean, or garbage) stops.
    static func endsValue(_ c: Unicode.Scalar) -> Bool {
        switch c {
        case "\n", ",", "]", "}", "#": true
        default: false
        }
    }

    mutating func skipBlanks() {
        while let c = current, Self.isBlank(c) { advance() }
    }

    mutating func skipToLineEnd() {
        while let c = current, c != "\n" { advance() }
    }

    /// Blanks, newlines and comments: what may separate the elements of an array.
    mutating func skipTrivia() {
        while let c = current, Self.isBlank(c) || c == "\n" || c == "#" {
            if c == "#" { skipToLineEnd() } else { advance() }
        }
    }

    mutating func record(key path: Path, at position: SourcePosition) {
        if keys[path] == nil { keys[path] = position }
    }

    // MARK: Statements

    mutating func scanDocument() {
        while true {
            skipTrivia()
            guard let c = current else { return }
            let start = index
            if c == "[" { scanHeader() } else { scanKeyValue(in: table, depth: 0) }
            skipBlanks()
            // A statement ends with its line: skip any garbage after it, unless it broke off at the
            // start of a later line (an unclosed `[` or `{`), which is then scanned afresh.
            if index == start || !lineIsBlank { skipToLineEnd() }
        }
    }

    /// `[a.b]` or `[[a.b]]`: resolves the path (through the latest element of each array of tables
    /// on the way) and makes it the current table.
    mutating func scanHeader() {
        let start = position
        advance()
        let isArray = current == "["
        if isArray { advance() }
        guard let parts = scanKey() else { return }
        var path: Path = []
        for (n, part) in parts.enumerated() {
            path.append(.key(part.name))
            record(key: path, at: part.position)
            if n < parts.count - 1, let count = arrayTableCounts[path] { path.append(.index(count - 1)) }
        }
        if isArray {
            let count = arrayTableCounts[path, default: 0]
            arrayTableCounts[path] = count + 1
            path.append(.index(count))
        }
        keys[path] = start
        table = path
        skipBlanks()
        if current == "]" { advance() }
        if isArray, current == "]" { advance() }
    }

    /// `key = value` under `prefix`; false when there is no key followed by `=`.
    @discardableResult
    mutating func scanKeyValue(in prefix: Path, depth: Int) -> Bool {
        guard let parts = scanKey() else { return false }
        skipBlanks()
        guard current == "=" else { return false }
        advance()
        skipBlanks()
        var path = prefix
        for part in parts {
            path.append(.key(part.name))
            record(key: path, at: part.position)
        }
        scanValue(at: path, depth: depth)
        return true
    }

    /// A dotted key (`a."b.c".'d'`) with the position of each part; nil when malformed.
    mutating func scanKey() -> [(name: String, position: SourcePosition)]? {
        var parts: [(name: String, position: SourcePosition)] = []
        while true {
            skipBlanks()
            guard let c = current else { return nil }
            let start = position
            var name = ""
            if c == "\"" || c == "'" {
                guard let quoted = scanString(c) else { return nil }
                name = quoted
            } else if Self.isBareKey(c) {
                while let c = current, Self.isBareKey(c) {
                    name.unicodeScalars.append(c)
                    advance()
                }
            } else {
                return nil
            }
            parts.append((name, start))
            skipBlanks()
            guard current == "." else { return parts }
            advance()
        }
    }

    // MARK: Values

    /// Skips one value, recording its position and those of the keys and elements inside it.
    /// False when nothing value-like starts here (nothing is consumed then).
    @discardableResult
    mutating func scanValue(at path: Path, depth: Int) -> Bool {
        guard let c = current, !Self.endsValue(c), depth < Self.maxDepth else { return false }
        if values[path] == nil { values[path] = position }
        switch c {
        case "\"", "'":
            if peek(1) == c, peek(2) == c { skipMultilineString(c) } else { _ = scanString(c) }
        case "[":
            var count = 0
            scanElements(closedBy: "]") { scanner in
                let element = path + [.index(count)]
                let start = scanner.position
                guard scanner.scanValue(at: element, depth: depth + 1) else { return false }
                scanner.record(key: element, at: start)
                count += 1
                return true
            }
        case "{":
            scanElements(closedBy: "}") { $0.scanKeyValue(in: path, depth: depth + 1) }
        default:
            while let c = current, !Self.endsValue(c) { advance() }
        }
        return true
    }

    /// The elements of an array or inline table, from its opener to `closer`: across lines, with
    /// comments and a trailing comma (TOML 1.0 keeps inline tables on one line; this does not
    /// care). `element` scans one element and returns false when there is none.
    mutating func scanElements(closedBy closer: Unicode.Scalar, element: (inout KeyScanner) -> Bool) {
        advance()
        while true {
            skipTrivia()
            guard let c = current else { return }
            if c == closer {
                advance()
                return
            }
            if c == "," {  // after an element, or a stray one
                advance()
                continue
            }
            guard element(&self) else { return }
            skipTrivia()
            guard current == "," || current == closer else { return }  // a missing comma
        }
    }

    /// A one-line basic (`"…"`, escapes decoded) or literal (`'…'`) string, at its opening quote.
    /// Nil when the line ends first.
    mutating func scanString(_ quote: Unicode.Scalar) -> String? {
        advance()
        var result = ""
        while let c = current, c != "\n" {
            if c == quote {
                advance()
                return result
            }
            if c == "\\", quote == "\"" {
                scanEscape(into: &result)
            } else {
                result.unicodeScalars.append(c)
                advance()
            }
        }
        return nil
    }

    /// `\b \t \n \f \r \e \uXXXX \UXXXXXXXX`; any other escaped character stands for itself.
    mutating func scanEscape(into result: inout String) {
        advance()
        guard let c = current, c != "\n" else { return }
        advance()
        guard c == "u" || c == "U" else { return result.unicodeScalars.append(Self.escapes[c] ?? c) }
        let width = c == "u" ? 4 : 8
        var value: UInt32 = 0
        var digits = 0
        while digits < width, let d = current, let digit = Character(d).hexDigitValue {
            value = value &* 16 &+ UInt32(truncatingIfNeeded: digit)
            digits += 1
            advance()
        }
        let scalar = digits == width ? Unicode.Scalar(value) : nil
        result.unicodeScalars.append(scalar ?? "\u{FFFD}")
    }

    /// `"""…"""` or `'''…'''`, at the opening quotes. Up to two extra quotes before the closing
    /// three belong to the content; in a basic string a backslash escapes the next character.
    mutating func skipMultilineString(_ quote: Unicode.Scalar) {
        advance(3)
        while let c = current {
            if c == "\\", quote == "\"" {
                advance(2)
            } else if c == quote, peek(1) == quote, peek(2) == quote {
                advance(3)
                for _ in 0..<2 where current == quote { advance() }
                return
            } else {
                advance()
            }
        }
    }
}
