import AMQP
import Foundation
import Glibc
import Testing
import WarrenCore

/// `warren run` and its signals, end to end. The slow handler is a `file` handler writing to a
/// FIFO: each write waits until the test opens the FIFO for reading.
@Suite("warren run and signals against RabbitMQ", .requiresBroker, .timeLimit(.minutes(2)))
struct SignalTests {
    struct Setup {
        let queue: String
        let fifo: String
        let config: WarrenProcess.ConfigFile
        /// The metrics listener's port: `warren_inflight_messages` tells when the handler runs.
        let metricsPort: Int

        init() throws {
            queue = TestBroker.uniqueName("signals")
            metricsPort = try MetricsScrape.freePort()
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-fifo-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            fifo = directory.appendingPathComponent("out.fifo").path
            guard mkfifo(fifo, 0o600) == 0 else { throw CocoaError(.fileWriteUnknown) }
            config = try WarrenProcess.ConfigFile("""
                [broker]
                urls = ["\(TestBroker.url)"]
                [metrics]
                listen = "127.0.0.1:\(metricsPort)"
                [[queues]]
                name = "\(queue)"
                durable = false
                prefetch = 5
                concurrency = 5
                shutdown_timeout = "60s"
                handler = "slow"
                [handlers.slow]
                kind = "file"
                path = "\(fifo)"
                fsync = "never"
                """)
        }

        func cleanUp() async {
            await CommandLineTests.deleteWarrenQueues(queue)
            try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: fifo).deletingLastPathComponent().path)
            config.remove()
        }

        /// Starts warren, publishes five messages, and returns once all five are delivered to it
        /// (none ready in the queue) and blocked in the handler.
        func startWithFiveBlockedMessages(_ connection: AMQPConnection) async throws -> RunningWarren {
            let warren = try RunningWarren(config: config.path)
            #expect(await warren.waitForLog("event=ready"), "log: \(warren.output)")
            let publisher = try await connection.openPublisher()
            for index in 0..<5 {
                #expect(try await publisher.publish(routingKey: queue, body: Array("m\(index)".utf8)) == .confirmed)
            }
            // Delivered to warren is not enough: a delivery no worker has taken yet when the
            // stop begins goes back to the broker unrun. Wait until all five runs have started.
            let deadline = ContinuousClock.now + .seconds(20)
            while await inflight() < 5, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(await inflight() == 5, "five handler runs in flight")
            return warren
        }

        /// `warren_inflight_messages{queue}`, 0 while it cannot be read.
        func inflight() async -> Int {
            guard let (_, body) = try? await MetricsScrape.get("http://127.0.0.1:\(metricsPort)/metrics") else { return 0 }
            for line in body.split(separator: "\n") where line.hasPrefix("warren_inflight_messages{") && line.contains("\"\(queue)\"") {
                if let value = line.split(separator: " ").last, let number = Double(value) { return Int(number) }
            }
            return 0
        }
    }

    @Test func aSecondSIGTERMExitsPromptlyAndTheBrokerRedeliversTheUnfinishedMessages() async throws {
        let setup = try Setup()
        let connection = try await TestBroker.connect()
        let warren = try await setup.startWithFiveBlockedMessages(connection)
        warren.signal(SIGTERM)
        #expect(await warren.waitForLog("shutting down"))
        warren.signal(SIGTERM)
        let status = await warren.waitForExit(timeout: .seconds(5))
        #expect(status == 1, "exits at once with status 1; log: \(warren.output)")
        // The connection died with the process: the broker puts the five back.
        let deadline = ContinuousClock.now + .seconds(10)
        var ready: UInt32 = 0
        while ContinuousClock.now < deadline {
            ready = try await connection.declareQueue(QueueDeclaration(name: setup.queue, passive: true)).messageCount
            if ready == 5 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(ready == 5)
        await connection.close()
        await setup.cleanUp()
    }

    @Test func aSIGTERMLetsRunningHandlersFinishAcksThemAndExitsZero() async throws {
        let setup = try Setup()
        let connection = try await TestBroker.connect()
        let warren = try await setup.startWithFiveBlockedMessages(connection)
        warren.signal(SIGTERM)
        #expect(await warren.waitForLog("shutting down"))
        // Unblock the handlers: open the FIFO for reading and drain it.
        let reader = open(setup.fifo, O_RDONLY | O_NONBLOCK)
        #expect(reader >= 0)
        var received = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = ContinuousClock.now + .seconds(20)
        while warren.process.isRunning, ContinuousClock.now < deadline {
            let n = read(reader, &buffer, buffer.count)
            if n > 0 { received.append(contentsOf: buffer[0..<n]) } else { try await Task.sleep(for: .milliseconds(10)) }
        }
        let status = await warren.waitForExit(timeout: .seconds(5))
        // What was written just before the exit is still in the pipe.
        while true {
            let n = read(reader, &buffer, buffer.count)
            guard n > 0 else { break }
            received.append(contentsOf: buffer[0..<n])
        }
        close(reader)
        #expect(status == 0, "log: \(warren.output)")
        #expect(String(decoding: received, as: UTF8.self).split(separator: "\n").count == 5, "every running handler finished")
        #expect(try await connection.declareQueue(QueueDeclaration(name: setup.queue, passive: true)).messageCount == 0, "and was acked")
        await connection.close()
        await setup.cleanUp()
    }
}
