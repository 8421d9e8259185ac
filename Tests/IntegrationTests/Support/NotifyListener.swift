import Foundation
import Glibc
import Synchronization

/// The systemd side of sd_notify for tests: a datagram socket in the abstract namespace that
/// records every notification warren sends, with the time it arrived, on a thread of its own.
final class NotifyListener: Sendable {
    struct Datagram: Sendable {
        var at: ContinuousClock.Instant
        var text: String

        /// The `KEY=value` lines of the datagram.
        var lines: [Substring] { text.split(separator: "\n") }
    }

    /// What `NOTIFY_SOCKET` must say (`@` = abstract namespace).
    let name: String
    private let fd: Int32
    private let received = Mutex<[Datagram]>([])
    private let stopped = Atomic<Bool>(false)

    init() throws {
        name = "@warren-test-notify-\(UUID().uuidString.prefix(8))"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(name.utf8)
        bytes[0] = 0
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard fd >= 0, bound == 0 else { throw TestTimeout(what: "binding the notify socket") }
        self.fd = fd
        let thread = Thread { [self] in self.receiveLoop() }
        thread.name = "test-notify-listener"
        thread.start()
    }

    var datagrams: [Datagram] { received.withLock { $0 } }

    /// Every datagram carrying the line `line`.
    func matching(_ line: String) -> [Datagram] { datagrams.filter { $0.lines.contains(Substring(line)) } }

    /// Waits for the first datagram carrying `line` (arrived at or after `since`); nil after `timeout`.
    func wait(for line: String, since: ContinuousClock.Instant? = nil, timeout: Duration) async -> Datagram? {
        await wait(timeout: timeout) { datagrams in
            datagrams.first { datagram in datagram.lines.contains(Substring(line)) && since.map { datagram.at >= $0 } ?? true }
        }
    }

    /// Polls every 20 ms until `found` returns something, for at most `timeout`.
    func wait<T>(timeout: Duration, _ found: ([Datagram]) -> T?) async -> T? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let result = found(datagrams) { return result }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return found(datagrams)
    }

    func stop() { stopped.store(true, ordering: .releasing) }

    private func receiveLoop() {
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !stopped.load(ordering: .acquiring) {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 100) > 0 else { continue }
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { continue }
            let datagram = Datagram(at: .now, text: String(decoding: buffer.prefix(count), as: UTF8.self))
            received.withLock { $0.append(datagram) }
        }
    }
}
