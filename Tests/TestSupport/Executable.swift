import Glibc

/// Writes `contents` to `path` as an executable file (mode 0755), through a descriptor that is
/// closed on exec. Tests run in parallel, and a child another test spawns while this file is
/// open for writing would otherwise inherit the descriptor and make running the file fail with
/// ETXTBSY ("Text file busy") until that child execs.
public func writeExecutable(_ contents: String, to path: String) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o755)
    guard fd >= 0 else { throw ExecutableWriteError(path: path, errno: errno) }
    defer { close(fd) }
    let bytes = Array(contents.utf8)
    var written = 0
    while written < bytes.count {
        let n = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw ExecutableWriteError(path: path, errno: errno)
        }
        written += n
    }
    // The mode of open() is filtered by the umask; the file must be executable regardless.
    guard fchmod(fd, 0o755) == 0 else { throw ExecutableWriteError(path: path, errno: errno) }
}

/// The calling thread's name (`pthread_setname_np`; a `WorkerThread` is named after its queue's
/// role, e.g. "warren-worker").
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
