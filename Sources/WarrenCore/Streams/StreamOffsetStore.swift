import Glibc
import Synchronization

/// The stored watermark of one stream queue (`StreamOffsetTracker`), in
/// `<directory>/stream-offsets/<vhost>/<queue>`: a decimal offset and a newline, replaced
/// atomically and durably (temporary file, fsync, rename, fsync of the directory), so a crash or
/// power cut leaves either the old value or the new one, never a torn file.
///
/// Writing after every message would cost an fsync each; the watermark is written after
/// `flushEvery` records or `flushInterval` after the previous write, whichever comes first, and
/// on `flush` (stop, consumer end). What a crash loses is only that window, processed again
/// after the restart (at-least-once).
///
/// Thread-safe: the decision and the write run under one lock, so writes land in the order of
/// the calls and a `flush` on stop writes last. A write blocks the caller (and other callers of
/// this store) for the fsyncs, once per flush window.
final class StreamOffsetStore: Sendable {
    /// Why the stored offset cannot be read or written, with the file it concerns.
    struct StoreError: Error, Sendable, CustomStringConvertible {
        struct Code: Hashable, Sendable, CustomStringConvertible {
            let description: String
            /// The file holds something other than a decimal offset and an optional newline.
            static let corruptFile = Code(description: "corrupt file")
            /// A system call failed (full disk, permissions, a path component that is a file).
            static let io = Code(description: "I/O error")
        }

        let code: Code
        /// The file or directory concerned.
        let path: String
        /// What failed: the system call and its errno text, or what the file holds.
        let reason: String

        var description: String { "stream offset store \(path): \(code): \(reason)" }
    }

    /// The file holding the watermark.
    let path: String
    /// Its directory (created as needed, mode 0750).
    let directory: String
    private let temporaryPath: String
    private let flushEvery: Int
    private let flushInterval: Duration
    /// Time since an arbitrary origin, from the injected clock.
    private let now: @Sendable () -> Duration

    private struct State {
        /// What the file holds, as far as this store knows (nil: no file, or not loaded).
        var stored: Int64?
        var recordsSinceWrite = 0
        var lastWrite: Duration
    }

    private let state: Mutex<State>

    /// - Parameters:
    ///   - directory: the state directory (`[state] directory`); the file goes under
    ///     `stream-offsets/` in it.
    ///   - flushEvery: records between writes (below 1: every record may write).
    ///   - flushInterval: time after the previous write (or creation) after which the next record
    ///     writes.
    convenience init(
        directory: String, queue: String, vhost: String, flushEvery: Int, flushInterval: Duration,
        clock: some Clock<Duration> = ContinuousClock()
    ) {
        let origin = clock.now
        self.init(
            directory: directory, queue: queue, vhost: vhost, flushEvery: flushEvery, flushInterval: flushInterval,
            now: { origin.duration(to: clock.now) })
    }

    /// - Parameter now: the time since any fixed origin (tests drive it by hand).
    init(
        directory: String, queue: String, vhost: String, flushEvery: Int, flushInterval: Duration,
        now: @escaping @Sendable () -> Duration
    ) {
        let (fileDirectory, name) = StreamOffsetStore.location(directory: directory, queue: queue, vhost: vhost)
        self.directory = fileDirectory
        self.path = fileDirectory + "/" + name
        // Encoded names never start with "." (see `encode`), so the temporary file cannot be
        // another queue's file.
        self.temporaryPath = fileDirectory + "/." + name + ".tmp"
        self.flushEvery = max(1, flushEvery)
        self.flushInterval = flushInterval
        self.now = now
        self.state = Mutex(State(lastWrite: now()))
    }

    /// The stored watermark; nil when there is no file yet. Remembered, so an unchanged
    /// watermark is not written again.
    /// - Throws: `StoreError` naming the file when it cannot be read or is corrupt (the caller
    ///   logs it and starts from the configured offset; the next write replaces the file).
    func load() throws(StoreError) -> Int64? {
        let value = try read()
        state.withLock { $0.stored = value }
        return value
    }

