import Foundation
import Glibc

/// An append-only file shared by the runs of one `file` handler. With `fsync = "batch"` the
/// writers that arrive while an fsync is running share the next one (group commit): one fsync
/// per burst instead of one per message, and still no success before the data is on disk.
actor FileSink {
    struct WriteError: Error, CustomStringConvertible {
        var description: String
    }

    nonisolated let path: String
    private let mode: FsyncMode
    private var fd: Int32 = -1
    /// Bumped by every append; an fsync covers every append up to the value it started at.
    private var appended: UInt64 = 0
    private var synced: UInt64 = 0
    private var syncing = false
    private var waiters: [(upTo: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []

    init(path: String, mode: FsyncMode) {
        self.path = path
        self.mode = mode
    }

    func append(_ line: [UInt8]) async throws {
        try openIfNeeded()
        try line.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress.map { $0 + offset }, buffer.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw WriteError(description: String(cString: strerror(errno)))
                }
                offset += n
            }
        }
        appended += 1
        switch mode {
        case .never:
            return
        case .always:
            try sync()
        case .batch:
            let mine = appended
            if syncing {
                try await withCheckedThrowingContinuation { waiters.append((mine, $0)) }
            } else {
                try await syncLoop(covering: mine)
            }
        }
    }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    private func openIfNeeded() throws {
        guard fd < 0 else { return }
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        if fd < 0 { throw WriteError(description: "cannot open: \(String(cString: strerror(errno)))") }
    }

    private func sync() throws {
        if Glibc.fsync(fd) != 0 { throw WriteError(description: "fsync failed: \(String(cString: strerror(errno)))") }
    }

    /// Runs fsyncs until this writer and every writer that queued meanwhile are covered. The
    /// fsync runs off the actor, so other writers can append (and queue) while it runs.
    private func syncLoop(covering mine: UInt64) async throws {
        syncing = true
        defer { syncing = false }
        var mineResult: Result<Void, any Error>?
        repeat {
            let target = appended
            let result = await Self.fsync(fd)
            if case .success = result { synced = target }
            var remaining: [(upTo: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
            for waiter in waiters {
                if waiter.upTo <= target { waiter.continuation.resume(with: result) } else { remaining.append(waiter) }
            }
            waiters = remaining
            if mineResult == nil, mine <= target { mineResult = result }
        } while mineResult == nil || !waiters.isEmpty
        try mineResult?.get()
    }

    @concurrent private static func fsync(_ fd: Int32) async -> Result<Void, any Error> {
        Glibc.fsync(fd) == 0 ? .success(()) : .failure(WriteError(description: "fsync failed: \(String(cString: strerror(errno)))"))
    }
}
