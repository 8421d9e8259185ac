import Foundation
import Glibc
import Logging
import TestSupport
import Testing

@testable import WarrenCore

/// The control socket server against a real unix socket in a temporary directory, with an
/// `EngineStatus` and `QueueControls` set up by hand (no engine, no broker).
@Suite struct ControlServerTests {
    /// A running server on a fresh path, stopped (and its directory removed) after `body`.
    private func withServer(
        queues: [String] = ["orders", "my queue", "audit"], limits: ControlServer.Limits = ControlServer.Limits(),
        _ body: (_ path: String, _ controls: QueueControls, _ log: CapturedLog) async throws -> Void
    ) async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/control.sock"
        let status = EngineStatus()
        status.configure(queues: queues)
        let controls = QueueControls(status: status)
        let log = CapturedLog()
        let server = try await ControlServer.bind(path: path, controls: controls, logger: log.logger(), limits: limits)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await server.run() }
            do {
                try await body(path, controls, log)
            } catch {
                group.cancelAll()
                throw error
            }
            group.cancelAll()
        }
    }

    static func temporaryDirectory() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-ctl-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    private func ask(_ request: ControlProtocol.Request, _ path: String) async throws -> [String] {
        try await offPool { try ControlClient.send(request, to: path) }
    }

    @Test func statusAnswersOkThenOneLinePerQueueInConfigurationOrder() async throws {
        try await withServer { path, _, _ throws in
            let answer = try await ask(.status, path)
            #expect(
                answer == [
                    "ok",
                    "queue=orders state=waiting in_flight=0 handled=0 failed=0",
                    #"queue="my queue" state=waiting in_flight=0 handled=0 failed=0"#,
                    "queue=audit state=waiting in_flight=0 handled=0 failed=0",
                ])
        }
    }

    @Test func pausingAnUnknownQueueIsAnErrorThatNamesIt() async throws {
        try await withServer { path, controls, _ throws in
            #expect(try await ask(.pause(queue: "nope"), path) == [#"error: no queue named "nope" in the running configuration"#])
            #expect(try await ask(.resume(queue: "nope"), path) == [#"error: no queue named "nope" in the running configuration"#])
            #expect(controls.report().allSatisfy { $0.heldBy == nil })
        }
    }

    @Test func pausingTwiceSaysSoAndLogsOnceAndResumeUndoesIt() async throws {
        try await withServer { path, controls, log throws in
            #expect(try await ask(.pause(queue: "my queue"), path) == [#"ok paused "my queue""#])
            #expect(try await ask(.pause(queue: "my queue"), path) == [#"ok "my queue" was already paused"#])
            #expect(controls.report().first { $0.name == "my queue" }?.heldBy == .operator)
            #expect(try await ask(.status, path).contains(#"queue="my queue" state=paused held_by=operator in_flight=0 handled=0 failed=0"#))
            let paused = log.matching("queue paused by operator")
            #expect(paused.count == 1)
            #expect(paused.first?.level == .info)
            #expect(paused.first?.metadata[LogKeys.queue] == "my queue")

            #expect(try await ask(.resume(queue: "my queue"), path) == [#"ok resumed "my queue""#])
            #expect(try await ask(.resume(queue: "my queue"), path) == [#"ok "my queue" was not paused"#])
            #expect(log.matching("queue resumed by operator").count == 1)
            #expect(controls.report().allSatisfy { $0.heldBy == nil })
        }
    }

    @Test func malformedRequestsAreAnsweredWithAnErrorAndTheNextClientIsServed() async throws {
        try await withServer { path, _, _ throws in
            let cases: [([UInt8], String)] = [
                (Array("stop orders\n".utf8), #"error: unknown command "stop": expected pause QUEUE, resume QUEUE or status"#),
                (Array("pause\n".utf8), "error: no queue name: pause QUEUE"),
                (Array("pause \r\n".utf8), "error: no queue name: pause QUEUE"),
                (Array("\n".utf8), "error: empty request: expected pause QUEUE, resume QUEUE or status"),
                ([0x70, 0xff, 0xfe, 0x0a], "error: the request is not valid UTF-8"),
                ([0x00, 0x01, 0x02, 0x0a], #"error: unknown command "\u0000\u0001\u0002": expected pause QUEUE, resume QUEUE or status"#),
            ]
            for (bytes, expected) in cases {
                #expect(try await RawClient.exchange(path, send: bytes) == expected + "\n")
                #expect(try await ask(.status, path).first == "ok", "the server still answers after \(expected)")
            }
            // CRLF line ends are accepted.
            #expect(try await RawClient.exchange(path, send: Array("status\r\n".utf8)).hasPrefix("ok\n"))
        }
    }

    @Test func aRequestWithoutALineFeedBeforeTheClientShutsDownIsRefused() async throws {
        try await withServer { path, _, _ throws in
            #expect(try await RawClient.exchange(path, send: Array("status".utf8)) == "error: the request must end with a line feed (\\n)\n")
        }
    }

    @Test func anOversizedLineIsRefusedWithoutWaitingForItsEnd() async throws {
        try await withServer { path, _, _ throws in
            // The client does not shut its side down: the answer comes once the limit is passed.
            let line = [UInt8]("pause ".utf8) + [UInt8](repeating: 0x71, count: 4000)
            let answer = try await RawClient.exchange(path, send: line, shutdownWrite: false)
            #expect(answer == "error: request line too long: at most 1024 bytes, the line end included\n")
            #expect(try await ask(.status, path).first == "ok")
        }
    }

    @Test func aClientThatSendsNothingIsAnsweredAndClosedAfterTheTimeout() async throws {
        try await withServer(limits: ControlServer.Limits(requestTimeout: .milliseconds(200))) { path, _, _ throws in
            let answer = try await RawClient.exchange(path, send: [], shutdownWrite: false)
            #expect(answer == "error: no complete request within 200ms of connecting\n")
            // Half a line is no better.
            let partial = try await RawClient.exchange(path, send: Array("pau".utf8), shutdownWrite: false)
            #expect(partial == "error: no complete request within 200ms of connecting\n")
            #expect(try await ask(.status, path).first == "ok")
        }
    }

    @Test func connectionsBeyondTheLimitAreAnsweredWithAnErrorAtOnce() async throws {
        try await withServer(limits: ControlServer.Limits(requestTimeout: .seconds(60), maxConnections: 2)) { path, _, _ throws in
            let first = try RawClient.connect(path)
            let second = try RawClient.connect(path)
            defer { close(second) }
            // Both idle connections hold their places (the server has accepted them once a
            // third one is refused; retry until then, since accepting is asynchronous).
            var answer = ""
            let deadline = ContinuousClock.now + .seconds(20)
            repeat {
                answer = try await RawClient.exchange(path, send: Array("status\n".utf8))
            } while answer.hasPrefix("ok") && ContinuousClock.now < deadline
            // Closed here whatever the outcome (once: a second close could hit a reused descriptor).
            close(first)
            #expect(answer == "error: too many control connections at once (2); try again\n")
            // A place is free again.
            var freed = false
            while !freed && ContinuousClock.now < deadline {
                freed = try await RawClient.exchange(path, send: Array("status\n".utf8)).hasPrefix("ok\n")
            }
            #expect(freed)
        }
    }

    @Test func aClientThatDoesNotReadItsAnswerLosesItsPlaceAfterTheTimeout() async throws {
        // An answer far larger than the socket buffers: it cannot all be written unread.
        let queues = (0..<20_000).map { "queue-with-a-long-name-\($0)" }
        let limits = ControlServer.Limits(requestTimeout: .milliseconds(300), maxConnections: 1)
        try await withServer(queues: queues, limits: limits) { path, _, _ throws in
            let stuck = try RawClient.connect(path)
            defer { close(stuck) }
            _ = "status\n".withCString { send(stuck, $0, 7, Int32(MSG_NOSIGNAL)) }
            // Its one place is taken until the server gives up on it; then another client is served.
            var served = false
            let deadline = ContinuousClock.now + .seconds(20)
            while !served && ContinuousClock.now < deadline {
                let answer = try await RawClient.exchange(path, send: Array("resume nope\n".utf8))
                served = answer.hasPrefix("error: no queue named")
            }
            #expect(served)
        }
    }

    @Test func theSocketFileIsMode0660AndRemovedOnStop() async throws {
        var socketPath = ""
        try await withServer { path, _, _ throws in
            socketPath = path
            var info = stat()
            #expect(lstat(path, &info) == 0)
            #expect(info.st_mode & S_IFMT == S_IFSOCK)
            #expect(info.st_mode & 0o777 == 0o660)
        }
        // withServer returned once run() did (the task group waits for it).
        #expect(!FileManager.default.fileExists(atPath: socketPath))
    }

    @Test func aSecondServerOnTheSamePathIsRefusedWhileTheFirstRuns() async throws {
        try await withServer { path, controls, log throws in
            await #expect {
                _ = try await ControlServer.bind(path: path, controls: controls, logger: log.logger())
            } throws: { error in
                guard let error = error as? ControlServer.BindError else { return false }
                return error.code == .inUse && error.description.contains(path) && error.description.contains("another warren")
            }
            // The first one's socket is untouched.
            #expect(try await ask(.status, path).first == "ok")
        }
    }

    @Test func aStaleSocketFileIsReplaced() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/control.sock"
        try RawClient.leaveStaleSocket(at: path)
        #expect(RawClient.connectErrno(path) == ECONNREFUSED)

        let status = EngineStatus()
        status.configure(queues: ["orders"])
        let log = CapturedLog()
        let server = try await ControlServer.bind(path: path, controls: QueueControls(status: status), logger: log.logger())
        #expect(log.contains("removed a stale control socket"))
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await server.run() }
            #expect((try? await ask(.status, path))?.first == "ok")
            group.cancelAll()
        }
    }

    @Test func aFileThatIsNotASocketIsRefusedAndLeftAlone() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/control.sock"
        try "keep me".write(toFile: path, atomically: false, encoding: .utf8)
        await #expect {
            _ = try await ControlServer.bind(path: path, controls: QueueControls(status: EngineStatus()), logger: Logger(label: "t"))
        } throws: { error in
            (error as? ControlServer.BindError)?.code == .notASocket
        }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "keep me")
    }

    @Test func aMissingDirectoryIsReportedAsSuch() async throws {
        let path = "/nonexistent-\(UUID().uuidString.prefix(8))/control.sock"
        await #expect {
            _ = try await ControlServer.bind(path: path, controls: QueueControls(status: EngineStatus()), logger: Logger(label: "t"))
        } throws: { error in
            (error as? ControlServer.BindError)?.code == .directoryMissing
        }
    }

    @Test func theClientNamesWhyItCannotConnect() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let missing = directory + "/none.sock"
        #expect(throws: ControlClient.Failure(code: .noSocket, path: missing, reason: "No such file or directory")) {
            try ControlClient.send(.status, to: missing)
        }
        let stale = directory + "/stale.sock"
        try RawClient.leaveStaleSocket(at: stale)
        #expect(throws: ControlClient.Failure(code: .refused, path: stale, reason: "Connection refused")) {
            try ControlClient.send(.status, to: stale)
        }
    }
}