    /// Called after each processed message with the tracker's watermark. Writes it when
    /// `flushEvery` records were made or `flushInterval` passed since the last write, and it
    /// differs from the stored value.
    /// - Returns: whether it wrote.
    /// - Throws: `StoreError` with the path and errno text; nothing is remembered as written, so
    ///   the next record retries.
    @discardableResult
    func record(_ watermark: Int64?) throws(StoreError) -> Bool {
        try state.withLock { (state) throws(StoreError) -> Bool in
            state.recordsSinceWrite = state.recordsSinceWrite < Int.max ? state.recordsSinceWrite + 1 : Int.max
            let due = state.recordsSinceWrite >= flushEvery || now() - state.lastWrite >= flushInterval
            guard due else { return false }
            return try write(watermark, &state)
        }
    }

    /// Writes the watermark now if it differs from the stored value (on stop, consumer end).
    func flush(_ watermark: Int64?) throws(StoreError) {
        _ = try state.withLock { (state) throws(StoreError) -> Bool in try write(watermark, &state) }
    }

    // MARK: - Writing

    private func write(_ watermark: Int64?, _ state: inout State) throws(StoreError) -> Bool {
        guard let watermark, watermark != state.stored else { return false }
        try replace(with: watermark)
        state.stored = watermark
        state.recordsSinceWrite = 0
        state.lastWrite = now()
        return true
    }

    /// Temporary file, fsync, rename over the file, fsync of the directory: after a crash the
    /// file holds the old value or the new one.
    private func replace(with value: Int64) throws(StoreError) {
        let flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW
        var fd = Glibc.open(temporaryPath, flags, 0o640)
        if fd < 0, errno == ENOENT {
            // The first write for this queue: create its directories, then try again.
            try Self.makeDirectories(directory)
            fd = Glibc.open(temporaryPath, flags, 0o640)
        }
        guard fd >= 0 else { throw Self.systemError("open", temporaryPath) }
        var closed = false
        defer {
            if !closed { Glibc.close(fd) }
        }
        let bytes = Array("\(value)\n".utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { buffer in
                Glibc.write(fd, buffer.baseAddress.map { $0 + written }, buffer.count - written)
            }
            if n < 0 {
                if errno == EINTR { continue }
                let error = Self.systemError("write", temporaryPath)
                unlink(temporaryPath)
                throw error
            }
            written += n
        }
        if Glibc.fsync(fd) != 0 {
            let error = Self.systemError("fsync", temporaryPath)
            unlink(temporaryPath)
            throw error
        }
        closed = true
        if Glibc.close(fd) != 0 {
            let error = Self.systemError("close", temporaryPath)
            unlink(temporaryPath)
            throw error
        }
        if Glibc.rename(temporaryPath, path) != 0 {
            let error = Self.systemError("rename", path)
            unlink(temporaryPath)
            throw error
        }
        try Self.syncDirectory(directory)
    }

    /// `mkdir -p` with mode 0750; a directory it creates is made durable in its parent.
    private static func makeDirectories(_ directory: String) throws(StoreError) {
        var prefix = directory.hasPrefix("/") ? "" : "."
        for component in directory.split(separator: "/", omittingEmptySubsequences: true) {
            let parent = prefix.isEmpty ? "/" : prefix
            prefix += "/" + component
            if mkdir(prefix, 0o750) == 0 {
                try syncDirectory(parent)
            } else if errno != EEXIST {
                throw systemError("mkdir", prefix)
            }
        }
    }

