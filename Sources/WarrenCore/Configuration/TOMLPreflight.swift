/// Refuses, before parsing, the few malformed inputs that the toml++ 3.4.0 bundled in TOMLKit
/// does not report but aborts on (its `TOML_ASSERT_ASSUME` in `parse_key` and `parse_value`,
/// fixed upstream in marzer/tomlplusplus#301), and NUL bytes, after which toml++ (reading a C
/// string) would silently ignore the rest of the file. A bad configuration must be a clear
/// error with exit 78, never a crash.
///
/// It lexes just enough TOML to know where table headers and array values are: comments,
/// basic/literal strings (single- and multi-line) and bracket depth.
enum TOMLPreflight {
    static func hazard(in source: String) -> (position: SourcePosition, message: String)? {
        let s = Array(source.unicodeScalars)
        var i = 0
        var line = 1
        var lineStart = 0
        var depth = 0
        var atLineStart = true
        var arrayElementExpected = false
        func position(_ index: Int) -> SourcePosition { SourcePosition(line: line, column: index - lineStart + 1) }

        while i < s.count {
            let c = s[i]
            switch c {
            case "\0":
                return (position(i), "syntax error: a NUL byte is not allowed in a TOML file")
            case "\n":
                line += 1
                lineStart = i + 1
                atLineStart = depth == 0
                i += 1
            case " ", "\t", "\r":
                i += 1
            case "#":
                while i < s.count, s[i] != "\n" {
                    if s[i] == "\0" { return (position(i), "syntax error: a NUL byte is not allowed in a TOML file") }
                    i += 1
                }
            case "\"", "'":
                if let nul = skipString(s, &i, &line, &lineStart) { return (nul, "syntax error: a NUL byte is not allowed in a TOML file") }
                atLineStart = false
                arrayElementExpected = false
            case "[" where atLineStart && depth == 0:
                // A table header: after `[` or `[[` (and blanks) must come a key.
                var j = i + 1
                if j < s.count, s[j] == "[" { j += 1 }
                while j < s.count, s[j] == " " || s[j] == "\t" { j += 1 }
                if j >= s.count || !(isBareKey(s[j]) || s[j] == "\"" || s[j] == "'") {
                    return (position(j), "syntax error: a table header must start with a key")
                }
                // Nothing but the header and a comment may follow on this line.
                while i < s.count, s[i] != "\n" {
                    if s[i] == "\0" { return (position(i), "syntax error: a NUL byte is not allowed in a TOML file") }
                    i += 1
                }
                atLineStart = false
            case "[", "{":
                depth += 1
                arrayElementExpected = c == "["
                atLineStart = false
                i += 1
            case "]", "}":
                if c == "}" && arrayElementExpected {
                    return (position(i), "syntax error: expected an array element or ']', found '}'")
                }
                depth = max(0, depth - 1)
                arrayElementExpected = false
                atLineStart = false
                i += 1
            case ",":
                arrayElementExpected = depth > 0
                i += 1
            default:
                arrayElementExpected = false
                atLineStart = false
                i += 1
            }
        }
        return nil
    }

    private static func isBareKey(_ c: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(c) || ("A"..."Z").contains(c) || ("0"..."9").contains(c) || c == "_" || c == "-"
    }

    /// Skips a string starting at `i`; returns the position of a NUL inside it, if any.
    private static func skipString(_ s: [Unicode.Scalar], _ i: inout Int, _ line: inout Int, _ lineStart: inout Int) -> SourcePosition? {
        let quote = s[i]
        let triple = i + 2 < s.count && s[i + 1] == quote && s[i + 2] == quote
        i += triple ? 3 : 1
        while i < s.count {
            let c = s[i]
            if c == "\0" { return SourcePosition(line: line, column: i - lineStart + 1) }
            if c == "\\" && quote == "\"" {
                i += 2
                continue
            }
            if c == "\n" {
                if !triple { return nil }  // unterminated single-line string: toml++ reports it
                line += 1
                lineStart = i + 1
            }
            if c == quote {
                if !triple {
                    i += 1
                    return nil
                }
                if i + 2 < s.count, s[i + 1] == quote, s[i + 2] == quote {
                    i += 3
                    while i < s.count, s[i] == quote { i += 1 }  // up to two quotes may end the content
                    return nil
                }
            }
            i += 1
        }
        return nil
    }
}