/// Raw bytes over a unix socket, on a thread of its own (blocking calls stay off the pool).
enum RawClient {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func connect(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let result = withAddress(path) { Glibc.connect(fd, $0, $1) }
        guard result == 0 else {
            close(fd)
            throw Failure(description: "connect \(path): \(String(cString: strerror(errno)))")
        }
        return fd
    }

    static func connectErrno(_ path: String) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        return withAddress(path) { Glibc.connect(fd, $0, $1) } == 0 ? 0 : errno
    }

    /// Sends `bytes` (then shuts down the writing side, unless told not to) and reads the
    /// answer until the server closes.
    static func exchange(_ path: String, send bytes: [UInt8], shutdownWrite: Bool = true) async throws -> String {
        try await offPool {
            let fd = try connect(path)
            defer { close(fd) }
            if !bytes.isEmpty {
                // A refused request may be closed before all of it is written: EPIPE is fine.
                _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
            if shutdownWrite { shutdown(fd, Int32(SHUT_WR)) }
            var answer: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count < 0, errno == ECONNRESET { break }
                guard count >= 0 else { throw Failure(description: "recv: \(String(cString: strerror(errno)))") }
                if count == 0 { break }
                answer += chunk[..<count]
            }
            return String(decoding: answer, as: UTF8.self)
        }
    }

    /// A socket file bound and closed without listening: what a warren killed with SIGKILL leaves.
    static func leaveStaleSocket(at path: String) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        guard withAddress(path, { bind(fd, $0, $1) }) == 0 else {
            throw Failure(description: "bind \(path): \(String(cString: strerror(errno)))")
        }
    }

    private static func withAddress(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes.prefix(raw.count - 1))
            raw[min(bytes.count, raw.count - 1)] = 0
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }
}
