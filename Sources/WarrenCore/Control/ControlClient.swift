import Glibc

/// `warren ctl`'s side of the control socket: connect, send one request line, read the answer
/// until the server closes. Plain blocking system calls, bounded by socket timeouts: a
/// short-lived command with one connection needs no event loop, and the errno of `connect` is
/// what tells the operator what is wrong (no such file, permission denied, refused).
public enum ControlClient {
    /// The most the client reads back (a status line per queue is far below it).
    static let maxAnswerBytes = 4 << 20

    public struct Failure: Error, Sendable, Equatable, CustomStringConvertible {
        public enum Code: Sendable, Equatable {
            /// No file at the path.
            case noSocket
            /// The file's mode (0660) keeps this user out.
            case permissionDenied
            /// A socket file nobody listens on.
            case refused
            case timeout
            /// The server closed without an answer.
            case noAnswer
            case other
        }

        public let code: Code
        public let path: String
        public let reason: String

        public var description: String {
            switch code {
            case .noSocket:
                "cannot reach warren at \(path): no such file (warren is not running, or its [control] socket is another path: pass --config or --socket)"
            case .permissionDenied:
                "cannot reach warren at \(path): permission denied (the socket is mode 0660: run as root, as the service user, or as a member of its group)"
            case .refused:
                "cannot reach warren at \(path): connection refused (a stale socket: warren is not running)"
            case .timeout:
                "no answer from warren at \(path) within the time limit"
            case .noAnswer:
                "warren at \(path) closed the connection without answering"
            case .other:
                "cannot reach warren at \(path): \(reason)"
            }
        }
    }

    /// The answer's lines (without line ends) to `request`, within `timeout`.
    public static func send(_ request: ControlProtocol.Request, to path: String, timeout: Duration = .seconds(10)) throws(Failure)
        -> [String]
    {
        let deadline = ContinuousClock.now + timeout
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw failure(errno, path) }
        defer { close(fd) }
        try limit(fd, until: deadline, path)
        let connected = UnixSocketAddress.withAddress(path) { address, length in
            Glibc.connect(fd, address, length) == 0 ? 0 : errno
        }
        guard let connected else { throw Failure(code: .other, path: path, reason: "the path is too long for a unix socket") }
        guard connected == 0 else { throw failure(connected, path) }

        var line = Array(request.line.utf8)
        while !line.isEmpty {
            try limit(fd, until: deadline, path)
            let written = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                throw failure(errno, path)
            }
            line.removeFirst(written)
        }
        var answer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while answer.count < maxAnswerBytes {
            try limit(fd, until: deadline, path)
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw failure(errno, path)
            }
            if count == 0 { break }
            answer.append(contentsOf: chunk[..<count])
        }
        guard !answer.isEmpty else { throw Failure(code: .noAnswer, path: path, reason: "") }
        var lines = String(decoding: answer, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        return lines
    }

    /// Whether an answer reports success (`ok` or `ok <text>`).
    public static func isSuccess(_ answer: [String]) -> Bool {
        guard let first = answer.first else { return false }
        return first == "ok" || first.hasPrefix("ok ")
    }

    /// Sets the socket's send and receive timeouts to what is left until `deadline`.
    private static func limit(_ fd: Int32, until deadline: ContinuousClock.Instant, _ path: String) throws(Failure) {
        let left = deadline - ContinuousClock.now
        guard left > .zero else { throw Failure(code: .timeout, path: path, reason: "") }
        let (seconds, attoseconds) = left.components
        // At least 1 µs: a zero timeval would mean "no timeout".
        var value = timeval(tv_sec: Int(seconds), tv_usec: max(1, Int(attoseconds / 1_000_000_000_000)))
        let size = socklen_t(MemoryLayout<timeval>.size)
        guard setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, size) == 0, setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &value, size) == 0 else {
            throw failure(errno, path)
        }
    }

    private static func failure(_ code: Int32, _ path: String) -> Failure {
        let reason = String(cString: strerror(code))
        switch code {
        case ENOENT, ENOTDIR: return Failure(code: .noSocket, path: path, reason: reason)
        case EACCES, EPERM: return Failure(code: .permissionDenied, path: path, reason: reason)
        case ECONNREFUSED: return Failure(code: .refused, path: path, reason: reason)
        case EAGAIN, ETIMEDOUT, EINPROGRESS: return Failure(code: .timeout, path: path, reason: reason)
        default: return Failure(code: .other, path: path, reason: reason)
        }
    }
}
