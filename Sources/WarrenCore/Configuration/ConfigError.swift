/// One problem in a configuration file, located for the person who has to fix it.
public struct ConfigIssue: Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var position: SourcePosition
    /// `queues[2].prefetch`; empty for file-level problems.
    public var path: String
    public var message: String

    public init(file: String, position: SourcePosition, path: String, message: String) {
        self.file = file
        self.position = position
        self.path = path
        self.message = message
    }

    /// `path/to/file.toml:LINE:COL: queues[2].prefetch: expected a positive integer, got "ten"`
    public var description: String {
        "\(file):\(position.line):\(position.column): " + (path.isEmpty ? "" : "\(path): ") + message
    }
}

/// A configuration that cannot be used. It lists every problem found in one pass, in file order.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public var issues: [ConfigIssue]

    public init(issues: [ConfigIssue]) {
        self.issues = issues
    }

    public var description: String {
        issues.map(\.description).joined(separator: "\n")
    }
}

/// Renders key paths the way the messages show them: `queues[2].retry.max_attempts`,
/// `queues[0].arguments."x-max-length"` for keys that are not bare TOML keys.
enum ConfigPath {
    static func render(_ path: [ConfigPathComponent]) -> String {
        var text = ""
        for component in path {
            switch component {
            case .index(let index):
                text += "[\(index)]"
            case .key(let key):
                if !text.isEmpty { text += "." }
                let bare = !key.isEmpty && key.unicodeScalars.allSatisfy {
                    ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-"
                }
                text += bare ? key : "\"\(key)\""
            }
        }
        return text
    }
}

/// The closest candidate within a small edit distance, for "did you mean" hints.
public enum Suggestion {
    public static func closest(to word: String, among candidates: [String]) -> String? {
        let limit = max(1, min(3, word.count / 3))
        var best: (String, Int)?
        for candidate in candidates {
            let distance = editDistance(word.lowercased(), candidate.lowercased())
            if distance <= limit, distance < (best?.1 ?? Int.max) {
                best = (candidate, distance)
            }
        }
        return best?.0
    }

    public static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a)
        let b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                current[j] = min(previous[j] + 1, current[j - 1] + 1, substitution)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
