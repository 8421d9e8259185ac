import Foundation
import Glibc
import Testing

@testable import WarrenCore

/// The sd_notify protocol: which datagram each status change calls for, and the datagrams
/// themselves on a real AF_UNIX socket (path and abstract namespace).
@Suite("systemd notifications")
struct SystemdNotifierTests {
    static func snapshot(queues: [String: Bool], up: Bool = true, failedAttempts: Int = 0, stopping: Bool = false) -> EngineStatus.Snapshot {
        var snapshot = EngineStatus.Snapshot()
        snapshot.consuming = queues
        snapshot.connections[.consumer]?.up = up
        snapshot.connections[.consumer]?.failedAttempts = failedAttempts
        snapshot.connections[.publisher]?.up = up
        snapshot.stopping = stopping
        return snapshot
    }

    @Test func readyIsSentOnceWhenEveryQueueFirstHasAConsumerAndStatusFollowsEveryChange() {
        var notifications = StatusNotifications()
        #expect(notifications.message(for: Self.snapshot(queues: ["a": false, "b": false], up: false)) == "STATUS=connecting to the broker")
        #expect(notifications.message(for: Self.snapshot(queues: ["a": true, "b": false])) == "STATUS=consuming 1/2 queues")
        #expect(notifications.message(for: Self.snapshot(queues: ["a": true, "b": true])) == "READY=1\nSTATUS=consuming 2/2 queues")
        #expect(notifications.message(for: Self.snapshot(queues: ["a": true, "b": true])) == nil)
        #expect(
            notifications.message(for: Self.snapshot(queues: ["a": false, "b": false], up: false, failedAttempts: 3))
                == "STATUS=broker unreachable, reconnecting (attempt 4)")
        // Ready again after a reconnect: systemd already knows, only the status changes.
        #expect(notifications.message(for: Self.snapshot(queues: ["a": true, "b": true])) == "STATUS=consuming 2/2 queues")
        #expect(
            notifications.message(for: Self.snapshot(queues: ["a": true, "b": true], stopping: true))
                == "STOPPING=1\nSTATUS=stopping: finishing in-flight messages")
        #expect(notifications.message(for: Self.snapshot(queues: ["a": false, "b": true], stopping: true)) == nil)
    }

    @Test func aStopRequestedOutsideASessionStillSendsStoppingOnce() {
        var notifications = StatusNotifications()
        _ = notifications.message(for: Self.snapshot(queues: ["a": false], up: false, failedAttempts: 1))
        #expect(notifications.stopRequested() == "STOPPING=1")
        #expect(notifications.stopRequested() == nil)
        #expect(notifications.message(for: Self.snapshot(queues: ["a": false], up: false, stopping: true)) == "STATUS=stopping: finishing in-flight messages")
    }

    @Test(arguments: [false, true])
    func datagramsReachTheNotifySocket(abstract: Bool) throws {
        let name = abstract ? "@warren-test-\(UUID().uuidString)" : FileManager.default.temporaryDirectory.appendingPathComponent("warren-notify-\(UUID().uuidString.prefix(8))").path
        let receiver = try DatagramReceiver(name)
        defer { receiver.close() }
        let notifier = try #require(SystemdNotifier(socketPath: name, watchdogInterval: nil))
        #expect(notifier.send("READY=1\nSTATUS=consuming 1/1 queues"))
        #expect(receiver.receive(timeoutMS: 2000) == "READY=1\nSTATUS=consuming 1/1 queues")
    }

    @Test func aRelativeOrOverlongSocketNameIsRefused() {
        #expect(SystemdNotifier(socketPath: "relative/path", watchdogInterval: nil) == nil)
        #expect(SystemdNotifier(socketPath: "/" + String(repeating: "x", count: 200), watchdogInterval: nil) == nil)
    }

    @Test func theWatchdogIntervalIsHalfOfWatchdogUsecAndTheVariablesAreRemoved() throws {
        let name = "@warren-test-\(UUID().uuidString)"
        setenv("NOTIFY_SOCKET", name, 1)
        setenv("WATCHDOG_USEC", "3000000", 1)
        setenv("WATCHDOG_PID", "\(getpid())", 1)
        let notifier = try #require(SystemdNotifier.fromEnvironment())
        #expect(notifier.watchdogInterval == .milliseconds(1500))
        #expect(getenv("NOTIFY_SOCKET") == nil)
        #expect(getenv("WATCHDOG_USEC") == nil)
        #expect(getenv("WATCHDOG_PID") == nil)
    }
}

/// A bound AF_UNIX datagram socket, as systemd holds one.
final class DatagramReceiver {
    let fd: Int32
    let path: String?

    init(_ name: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(name.utf8)
        let abstract = bytes.first == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        path = abstract ? nil : name
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard fd >= 0, bound == 0 else { throw POSIXError(.EADDRINUSE) }
    }

    func receive(timeoutMS: Int32) -> String? {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, timeoutMS) > 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return count < 0 ? nil : String(decoding: buffer.prefix(count), as: UTF8.self)
    }

    func close() {
        _ = Glibc.close(fd)
        if let path { unlink(path) }
    }
}
