/// Warren's own version, printed by `warren version` and sent to the broker as a client property.
public enum WarrenVersion {
    public static let current = "0.1.0"
}
