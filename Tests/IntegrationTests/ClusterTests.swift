import AMQP
import Foundation
import Testing
@testable import WarrenCore

/// Warren on the 3-node cluster of `scripts/cluster`, with nodes killed under it (SIGKILL, as a
/// crashed machine). Serialized: the tests share the cluster's nodes. Every test starts the
/// nodes it killed again before it ends.
@Suite("Warren on a RabbitMQ cluster", .requiresCluster, .serialized, .timeLimit(.minutes(5)))
struct ClusterTests {
    /// A `warren run` on the cluster with the `file` handler, and what that handler wrote.
    struct Instance {
        let config: WarrenProcess.ConfigFile
        let output: String
        let warren: RunningWarren

        init(queues: [String], urls: [Int]) throws {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-cluster-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            output = directory.appendingPathComponent("handled.jsonl").path
            let queueTables = queues.map { "[[queues]]\nname = \"\($0)\"\ntype = \"quorum\"\nhandler = \"record\"\n" }
            config = try WarrenProcess.ConfigFile("""
                [broker]
                urls = \(TestCluster.urls(urls))
                connection_name = "warren-cluster-tests"
                reconnect_initial_delay = "200ms"
                reconnect_max_delay = "2s"

                \(queueTables.joined(separator: "\n"))
                [handlers.record]
                kind = "file"
                path = "\(output)"
                fsync = "never"
                """)
            warren = try RunningWarren(config: config.path)
        }

        /// The message ids the handler has seen, once each.
        var handled: Set<String> {
            guard let text = try? String(contentsOfFile: output, encoding: .utf8) else { return [] }
            var ids: Set<String> = []
            for line in text.split(separator: "\n") {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                    let properties = object["properties"] as? [String: Any], let id = properties["message_id"] as? String
                else { continue }
                ids.insert(id)
            }
            return ids
        }

        /// Waits until every id in `ids` was handled; false after `timeout`.
        func waitUntilHandled(_ ids: Set<String>, timeout: Duration = .seconds(60)) async -> Bool {
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                if ids.isSubset(of: handled) { return true }
                try? await Task.sleep(for: .milliseconds(50))
            }
            return ids.isSubset(of: handled)
        }

        /// Whether a log line with `event` names `queue`.
        func logged(_ event: String, queue: String) -> Bool {
            warren.output.split(separator: "\n").contains { $0.contains(event) && $0.contains("queue=\(queue)") }
        }

