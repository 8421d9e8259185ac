internal import CRabbitMQShims
import Foundation
import Glibc

/// The body of a delivery larger than its consumer's `maxBodySize`, kept in an unnamed
/// temporary file instead of memory, so that what oversized deliveries cost in memory does not
/// grow with the prefetch or the body size.
///
/// The file has no name (`O_TMPFILE`, or `mkstemp` then `unlink`): its space goes back to the
/// file system when the last reference to this object goes (the descriptor is closed on
/// deinit), and even if the process dies.
///
/// `Sendable`: the descriptor and size never change after init; the file is written only on the
/// I/O thread before the delivery is handed over, and read afterwards with `pread`/`mmap`, which
/// take no file offset, so concurrent readers do not disturb one another.
public final class SpooledBody: Sendable {
    /// Bytes in the file once complete: the size the content header announced.
    public let size: Int
    private let fd: Int32

    private init(fd: Int32, size: Int) {
        self.fd = fd
        self.size = size
    }

    deinit { close(fd) }

    /// Where spool files go: `$TMPDIR` when set, else `/tmp`.
    static var directory: String {
        if let dir = ProcessInfo.processInfo.environment["TMPDIR"], !dir.isEmpty { return dir }
        return "/tmp"
    }

    /// An empty unnamed file in `directory`, for a body of `size` bytes.
    static func create(size: Int, in directory: String = SpooledBody.directory) throws(AMQPError) -> SpooledBody {
        let fd = warren_open_unnamed_tmpfile(directory)
        guard fd >= 0 else {
            throw AMQPError(.spoolFailed, "cannot create a spool file in \(directory): \(String(cString: strerror(-fd)))")
        }
        return SpooledBody(fd: fd, size: size)
    }

    /// Appends `bytes` (one body frame) at the end of what is written; retries short writes.
    func append(_ bytes: UnsafeRawBufferPointer) throws(AMQPError) {
        var offset = 0
        while offset < bytes.count {
            let written = write(fd, bytes.baseAddress.map { $0 + offset }, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                throw AMQPError(.spoolFailed, "writing a spool file failed: \(String(cString: strerror(errno)))")
            }
            offset += written
        }
    }

    /// The whole body, read into memory. For tests and tools: the engine never does this.
    public func readAll() throws(AMQPError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: size)
        var offset = 0
        let fd = fd
        let failure: Int32? = bytes.withUnsafeMutableBytes { buffer in
            while offset < buffer.count {
                let read = pread(fd, buffer.baseAddress.map { $0 + offset }, buffer.count - offset, off_t(offset))
                if read < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                if read == 0 { return EIO }
                offset += read
            }
            return nil
        }
        if let failure {
            throw AMQPError(.spoolFailed, "reading a spool file failed: \(String(cString: strerror(failure)))")
        }
        return bytes
    }

    /// Maps the file read-only for the duration of `body` and unmaps it right after: the pages
    /// count towards the process's memory only while mapped. The I/O thread publishes one
    /// message at a time, so one connection maps at most one spooled body at any moment.
    func withMappedBytes<T>(_ body: (UnsafeRawBufferPointer) -> T) throws(AMQPError) -> T {
        guard size > 0 else { return body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        guard let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), address != MAP_FAILED else {
            throw AMQPError(.spoolFailed, "mapping a spool file of \(size) bytes failed: \(String(cString: strerror(errno)))")
        }
        defer { munmap(address, size) }
        _ = madvise(address, size, MADV_SEQUENTIAL)
        return body(UnsafeRawBufferPointer(start: address, count: size))
    }
}

/// A delivery's body that was over its consumer's limit (`ConsumeOptions.maxBodySize`): it was
/// never held in memory, and `Delivery.body` is empty.
public struct OversizedBody: Sendable {
    /// The size the content header announced, which the body frames carried.
    public let size: Int
    /// The body in an unnamed temporary file, or why it could not be kept there (disk full, no
    /// temporary directory): then the body is gone from this process, and only the broker has it.
    public let spool: Result<SpooledBody, AMQPError>

    public init(size: Int, spool: Result<SpooledBody, AMQPError>) {
        self.size = size
        self.spool = spool
    }
}
