import Foundation
import Glibc
import Synchronization

/// A TCP proxy on 127.0.0.1 between a client under test and the broker, for fault injection.
/// `freeze()` black-holes traffic: connections stay up, but no byte passes in either direction
/// (what a dead switch or a paused VM looks like); `thaw()` resumes. `cut()` closes every open
/// connection at once (a reset mid-frame, as a NAT or load balancer timeout does); new
/// connections are accepted as before. Runs on its own thread and
/// stops by itself when `stop()` is called or the test process ends.
final class LoopbackProxy: Sendable {
    let port: Int
    private let listener: Int32
    private let state = Mutex(State())

    private struct State {
        var frozen = false
        var stopped = false
        var droppingDeliveries = false
        var mutateDelivery: (@Sendable ([UInt8]) -> [UInt8]?)?
        /// Bumped by `cut()`; a pump whose generation is older closes its connection.
        var generation = 0
    }

    init(upstreamHost: String, upstreamPort: Int) throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { throw ProxyError("socket() failed") }
        self.listener = listener
        var on: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(listener, 16) == 0 else { throw ProxyError("bind/listen failed") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread { [self] in
            self.acceptLoop(listener: listener, upstreamHost: upstreamHost, upstreamPort: upstreamPort)
        }
        thread.name = "test-proxy"
        thread.start()
    }

    func freeze() { state.withLock { $0.frozen = true } }
    func thaw() { state.withLock { $0.frozen = false } }
    func stop() { state.withLock { $0.stopped = true } }
    func cut() { state.withLock { $0.generation += 1 } }
    /// From now on (until `resumeDeliveries()`), `basic.deliver` frames and their content are
    /// swallowed on the way to the client (AMQPFrameFilter).
    func dropDeliveries() { state.withLock { $0.droppingDeliveries = true } }
    func resumeDeliveries() { state.withLock { $0.droppingDeliveries = false } }
    /// From now on, the content header of every delivery to the client goes through `mutate`
    /// (nil: unchanged); for what the broker itself would never send.
    func mutateDeliveryHeaders(_ mutate: (@Sendable ([UInt8]) -> [UInt8]?)?) { state.withLock { $0.mutateDelivery = mutate } }

    private var snapshot: State { state.withLock { $0 } }

    private func acceptLoop(listener: Int32, upstreamHost: String, upstreamPort: Int) {
        defer { close(listener) }
        while !snapshot.stopped {
            var pfd = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 100) > 0 else { continue }
            let client = accept(listener, nil, nil)
            guard client >= 0 else { continue }
            var on: Int32 = 1
            setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
            guard let upstream = Self.connectUpstream(upstreamHost, upstreamPort) else {
                close(client)
                continue
            }
            let generation = snapshot.generation
            let thread = Thread { [self] in self.pump(client, upstream, generation: generation) }
            thread.name = "test-proxy-pump"
            thread.start()
        }
    }

    private func pump(_ a: Int32, _ b: Int32, generation: Int) {
        defer {
            close(a)
            close(b)
        }
        var buffer = [UInt8](repeating: 0, count: 65_536)
        // `b` is the broker: its bytes to the client go through the frame filter.
        var filter = AMQPFrameFilter()
        while true {
            let state = snapshot
            if state.stopped || state.generation != generation { return }
            if state.frozen {
                usleep(10_000)
                continue
            }
            var fds = [pollfd(fd: a, events: Int16(POLLIN), revents: 0), pollfd(fd: b, events: Int16(POLLIN), revents: 0)]
            guard poll(&fds, 2, 50) > 0 else { continue }
            for (from, to) in [(0, 1), (1, 0)] where fds[from].revents != 0 {
                if snapshot.frozen { break }
                let n = buffer.withUnsafeMutableBytes { read(fds[from].fd, $0.baseAddress, $0.count) }
                if n <= 0 { return }
                let (dropping, mutate) = self.state.withLock { ($0.droppingDeliveries, $0.mutateDelivery) }
                let out = from == 1
                    ? buffer.withUnsafeBytes {
                        filter.filter(UnsafeRawBufferPointer(rebasing: $0[0..<n]), dropDeliveries: dropping, mutateDelivery: mutate)
                    }
                    : Array(buffer[0..<n])
                var sent = 0
                while sent < out.count {
                    let w = out.withUnsafeBytes { send(fds[to].fd, $0.baseAddress! + sent, out.count - sent, Int32(MSG_NOSIGNAL)) }
                    if w <= 0 { return }
                    sent += w
                }
            }
        }
    }

    private static func connectUpstream(_ host: String, _ port: Int) -> Int32? {
        tcpConnect(host, port)
    }
}

struct ProxyError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
