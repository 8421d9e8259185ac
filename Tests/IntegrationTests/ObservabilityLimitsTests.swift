import Foundation
import Glibc
import TestSupport
import Testing
import WarrenCore

/// The metrics listener itself, on an ephemeral loopback port: it closes connections that hold
/// a socket without sending a complete request, and refuses connections beyond its cap. No
/// broker is needed. Each socket read has a generous receive timeout as a failure guard only.
@Suite("Metrics listener limits", .timeLimit(.minutes(1)))
struct ObservabilityLimitsTests {
    /// One client socket, blocking, with a receive timeout as the failure guard.
    struct Client: Sendable {
        let fd: Int32

        init(port: Int, guardTimeout: Int = 15) throws {
            guard let fd = tcpConnect("127.0.0.1", port) else { throw TestTimeout(what: "connecting to 127.0.0.1:\(port)") }
            var timeout = timeval(tv_sec: guardTimeout, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            self.fd = fd
        }

        /// False once the peer closed (EPIPE, ECONNRESET).
        @discardableResult
        func send(_ text: String) -> Bool {
            let bytes = Array(text.utf8)
            return bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
        }

        enum Read: Equatable {
            case bytes([UInt8])
            /// The server closed the connection (FIN or reset).
            case closed
            /// The failure guard: nothing came within the receive timeout.
            case timedOut
        }

        func read() -> Read {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count > 0 { return .bytes(Array(buffer[..<count])) }
            if count == 0 { return .closed }
            let code = errno
            return code == EAGAIN || code == EWOULDBLOCK ? .timedOut : .closed
        }

        /// Reads until a whole response to `GET /healthz` (body "ok\n") arrived; false if the
        /// connection closed or went quiet first.
        func readHealthzResponse() -> Bool {
            var received: [UInt8] = []
            while !String(decoding: received, as: UTF8.self).hasSuffix("\r\n\r\nok\n") {
                guard case .bytes(let more) = read() else { return false }
                received += more
            }
            return String(decoding: received, as: UTF8.self).hasPrefix("HTTP/1.1 200")
        }

        /// Reads and discards until the server closes the connection; false on the guard timeout.
        func closedByServer() -> Bool {
            while true {
                switch read() {
                case .bytes: continue
                case .closed: return true
                case .timedOut: return false
                }
            }
        }

        func close() { Glibc.close(fd) }
    }

    static let request = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    /// Runs `body` against a listener with `limits`, then stops it.
    static func withServer(_ limits: ObservabilityLimits, _ body: @Sendable (Int) async throws -> Void) async throws {
        let sources = ObservabilityServer.Sources(status: EngineStatus(), liveness: { .alive }, metrics: { [] })
        let server = try await ObservabilityServer.bind(host: "127.0.0.1", port: 0, sources: sources, limits: limits)
        let port = try #require(server.port)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await server.run() }
            defer { group.cancelAll() }
            try await body(port)
        }
    }

    @Test func anIdleKeepAliveConnectionIsClosedByTheServer() async throws {
        try await Self.withServer(ObservabilityLimits(requestTimeout: .milliseconds(300))) { port in
            let client = try Client(port: port)
            defer { client.close() }
            client.send(Self.request)
            #expect(await offPool { client.readHealthzResponse() })
            // Keep-alive: the server would wait for the next request forever without the limit.
            #expect(await offPool { client.closedByServer() })
        }
    }

    @Test func aConnectionThatNeverSendsARequestIsClosed() async throws {
        try await Self.withServer(ObservabilityLimits(requestTimeout: .milliseconds(300))) { port in
            let client = try Client(port: port)
            defer { client.close() }
            #expect(await offPool { client.closedByServer() })
        }
    }

    /// Slowloris: bytes keep coming, but never a whole request. Trickling must not extend the
    /// deadline; the client stops as soon as the server closed.
    @Test func aClientThatTricklesAnEndlessRequestIsClosed() async throws {
        try await Self.withServer(ObservabilityLimits(requestTimeout: .milliseconds(500))) { port in
            let client = try Client(port: port, guardTimeout: 1)
            defer { client.close() }
            #expect(client.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"))
            let closed = await offPool {
                for index in 0..<150 {
                    // A send into a closed connection fails (EPIPE) or a read sees its end.
                    if !client.send("X-Slow-\(index): a\r\n") { return true }
                    var poller = pollfd(fd: client.fd, events: Int16(POLLIN), revents: 0)
                    if poll(&poller, 1, 100) > 0 && client.read() == .closed { return true }
                }
                return false
            }
            #expect(closed, "15 s of trickled headers and the connection is still open")
        }
    }

    @Test func connectionsBeyondTheCapAreClosedWhileOnesWithinItAreAnswered() async throws {
        try await Self.withServer(ObservabilityLimits(requestTimeout: .seconds(60), maxConnections: 2)) { port in
            let first = try Client(port: port)
            defer { first.close() }
            let second = try Client(port: port)
            // Both admitted: each is answered and stays open (keep-alive).
            first.send(Self.request)
            #expect(await offPool { first.readHealthzResponse() })
            second.send(Self.request)
            #expect(await offPool { second.readHealthzResponse() })

            let third = try Client(port: port)
            third.send(Self.request)
            #expect(await offPool { third.closedByServer() }, "a third connection was kept open with a cap of 2")
            third.close()

            // The connections within the cap are still served.
            first.send(Self.request)
            #expect(await offPool { first.readHealthzResponse() })

            // Closing one frees its place (once the server has seen the close).
            second.close()
            var answered = false
            for _ in 0..<50 where !answered {
                let next = try Client(port: port)
                next.send(Self.request)
                answered = await offPool { next.readHealthzResponse() }
                next.close()
                if !answered { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(answered)
        }
    }
}
