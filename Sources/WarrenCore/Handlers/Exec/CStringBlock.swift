/// NUL-terminated strings packed into one buffer, the way `argv` and `envp` are read: one
/// allocation for all of them instead of one C string per entry and run.
struct CStringBlock: Sendable {
    private(set) var bytes: [UInt8] = []
    /// Where each string starts in `bytes`.
    private(set) var offsets: [Int] = []

    init() {}

    init(_ strings: some Sequence<String>) {
        for string in strings { append(string) }
    }

    var count: Int { offsets.count }

    /// Appends `string`. C cuts a string at its first NUL; callers clean what may hold one.
    mutating func append(_ string: String) {
        offsets.append(bytes.count)
        bytes.append(contentsOf: string.utf8)
        bytes.append(0)
    }

    /// Appends `name=value`, an environment entry.
    mutating func append(name: String, value: String) {
        offsets.append(bytes.count)
        bytes.append(contentsOf: name.utf8)
        bytes.append(UInt8(ascii: "="))
        bytes.append(contentsOf: value.utf8)
        bytes.append(0)
    }

    mutating func append(contentsOf other: CStringBlock) {
        let shift = bytes.count
        offsets.append(contentsOf: other.offsets.lazy.map { $0 + shift })
        bytes.append(contentsOf: other.bytes)
    }

    /// Calls `body` with a NULL-terminated array of pointers to the strings, valid only
    /// during the call.
    func withPointers<R>(_ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) throws -> R) rethrows -> R {
        try bytes.withUnsafeBufferPointer { buffer in
            var pointers: [UnsafeMutablePointer<CChar>?] = []
            pointers.reserveCapacity(offsets.count + 1)
            if let base = buffer.baseAddress {
                // The strings are only read (posix_spawn copies nothing into them); C spells
                // argv and envp without const.
                let start = UnsafeMutableRawPointer(mutating: base)
                for offset in offsets { pointers.append((start + offset).assumingMemoryBound(to: CChar.self)) }
            }
            pointers.append(nil)
            return try pointers.withUnsafeBufferPointer { try body($0.baseAddress!) }
        }
    }
}
