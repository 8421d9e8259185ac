import Foundation
import Glibc

/// A second RabbitMQ node, `warren-faults@localhost` on 5673, that the broker fault scenarios stop,
/// kill and starve of memory. The shared broker on 5672 serves every other engineer's tests and
/// must never be disturbed, so anything that takes a broker down runs here.
///
/// The node runs as the user running the tests (root here) straight from
/// `/usr/lib/rabbitmq/bin`: the Debian wrapper in `/usr/sbin` would `su rabbitmq`, which cannot
/// write the test's temporary directory. `HOME` points into the node's directory for the server
/// and every `rabbitmqctl` call, so both use the same Erlang cookie. The node starts once per test
/// process (about 10 s here), is reused by an aborted run's successor if it is still up, and
/// stops when the test process exits.
actor FaultNode {
    static let shared = FaultNode()
    static let nodeName = "warren-faults@localhost"
    static let port = 5673
    static let url = "amqp://guest:guest@127.0.0.1:\(port)/"
    static let directory = "/tmp/warren-fault-node"
    static let bin = "/usr/lib/rabbitmq/bin"

    private var running = false

    /// How long the node took to start, when this process started it.
    private(set) var lastStartDuration: Duration?

    static var isAvailable: Bool { FileManager.default.isExecutableFile(atPath: "\(bin)/rabbitmq-server") }

    /// The broker handle scenarios use to reach this node.
    static var broker: FaultBroker {
        FaultBroker(url: url, ctl: ["\(bin)/rabbitmqctl", "-n", nodeName], environment: environment)
    }

    private static var environment: [String: String] {
        [
            "HOME": directory,
            "RABBITMQ_CONF_ENV_FILE": "\(directory)/rabbitmq-env.conf",
            "RABBITMQ_NODENAME": nodeName,
            "RABBITMQ_NODE_PORT": "\(port)",
            "RABBITMQ_DIST_PORT": "25673",
            "RABBITMQ_MNESIA_BASE": "\(directory)/mnesia",
            "RABBITMQ_LOG_BASE": "\(directory)/log",
            "RABBITMQ_CONFIG_FILE": "\(directory)/rabbitmq.conf",
            "RABBITMQ_ENABLED_PLUGINS_FILE": "\(directory)/enabled_plugins",
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
        ]
    }

    /// Starts the node unless it already runs (this process's or a previous run's).
    func ensureRunning() async throws {
        if running { return }
        // rabbitmqctl needs a HOME it can write its cookie to (else an erl_crash.dump lands in the cwd).
        try FileManager.default.createDirectory(atPath: Self.directory, withIntermediateDirectories: true)
        if await Self.broker.ctl(["await_startup", "--timeout", "2"]).status == 0 {
            // A previous run's node: undo an alarm that run may have left behind.
            _ = await Self.broker.ctl(["set_vm_memory_high_watermark", "0.4"])
            running = true
            Self.registerStopAtExit()
            return
        }
        try Self.prepareDirectory()
        try await start()
        Self.registerStopAtExit()
    }

    /// `rabbitmq-server -detached`, then `await_startup` until the node answers. Right after the
    /// launch `await_startup` fails fast ("rabbit application not running"), so it is polled.
    func start() async throws {
        let begin = ContinuousClock.now
        let variables = Self.environment.map { "\($0.key)='\($0.value)'" }.sorted().joined(separator: " ")
        let status = await ToolRun.shell("cd \(Self.directory) && env \(variables) \(Self.bin)/rabbitmq-server -detached > \(Self.directory)/log/launch.out 2>&1")
        guard status == 0 else { throw FaultError("rabbitmq-server -detached exited \(status); see \(Self.directory)/log/launch.out") }
        let deadline = begin + .seconds(90)
        while ContinuousClock.now < deadline {
            if await Self.broker.ctl(["await_startup", "--timeout", "30"]).status == 0 {
                running = true
                lastStartDuration = ContinuousClock.now - begin
                print("FAULT node=\(Self.nodeName) start_ms=\((ContinuousClock.now - begin).inMilliseconds)")
                return
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw FaultError("node \(Self.nodeName) did not start within 90 s; see \(Self.directory)/log")
    }

    func stopApp() async throws {
        let result = await Self.broker.ctl(["stop_app"])
        guard result.status == 0 else { throw FaultError("stop_app failed: \(result.output)") }
    }

    func startApp() async throws {
        let result = await Self.broker.ctl(["start_app"])
        guard result.status == 0 else { throw FaultError("start_app failed: \(result.output)") }
    }

    /// SIGKILL to the node's `beam.smp`, and waits until it is gone.
    func killHard() async throws {
        let pidFile = "\(Self.directory)/mnesia/\(Self.nodeName).pid"
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
        else { throw FaultError("no pid file at \(pidFile)") }
        kill(pid, SIGKILL)
        let deadline = ContinuousClock.now + .seconds(10)
        while kill(pid, 0) == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        running = false
    }

    private static func prepareDirectory() throws {
        try? FileManager.default.removeItem(atPath: directory)
        for sub in ["mnesia", "log"] {
            try FileManager.default.createDirectory(atPath: "\(directory)/\(sub)", withIntermediateDirectories: true)
        }
        try "".write(toFile: "\(directory)/rabbitmq-env.conf", atomically: true, encoding: .utf8)
        try "[].\n".write(toFile: "\(directory)/enabled_plugins", atomically: true, encoding: .utf8)
        try """
            listeners.tcp.default = \(port)
            vm_memory_high_watermark.relative = 0.4
            log.console = false
            """.write(toFile: "\(directory)/rabbitmq.conf", atomically: true, encoding: .utf8)
    }

    nonisolated(unsafe) private static var stopRegistered = false

    /// Stops the node when the test process exits (Swift Testing has no suite teardown).
    /// Only called from the actor, so the flag is never touched concurrently.
    private static func registerStopAtExit() {
        guard !stopRegistered else { return }
        stopRegistered = true
        atexit {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "\(FaultNode.bin)/rabbitmqctl")
            process.arguments = ["-n", FaultNode.nodeName, "stop"]
            process.environment = FaultNode.environment
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try? process.run()
            process.waitUntilExit()
        }
    }
}

struct FaultError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension Duration {
    var inMilliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}
