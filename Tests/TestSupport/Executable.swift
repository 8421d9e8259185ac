import Glibc
import Synchronization

/// Writes `contents` to `path` as an executable file (mode 0755) that no process of ours ever
/// had open for writing.
///
/// Tests run in parallel, and any child another test spawns (a handler's process, a broker
/// tool) starts with a copy of this process's descriptors until it execs, close-on-exec ones
/// included. Had this process opened `path` for writing, running it at that moment would fail
/// with ETXTBSY ("Text file busy"). So the bytes go to a temporary file, and `install`, a child
/// of its own, copies them to `path` and exits: only it ever opened `path` for writing.
public func writeExecutable(_ contents: String, to path: String) throws {
    let staging = "\(path).staging-\(getpid())-\(stagingCounter.add(1, ordering: .relaxed).newValue)"
    defer { unlink(staging) }
    let fd = open(staging, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw ExecutableWriteError(path: staging, errno: errno) }
    let bytes = Array(contents.utf8)
    var written = 0
    while written < bytes.count {
        let n = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            let error = errno
            close(fd)
            throw ExecutableWriteError(path: staging, errno: error)
        }
        written += n
    }
    close(fd)
    guard spawnAndWait(["/usr/bin/install", "-m", "755", staging, path]) == 0 else {
        throw ExecutableWriteError(path: path, errno: EIO)
    }
}

private let stagingCounter = Atomic<Int>(0)

/// The calling thread's name (`pthread_setname_np`; `BlockingThreads` are named for their role,
/// e.g. "warren-worker").
public func currentThreadName() -> String {
    // Linux keeps it in /proc/thread-self/comm (pthread_getname_np is not in the Glibc module).
    let fd = open("/proc/thread-self/comm", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return "" }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 32)
    let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard count > 0 else { return "" }
    return String(decoding: buffer[..<count].filter { $0 != 0x0A }, as: UTF8.self)
}

public struct ExecutableWriteError: Error, CustomStringConvertible {
    public let path: String
    public let errno: Int32
    public var description: String { "cannot write \(path): \(String(cString: strerror(errno)))" }
}
