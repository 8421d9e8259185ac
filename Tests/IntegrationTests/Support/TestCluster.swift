import AMQP
import Foundation
import Glibc
import TestSupport
import Testing

/// The 3-node RabbitMQ cluster of `scripts/cluster` (nodes on 127.0.0.1:5681-5683), for the tests
/// of what warren does when a node dies. They run when the cluster answers, and always under CI,
/// where `.ci/run` starts it and its absence must fail them.
enum TestCluster {
    static let script = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("scripts/cluster").path

    /// WARREN_TEST_CLUSTER=0 skips them outside CI (scripts/test then starts no cluster).
    static let shouldRun: Bool = TestBroker.isCI
        || (ProcessInfo.processInfo.environment["WARREN_TEST_CLUSTER"] != "0" && run(["status"])?.status == 0)

    /// Node N's AMQP URL (N = 1, 2, 3).
    static func url(_ node: Int) -> String {
        "amqp://guest:guest@127.0.0.1:\(5680 + node)/"
    }

    /// broker.urls with the nodes in this order.
    static func urls(_ nodes: [Int]) -> String {
        "[" + nodes.map { "\"\(url($0))\"" }.joined(separator: ", ") + "]"
    }

    static func connect(_ node: Int) async throws -> AMQPConnection {
        try await AMQPConnection.connect(TestBroker.configuration(endpoint: try AMQPEndpoint(url: url(node))), logger: TestBroker.logger)
    }

    /// Runs `scripts/cluster ARGS` to completion: its status and stdout (nil if it cannot start).
    /// Blocking: call it through `control`. `spawnAndWait` rather than Foundation's Process,
    /// whose waitUntilExit was seen never to return for a script that starts a detached Erlang
    /// node (the child stayed a zombie); it also keeps the test process's sockets from the nodes.
    static func run(_ arguments: [String]) -> (status: Int32, output: String)? {
        let outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("warren-cluster-out-\(UUID().uuidString)").path
        defer { unlink(outputPath) }
        guard let exited = spawnAndWait(["/bin/bash", script] + arguments, outputPath: outputPath) else { return nil }
        let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        return (exited, output)
    }

    /// `scripts/cluster ARGS` off the cooperative pool; throws when it fails.
    @discardableResult
    static func control(_ arguments: [String]) async throws -> String {
        let result = await offPool { run(arguments) }
        guard let result, result.status == 0 else {
            throw ClusterFailure(description: "scripts/cluster \(arguments.joined(separator: " ")) failed: \(result?.output ?? "could not start")")
        }
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The node number leading a quorum queue.
    static func leader(of queue: String) async throws -> Int {
        let text = try await control(["leader", queue])
        guard let node = Int(text) else { throw ClusterFailure(description: "scripts/cluster leader \(queue) printed \(text)") }
        return node
    }

    /// Each queue name with its type (classic, quorum, stream), as node `node` lists them.
    static func queueTypes(on node: Int) async throws -> [String: String] {
        let listing = try await control(["ctl", "\(node)", "list_queues", "name", "type", "--quiet", "--no-table-headers"])
        var types: [String: String] = [:]
        for line in listing.split(separator: "\n") {
            let fields = line.split(separator: "\t")
            if fields.count == 2 { types[String(fields[0])] = String(fields[1]) }
        }
        return types
    }

    /// Starts every node that is down (after a test killed one); waits until each runs.
    static func restoreAllNodes() async {
        for node in 1...3 { _ = try? await control(["start-node", "\(node)"]) }
    }

    /// Deletes queues through any node that runs.
    static func deleteQueues(_ names: [String]) async {
        for name in names { _ = try? await control(["ctl", "2", "delete_queue", name]) }
    }

    struct ClusterFailure: Error, CustomStringConvertible {
        var description: String
    }
}

extension Trait where Self == ConditionTrait {
    /// Runs when the local cluster answers, and always under CI (where its absence fails).
    static var requiresCluster: Self {
        .enabled(if: TestCluster.shouldRun, "no local RabbitMQ cluster (run scripts/cluster start)")
    }
}
