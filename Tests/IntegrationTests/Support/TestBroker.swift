import AMQP
import Foundation
import Glibc
import Logging
import Testing

/// Where the integration tests find RabbitMQ: `WARREN_TEST_AMQP_URL`, default the local broker.
enum TestBroker {
    static let url = ProcessInfo.processInfo.environment["WARREN_TEST_AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5672/"

    static var isCI: Bool {
        ProcessInfo.processInfo.environment["CI"].map { $0 == "true" || $0 == "1" } ?? false
    }

    static let endpoint: AMQPEndpoint = {
        do {
            return try AMQPEndpoint(url: url)
        } catch {
            fatalError("WARREN_TEST_AMQP_URL is not a valid AMQP URL: \(error)")
        }
    }()

    /// Integration tests run when a broker answers, and always under CI, where a missing broker
    /// must fail them rather than skip them.
    static let shouldRun: Bool = isCI || isReachable(endpoint.host, endpoint.port)

    static var logger: Logger {
        var logger = Logger(label: "warren.tests")
        logger.logLevel = .warning
        return logger
    }

    static func configuration(heartbeat: Duration = .seconds(10), endpoint: AMQPEndpoint = endpoint) -> ConnectionConfiguration {
        var configuration = ConnectionConfiguration(endpoints: [endpoint])
        configuration.heartbeat = heartbeat
        configuration.connectionName = "warren-tests"
        return configuration
    }

    static func connect(heartbeat: Duration = .seconds(10)) async throws -> AMQPConnection {
        try await AMQPConnection.connect(configuration(heartbeat: heartbeat), logger: logger)
    }

    static func uniqueName(_ purpose: String) -> String {
        "warren-test.\(purpose).\(UUID().uuidString.prefix(8).lowercased())"
    }

    /// Declares a fresh queue, runs `body`, and deletes the queue whatever happened.
    static func withQueue<T>(
        _ purpose: String, on connection: AMQPConnection, durable: Bool = false,
        _ body: (String) async throws -> T
    ) async throws -> T {
        let name = uniqueName(purpose)
        try await connection.declareQueue(QueueDeclaration(name: name, durable: durable))
        do {
            let result = try await body(name)
            try await deleteQueue(name)
            return result
        } catch {
            try? await deleteQueue(name)
            throw error
        }
    }

    /// Deletes on a connection of its own, so a test's broken connection does not leak queues.
    static func deleteQueue(_ name: String) async throws {
        let connection = try await connect()
        try await connection.deleteQueue(name)
        await connection.close()
    }

    static func deleteExchange(_ name: String) async throws {
        let connection = try await connect()
        try await connection.deleteExchange(name)
        await connection.close()
    }

    private static func isReachable(_ host: String, _ port: Int) -> Bool {
        guard let fd = tcpConnect(host, port) else { return false }
        close(fd)
        return true
    }
}

/// A connected TCP socket (with TCP_NODELAY), or nil.
func tcpConnect(_ host: String, _ port: Int) -> Int32? {
    var hints = addrinfo()
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    var result: UnsafeMutablePointer<addrinfo>?
    guard getaddrinfo(host, String(port), &hints, &result) == 0, let info = result else { return nil }
    defer { freeaddrinfo(result) }
    let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
    guard fd >= 0 else { return nil }
    var timeout = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    guard Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
        close(fd)
        return nil
    }
    var on: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
    return fd
}

extension Trait where Self == ConditionTrait {
    /// Runs when a broker is reachable, and always under CI (where an absent broker fails).
    static var requiresBroker: Self {
        .enabled(if: TestBroker.shouldRun, "no RabbitMQ at \(TestBroker.endpoint) (set WARREN_TEST_AMQP_URL or start one)")
    }
}

/// Reads a consumer's deliveries until `count` have arrived, or fails after `timeout`.
func collect(_ count: Int, from consumer: Consumer, within timeout: Duration = .seconds(60),
             each: @escaping @Sendable (Delivery) -> Void = { _ in }) async throws -> [Delivery] {
    try await withThrowingTaskGroup(of: [Delivery]?.self) { group in
        group.addTask {
            var received: [Delivery] = []
            received.reserveCapacity(count)
            for try await delivery in consumer.deliveries {
                each(delivery)
                received.append(delivery)
                if received.count == count { break }
            }
            return received
        }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        guard let first = try await group.next(), let received = first else {
            group.cancelAll()
            throw TestTimeout(what: "waiting for \(count) deliveries from \(consumer.queue)")
        }
        group.cancelAll()
        return received
    }
}

struct TestTimeout: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out \(what)" }
}