        func stop() async -> Int32? {
            warren.signal()
            let status = await warren.waitForExit(timeout: .seconds(40))
            config.remove()
            try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: output).deletingLastPathComponent().path)
            return status
        }
    }

    /// Publishes persistent messages with these ids through `node`, with confirms; a message that
    /// is not confirmed (the cluster is electing a leader) is published again. Returns the ids the
    /// broker confirmed.
    static func publish(_ ids: [String], to queue: String, via node: Int) async throws -> Set<String> {
        let connection = try await TestCluster.connect(node)
        let publisher = try await connection.openPublisher()
        var confirmed: Set<String> = []
        for id in ids {
            for _ in 0..<20 where !confirmed.contains(id) {
                let outcome = try? await publisher.publish(
                    routingKey: queue, body: Array(id.utf8), properties: BasicProperties(deliveryMode: 2, messageID: AMQPString(id)), timeout: .seconds(5))
                if outcome == .confirmed { confirmed.insert(id) }
            }
        }
        await connection.close()
        return confirmed
    }

    static func warrenQueues(_ queue: String) -> [String] {
        [queue, "\(queue).dead"] + RetryPolicy().delaySeries.map { QueueConfiguration.retryQueueName(queue, delay: $0) }
    }

    @Test func losingTheNodeThatLeadsTheQueueAndHoldsTheConnectionLosesNothing() async throws {
        let queue = TestBroker.uniqueName("cluster-leader")
        let instance = try Instance(queues: [queue], urls: [1, 2, 3])
        do {
            try #require(await instance.warren.waitForLog("event=ready"), "\(instance.warren.output)")
            // Declared through node 1, which leads it; its own queues are replicated like it.
            try #require(try await TestCluster.leader(of: queue) == 1)
            let types = try await TestCluster.queueTypes(on: 1)
            for name in Self.warrenQueues(queue) {
                #expect(types[name] == "quorum", "\(name) is \(types[name] ?? "missing")")
            }

            let before = try await Self.publish((0..<50).map { "m\($0)" }, to: queue, via: 3)
            #expect(await instance.waitUntilHandled(before))
            try await TestCluster.control(["kill", "1"])
            let after = try await Self.publish((50..<100).map { "m\($0)" }, to: queue, via: 3)
            #expect(after.count == 50, "the cluster confirms publishes without node 1")

            #expect(await instance.waitUntilHandled(before.union(after)), "handled \(instance.handled.count) of \(before.count + after.count)")
            #expect(instance.warren.process.isRunning, "\(instance.warren.output)")
            #expect(instance.warren.output.contains("event=connected endpoint=amqp://guest:***@127.0.0.1:5682/"), "reconnected to the next URL")
            #expect(!instance.warren.output.contains("topology rejected"))
        } catch {
            await TestCluster.restoreAllNodes()
            _ = await instance.stop()
            await TestCluster.deleteQueues(Self.warrenQueues(queue))
            throw error
        }
        try await TestCluster.control(["start-node", "1"])
        #expect(await instance.stop() == 0)
        await TestCluster.deleteQueues(Self.warrenQueues(queue))
    }

    /// A retry ladder declared by an earlier warren is made of classic queues, whose home is one
    /// node. With that node down, RabbitMQ answers NOT_FOUND for them: warren must hold back
    /// that queue alone (not exit 78), consume the others, and take it up when the node is back.
    @Test func aClassicRetryQueueOnADeadNodeHoldsBackOnlyItsQueueUntilTheNodeReturns() async throws {
        let legacy = TestBroker.uniqueName("cluster-legacy")
        let fresh = TestBroker.uniqueName("cluster-fresh")
        let node1 = try await TestCluster.connect(1)
        for delay in RetryPolicy().delaySeries {
            try await node1.declareQueue(QueueDeclaration(
                name: QueueConfiguration.retryQueueName(legacy, delay: delay), durable: true,
                arguments: ["x-message-ttl": .int64(delay.milliseconds), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": .string(legacy)]))
        }
        await node1.close()
        try await TestCluster.control(["kill", "1"])

        let instance: Instance
        do {
            instance = try Instance(queues: [legacy, fresh], urls: [2, 3, 1])
        } catch {
            await TestCluster.restoreAllNodes()
            throw error
        }
        do {
            #expect(await instance.warren.waitForLog("topology refused for now, retrying"), "\(instance.warren.output)")
            #expect(instance.logged("topology refused for now", queue: legacy))
            let freshOnes = try await Self.publish((0..<10).map { "f\($0)" }, to: fresh, via: 2)
            #expect(await instance.waitUntilHandled(freshOnes), "the other queue consumes meanwhile")
            #expect(instance.warren.process.isRunning, "\(instance.warren.output)")
            #expect(!instance.logged("consumer up", queue: legacy))

            try await TestCluster.control(["start-node", "1"])
            let deadline = ContinuousClock.now + .seconds(60)
            while !instance.logged("consumer up", queue: legacy), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(instance.logged("consumer up", queue: legacy), "\(instance.warren.output)")
            #expect(instance.warren.output.contains("retry queue is a classic queue: kept"))
            let legacyOnes = try await Self.publish((0..<5).map { "l\($0)" }, to: legacy, via: 2)
            #expect(await instance.waitUntilHandled(legacyOnes))
            #expect(!instance.warren.output.contains("topology rejected"))
        } catch {
            await TestCluster.restoreAllNodes()
            _ = await instance.stop()
            await TestCluster.deleteQueues(Self.warrenQueues(legacy) + Self.warrenQueues(fresh))
            throw error
        }
        #expect(await instance.stop() == 0)
        await TestCluster.deleteQueues(Self.warrenQueues(legacy) + Self.warrenQueues(fresh))
    }

    /// A delivery limit set by a policy is invisible to AMQP: `check --connect` reads it from the
    /// management API and warns when it is below max_attempts or has no dead-letter exchange.
    @Test func checkConnectWarnsAboutADeliveryLimitSetByAPolicy() async throws {
        let queue = TestBroker.uniqueName("cluster-limit")
        let policy = "warren-test-limit-\(UUID().uuidString.prefix(8).lowercased())"
        let node1 = try await TestCluster.connect(1)
        try await node1.declareQueue(QueueDeclaration(name: queue, durable: true, arguments: ["x-queue-type": "quorum"]))
        await node1.close()
        try await TestCluster.control([
            "ctl", "1", "set_policy", policy, "^\(NSRegularExpression.escapedPattern(for: queue))$", #"{"delivery-limit":2}"#, "--apply-to", "queues",
        ])
        let management = try await TestCluster.control(["management-url", "1"])
        // The management API reports a queue's policy from its statistics, refreshed every 5 s.
        let api = QueuePolicies(baseURL: management, user: "guest", password: "guest")
        let deadline = ContinuousClock.now + .seconds(30)
        while (try? await api.facts(queue: queue, vhost: "/"))??.policyName != policy, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(250))
        }
        let config = try WarrenProcess.ConfigFile("""
            [broker]
            urls = \(TestCluster.urls([1]))
            management_url = "\(management)"

            [[queues]]
            name = "\(queue)"
            type = "quorum"
            handler = "h"
            retry = { max_attempts = 5 }

            [handlers.h]
            kind = "noop"
            """)
        let result = try await WarrenProcess.run(["check", "--config", config.path, "--connect"])
        config.remove()
        _ = try? await TestCluster.control(["ctl", "1", "clear_policy", policy])
        await TestCluster.deleteQueues(Self.warrenQueues(queue))

        #expect(result.status == 0, "warnings do not fail the check: \(result.stderr)")
        #expect(result.stderr.contains(
            "warning: queues[0]: the queue's delivery limit is 2 (policy \"\(policy)\"), below retry.max_attempts 5"), "\(result.stderr)")
        #expect(result.stderr.contains("and it has no dead-letter exchange: the broker drops a message requeued more than 2 times"))
    }
}