    private static func syncDirectory(_ directory: String) throws(StoreError) {
        let fd = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw systemError("open", directory) }
        defer { Glibc.close(fd) }
        if Glibc.fsync(fd) != 0 { throw systemError("fsync", directory) }
    }

    // MARK: - Reading

    /// The longest valid content: 19 digits of `Int64.max` and a newline.
    private static let longestContent = 20

    private func read() throws(StoreError) -> Int64? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw Self.systemError("open", path)
        }
        defer { Glibc.close(fd) }
        // One byte more than any valid content, to tell a long file from a valid one.
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: Self.longestContent + 1)
        while bytes.count <= Self.longestContent {
            let wanted = Self.longestContent + 1 - bytes.count
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, wanted) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Self.systemError("read", path)
            }
            if n == 0 { break }
            bytes.append(contentsOf: buffer[0..<n])
        }
        guard let value = Self.parse(bytes) else {
            throw StoreError(code: .corruptFile, path: path, reason: "expected a decimal offset, found \(Self.describe(bytes))")
        }
        return value
    }

    /// A non-negative decimal `Int64` and an optional newline; nothing else.
    static func parse(_ bytes: [UInt8]) -> Int64? {
        let digits = bytes.last == UInt8(ascii: "\n") ? bytes.dropLast() : bytes[...]
        guard !digits.isEmpty, digits.count <= 19, digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
            return nil
        }
        var value: Int64 = 0
        for digit in digits {
            let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(Int64(digit - UInt8(ascii: "0")))
            if overflow1 || overflow2 { return nil }
            value = sum
        }
        return value
    }

    /// A short, printable rendering of what a corrupt file holds (it may be binary).
    private static func describe(_ bytes: [UInt8]) -> String {
        if bytes.isEmpty { return "an empty file" }
        let shown = bytes.prefix(longestContent).map { byte -> String in
            (0x20..<0x7F).contains(byte) && byte != UInt8(ascii: "\\") ? String(UnicodeScalar(byte)) : "\\x" + PercentEncoding.hex(byte)
        }
        return "\"" + shown.joined() + (bytes.count > longestContent ? "\"..." : "\"")
    }

    private static func systemError(_ call: String, _ path: String) -> StoreError {
        let code = errno
        return StoreError(code: .io, path: path, reason: "\(call): \(String(cString: strerror(code)))")
    }

    // MARK: - File names

    /// Encoded path components stay below this length, so that the temporary name (one dot
    /// before, ".tmp" after) fits NAME_MAX (255).
    static let longestComponent = 240

    /// `<directory>/stream-offsets/<vhost components>` and the queue's components: the
    /// directory of the file and its name.
    static func location(directory: String, queue: String, vhost: String) -> (directory: String, name: String) {
        let queueComponents = components(queue)
        let base = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        let parts = [base, "stream-offsets"] + components(vhost) + queueComponents.dropLast()
        return (parts.joined(separator: "/"), queueComponents.last ?? "%")
    }

    /// A name as safe file-name components: every byte outside `[A-Za-z0-9._-]` becomes `%XX`,
    /// so no name can climb out of the directory or contain "/". Decoding is plain
    /// percent-decoding, so distinct names never share a file:
    /// - the empty name is "%", which no other encoding produces (a "%" is always followed by
    ///   two hex digits);
    /// - a component never starts with "." (that dot is written "%2E"): "." and ".." are
    ///   encoded, no file is hidden, and temporary files (".name.tmp") are apart;
    /// - an encoding longer than `longestComponent` (a 255-byte name may take 765) is cut into
    ///   several components, never inside a `%XX`; every one but the last ends with "%", which
    ///   no complete encoding does, so a cut name's directory can never be another name's file.
    static func components(_ name: String) -> [String] {
        var tokens: [String] = []
        for byte in name.utf8 { tokens.append(PercentEncoding.token(byte)) }
        if tokens.isEmpty { return ["%"] }
        var chunks: [[String]] = [[]]
        var length = 0
        // Room for a leading "%2E" (2 more than the "." it replaces) and a trailing "%".
        let limit = longestComponent - 3
        for token in tokens {
            if length + token.utf8.count > limit {
                chunks.append([])
                length = 0
            }
            chunks[chunks.count - 1].append(token)
            length += token.utf8.count
        }
        return chunks.enumerated().map { index, chunk in
            var text = chunk.joined()
            if text.hasPrefix(".") { text = "%2E" + text.dropFirst() }
            return index == chunks.count - 1 ? text : text + "%"
        }
    }
}
