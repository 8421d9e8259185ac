import WarrenBuildInfo

/// Warren's own version, printed by `warren version` and sent to the broker as a client property.
/// This is the one place the version is written; `scripts/package-deb` reads it from here.
public enum WarrenVersion {
    public static let current = "0.1.0"

    /// The commit the binary was built from (see Package.swift), nil when the build could not tell.
    public static let commit: String? = {
        let text = String(cString: warren_build_commit())
        return text.isEmpty ? nil : text
    }()

    /// "0.1.0 (commit 0123456789ab)", or the bare version when the commit is unknown.
    public static var description: String {
        commit.map { "\(current) (commit \($0))" } ?? current
    }
}
