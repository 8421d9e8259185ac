import Glibc
import Logging

/// systemd's service notification protocol (sd_notify(3)), spoken directly: `READY=1` once
/// every queue first has a consumer, `STATUS=` whenever the one-line summary changes,
/// `STOPPING=1` when a graceful stop begins, and `WATCHDOG=1` every half `WATCHDOG_USEC` while
/// `Liveness` says warren is making progress.
///
/// Written by hand rather than linking libsystemd: the protocol is one datagram of
/// `KEY=value` lines sent to the AF_UNIX socket named by `$NOTIFY_SOCKET` (a leading `@` means
/// the abstract namespace), which is a few lines of code, while libsystemd would be a C
/// dependency in every build and container image for one `sendto`. Sends never block
/// (`MSG_DONTWAIT`): a full socket loses one notification, never stalls a task.
public final class SystemdNotifier: Sendable {
    private let fd: Int32
    /// A `sockaddr_un`, as bytes.
    private let address: [UInt8]
    /// How often `WATCHDOG=1` goes out (half of `WATCHDOG_USEC`); nil when the watchdog is off.
    public let watchdogInterval: Duration?

    /// The notifier systemd asked for through the environment, or nil when `NOTIFY_SOCKET` is
    /// unset or unusable. With `unsetEnvironment`, the variables are removed so that handler
    /// processes do not inherit them (a child notifying as warren would confuse systemd); call
    /// it at start-up, before other threads read the environment.
    public static func fromEnvironment(unsetEnvironment: Bool = true) -> SystemdNotifier? {
        func variable(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }
        let socketPath = variable("NOTIFY_SOCKET")
        var watchdog: Duration?
        if let usec = variable("WATCHDOG_USEC").flatMap(Int64.init), usec > 0,
            variable("WATCHDOG_PID").flatMap(Int32.init).map({ $0 == getpid() }) ?? true
        {
            watchdog = .microseconds(usec / 2)
        }
        if unsetEnvironment {
            for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] { unsetenv(name) }
        }
        guard let socketPath else { return nil }
        return SystemdNotifier(socketPath: socketPath, watchdogInterval: watchdog)
    }

    /// Nil when `socketPath` is not an absolute path or an `@` abstract name that fits in a
    /// `sockaddr_un`, or no socket can be created.
    public init?(socketPath: String, watchdogInterval: Duration?) {
        var path = Array(socketPath.utf8)
        guard let first = path.first, first == UInt8(ascii: "/") || first == UInt8(ascii: "@") else { return nil }
        let abstract = first == UInt8(ascii: "@")
        if abstract { path[0] = 0 }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        guard path.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path) }
        // An abstract name is exactly its bytes; a path carries its terminating NUL.
        let length = MemoryLayout<sa_family_t>.size + path.count + (abstract ? 0 : 1)
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        self.fd = fd
        self.address = withUnsafeBytes(of: &address) { Array($0.prefix(length)) }
        self.watchdogInterval = watchdogInterval
    }

    deinit { close(fd) }

    /// Sends one notification (`KEY=value` lines); false if the datagram was not sent.
    @discardableResult
    public func send(_ state: String) -> Bool {
        let bytes = Array(state.utf8)
        let sent = bytes.withUnsafeBytes { payload in
            address.withUnsafeBytes { raw in
                raw.withMemoryRebound(to: sockaddr.self) { socketAddress in
                    sendto(
                        fd, payload.baseAddress, payload.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT), socketAddress.baseAddress,
                        socklen_t(raw.count))
                }
            }
        }
        return sent == bytes.count
    }

    /// Notifies until cancelled: status changes as they happen, `STOPPING=1` as soon as `stop`
    /// is set (even while warren is reconnecting, when no session reports stopping), and the
    /// watchdog if systemd enabled it. `liveness` is asked before every `WATCHDOG=1`.
    public func run(
        status: EngineStatus, stop: Latch, liveness: @escaping @Sendable () -> Liveness.Verdict = Liveness.current, logger: Logger
    ) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.follow(status, stop: stop, logger: logger) }
            if let interval = watchdogInterval {
                group.addTask { await self.watchdog(every: interval, status: status, liveness: liveness, logger: logger) }
            }
            await group.waitForAll()
        }
    }

    private enum Event: Sendable {
        case status(EngineStatus.Snapshot)
        case stopRequested
    }

    /// One loop owns the notification state; status changes and the stop request reach it
    /// through one stream, in order.
    private func follow(_ status: EngineStatus, stop: Latch, logger: Logger) async {
        let (events, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(64))
        status.observe { continuation.yield(.status($0)) }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await stop.wait()
                if !Task.isCancelled { continuation.yield(.stopRequested) }
            }
            var notifications = StatusNotifications()
            var failed = false
            for await event in events {
                let message: String?
                switch event {
                case .status(let snapshot): message = notifications.message(for: snapshot)
                case .stopRequested: message = notifications.stopRequested()
                }
                guard let message else { continue }
                if !send(message), !failed {
                    failed = true
                    logger.warning("systemd notification not sent", metadata: ["errno": "\(errno)"])
                }
            }
            group.cancelAll()
        }
    }

    private func watchdog(
        every interval: Duration, status: EngineStatus, liveness: @Sendable () -> Liveness.Verdict, logger: Logger
    ) async {
        var pausedFor: String?
        while !Task.isCancelled {
            // Reading the status takes the engine's status lock: a wedged engine stops the pings too.
            _ = status.snapshot
            switch liveness() {
            case .alive:
                send("WATCHDOG=1")
                if pausedFor != nil {
                    pausedFor = nil
                    logger.info("watchdog resumed: every I/O loop is making progress again")
                }
            case .stalled(let reason):
                if pausedFor != reason {
                    logger.warning("watchdog paused: warren is not making progress", metadata: [LogKeys.reason: "\(reason)"])
                }
                pausedFor = reason
            }
            try? await Task.sleep(for: interval)
        }
    }
}

/// Which notification a status change calls for: the state machine of `SystemdNotifier`,
/// pure so that it is tested without a socket.
struct StatusNotifications {
    private var readySent = false
    private var stoppingSent = false
    private var lastSummary: String?

    /// The datagram to send for `snapshot`, or nil when nothing systemd shows has changed.
    /// `READY=1` goes out once, the first time every queue has a consumer; after a reconnect
    /// systemd keeps the unit active and only `STATUS=` follows the state.
    mutating func message(for snapshot: EngineStatus.Snapshot) -> String? {
        var lines: [String] = []
        if snapshot.stopping, !stoppingSent {
            stoppingSent = true
            lines.append("STOPPING=1")
        } else if snapshot.isReady, !readySent {
            readySent = true
            lines.append("READY=1")
        }
        let summary = snapshot.summary
        if summary != lastSummary {
            lastSummary = summary
            lines.append("STATUS=\(summary)")
        }
        return lines.isEmpty ? nil : lines.joined(separator: "\n")
    }

    /// SIGTERM or SIGINT arrived: `STOPPING=1` now, once.
    mutating func stopRequested() -> String? {
        guard !stoppingSent else { return nil }
        stoppingSent = true
        return "STOPPING=1"
    }
}
