/// Which of warren's own environment variables an `exec` or `pipe` handler's process sees
/// (`inherit_env`). Warren's environment often holds the secrets its configuration reads with
/// `${NAME}` (the broker password, HTTP tokens); a child process has no need for them.
///
/// Whatever this says, the handler's own `env` table and the `WARREN_*` variables warren sets
/// for the child (message metadata, `WARREN_HANDLER`, `WARREN_WORKER`) are always passed.
public enum InheritedEnvironment: Sendable, Hashable {
    /// Every variable (`inherit_env = true`): what warren did before the setting existed.
    case all
    /// Only these names (`inherit_env = false` is the empty list). A name ending in `*` is a
    /// prefix: `LC_*` is every locale variable.
    case only([String])

    /// The default: what programs need to find other programs, files, their locale and time
    /// zone, and who they run as, and nothing that usually carries a secret.
    public static let standardNames = ["PATH", "HOME", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL"]
    public static let standard = InheritedEnvironment.only(standardNames)

    /// The variables of `environment` that pass.
    public func filter(_ environment: [String: String]) -> [String: String] {
        switch self {
        case .all:
            return environment
        case .only(let names):
            let exact = Set(names.filter { !$0.hasSuffix("*") })
            let prefixes = names.filter { $0.hasSuffix("*") }.map { String($0.dropLast()) }
            return environment.filter { name, _ in
                exact.contains(name) || prefixes.contains { name.hasPrefix($0) }
            }
        }
    }

    /// An entry of an `inherit_env` list: a variable name (`[A-Za-z_][A-Za-z0-9_]*`), or one
    /// followed by `*` for a prefix.
    static func isValidEntry(_ entry: String) -> Bool {
        let name = entry.hasSuffix("*") ? entry.dropLast() : Substring(entry)
        guard let first = name.unicodeScalars.first else { return false }
        func isLetter(_ c: Unicode.Scalar) -> Bool { c == "_" || ("A"..."Z").contains(c) || ("a"..."z").contains(c) }
        return isLetter(first) && name.unicodeScalars.allSatisfy { isLetter($0) || ("0"..."9").contains($0) }
    }
}
