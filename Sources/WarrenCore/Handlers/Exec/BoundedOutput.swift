/// A process's stdout, kept up to a limit. Everything past the limit is still read (a child
/// blocked on a full pipe would never finish) but only counted, so a runaway handler costs
/// warren at most `limit` bytes of memory per run.
struct BoundedOutput: Sendable {
    /// Stdout up to 1 MiB becomes the RPC reply.
    static let replyLimit = 1024 * 1024

    let limit: Int
    private(set) var bytes: [UInt8] = []
    /// Every byte the process wrote, kept or not.
    private(set) var total = 0

    init(limit: Int = Self.replyLimit) {
        self.limit = limit
    }

    /// True when the process wrote more than `limit` bytes: `bytes` is then a truncated prefix.
    var overflowed: Bool { total > limit }

    mutating func append(_ chunk: UnsafeRawBufferPointer) {
        total += chunk.count
        let room = limit - bytes.count
        guard room > 0, !chunk.isEmpty else { return }
        bytes.append(contentsOf: chunk.prefix(room))
    }
}
