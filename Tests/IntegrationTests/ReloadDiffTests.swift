import AMQP
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing
import WarrenCore

/// A reload, applied as a diff while connected: added queues start, removed queues drain,
/// changed queues restart their consumer with the new settings, unchanged queues and handlers
/// are not touched, and a file the broker refuses changes nothing.
@Suite("Reload applies the difference against RabbitMQ", .requiresBroker, .timeLimit(.minutes(2)))
struct ReloadDiffTests {
    struct QueueEntry {
        var name: String
        var prefetch = 32
        var concurrency = 4
        var handler = "scripted"
        var durable = false
    }

    static func config(_ queues: [QueueEntry], otherTimeout: String = "30s", file: String) throws -> Configuration {
        var source = """
            [broker]
            urls = ["\(TestBroker.url)"]
            connection_name = "warren-reload-diff-tests"
            reconnect_initial_delay = "100ms"
            reconnect_max_delay = "1s"

            [handlers.scripted]
            kind = "noop"

            [handlers.other]
            kind = "noop"
            timeout = "\(otherTimeout)"

            """
        for queue in queues {
            source += """
                [[queues]]
                name = "\(queue.name)"
                durable = \(queue.durable)
                prefetch = \(queue.prefetch)
                concurrency = \(queue.concurrency)
                handler = "\(queue.handler)"
                retry = false

                """
        }
        return try ConfigurationLoader.parse(source: source, file: file)
    }

    /// Counts how many times each handler entry is built.
    final class Builds: Sendable {
        private let counts = Mutex<[String: Int]>([:])
        func built(_ name: String) { counts.withLock { $0[name, default: 0] += 1 } }
        subscript(name: String) -> Int { counts.withLock { $0[name] ?? 0 } }
    }

    static func start(_ configuration: Configuration, reloads: ConfigurationReloads) async -> (Recorder, Builds, CapturedLog, Latch, Task<Engine.Outcome, Never>) {
        let recorder = Recorder()
        let builds = Builds()
        let log = CapturedLog()
        let engine = Engine(configuration: configuration, logger: log.logger(level: .info)) { entry in
            builds.built(entry.name)
            return ScriptedHandler(recorder: recorder)
        }
        let stop = Latch()
        let ready = Latch()
        let run = Task { await engine.run(stop: stop, ready: ready, reloads: reloads) }
        await ready.wait()
        return (recorder, builds, log, stop, run)
    }

    static func publish(_ ids: [String], to queue: String, sleepMs: Int32 = 0, on publisher: Publisher) async throws {
        for id in ids {
            var headers: FieldTable = ["x-test": "success"]
            if sleepMs > 0 { headers["x-test-sleep-ms"] = .int32(sleepMs) }
            let properties = BasicProperties(headers: headers, messageID: AMQPString(id))
            #expect(try await publisher.publish(routingKey: queue, body: Array("x".utf8), properties: properties) == .confirmed)
        }
    }

    /// The prefetch of each consumer, by queue, as the broker reports it; nil when rabbitmqctl
    /// failed.
    static func consumerPrefetches() async -> [String: [Int]]? {
        await offPool {
            guard let output = BrokerControl.rabbitmqctl(["list_consumers", "-q", "--no-table-headers", "queue_name", "prefetch_count"]) else {
                return nil
            }
            var prefetches: [String: [Int]] = [:]
            for line in output.split(separator: "\n") {
                let fields = line.split(separator: "\t")
                guard fields.count == 2, let prefetch = Int(fields[1].trimmingCharacters(in: .whitespaces)) else { continue }
                prefetches[String(fields[0]), default: []].append(prefetch)
            }
            return prefetches
        }
    }

    /// The first listing of consumers that shows `present` (every queue in it has a consumer),
    /// or the last one taken within 20 s. With other suites creating and deleting queues and
    /// consumers, `list_consumers` now and then leaves out a live consumer: a listing that omits
    /// one is taken again, never read as "no consumer".
    static func consumerPrefetches(listing present: [String]) async -> [String: [Int]] {
        let deadline = ContinuousClock.now + .seconds(20)
        var last: [String: [Int]] = [:]
        while true {
            if let listing = await consumerPrefetches() {
                last = listing
                if present.allSatisfy({ listing[$0] != nil }) || ContinuousClock.now > deadline { return listing }
            }
            if ContinuousClock.now > deadline { return last }
            try? await Task.sleep(for: .milliseconds(200))
        }
    }

    static func consumerUps(_ log: CapturedLog, _ queue: String) -> Int {
        log.all.filter { $0.message == "consumer up" && $0.metadata[LogKeys.queue] == queue }.count
    }

    @Test func aReloadStartsAddedDrainsRemovedRestartsChangedAndLeavesTheRestAlone() async throws {
        let (kept, removed, changed, added) = (
            TestBroker.uniqueName("diff-kept"), TestBroker.uniqueName("diff-removed"), TestBroker.uniqueName("diff-changed"),
            TestBroker.uniqueName("diff-added")
        )
        let before = try Self.config([.init(name: kept), .init(name: removed), .init(name: changed, prefetch: 10)], file: "before.toml")
        let after = try Self.config([.init(name: kept), .init(name: changed, prefetch: 20), .init(name: added)], file: "after.toml")
        let reloads = ConfigurationReloads()
        let (recorder, builds, log, stop, run) = await Self.start(before, reloads: reloads)
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()

        // Slow messages are in flight on every queue when the reload comes (slow enough to still
        // be running after the confirmed publishes of all thirty on a loaded machine).
        let keptIDs = (0..<10).map { "k\($0)" }, removedIDs = (0..<10).map { "r\($0)" }, changedIDs = (0..<10).map { "c\($0)" }
        try await Self.publish(keptIDs, to: kept, sleepMs: 1500, on: publisher)
        try await Self.publish(removedIDs, to: removed, sleepMs: 1500, on: publisher)
        try await Self.publish(changedIDs, to: changed, sleepMs: 1500, on: publisher)
        #expect(await recorder.wait { $0.running >= 3 })
        reloads.submit(after)
        #expect(await log.wait(for: "configuration reloaded"))
        try await Self.publish(["a1"], to: added, on: publisher)
        try await Self.publish(["c-after"], to: changed, on: publisher)
        try await Self.publish(["k-after"], to: kept, on: publisher)
        // The removed queue's deliveries not yet started went back to it, unrun: it is no longer consumed.
        let expected = Set(keptIDs + changedIDs + ["a1", "c-after", "k-after"])
        #expect(await recorder.wait(for: .seconds(30)) { snapshot in expected.isSubset(of: Set(snapshot.calls.map(\.messageID))) && snapshot.running == 0 })
        let ranRemoved = Set(recorder.snapshot.calls.map(\.messageID)).intersection(removedIDs)
        #expect(!ranRemoved.isEmpty, "the removed queue's in-flight messages were not finished")
        #expect(try await connection.declareQueue(QueueDeclaration(name: removed, passive: true)).messageCount == UInt32(10 - ranRemoved.count))

        // One listing that shows both consumers that must be there tells that the third is gone.
        let consumers = await Self.consumerPrefetches(listing: [changed, kept])
        #expect(consumers[changed] == [20], "the changed queue's consumer restarted with its new prefetch")
        #expect(consumers[removed] == nil, "the removed queue is no longer consumed")
        #expect(consumers[kept] == [32])
        #expect(Self.consumerUps(log, kept) == 1, "the unchanged queue's consumer was restarted")
        #expect(Self.consumerUps(log, changed) == 2)
        #expect(log.matching("connection lost, reconnecting").isEmpty)
        #expect(builds["scripted"] == 1 && builds["other"] == 1, "unchanged handlers were rebuilt")

        stop.set()
        #expect(await run.value == .stopped)
        let calls = recorder.snapshot.calls
        #expect(calls.count == Set(calls.map(\.messageID)).count, "a message ran twice")
        #expect(calls.filter { keptIDs.contains($0.messageID) }.allSatisfy { !$0.redelivered }, "the unchanged queue's messages came back")
        #expect(await BrokerControl.unacknowledged(removed) == 0)
        for queue in [kept, changed, added] {
            #expect(try await connection.declareQueue(QueueDeclaration(name: queue, passive: true)).messageCount == 0)
        }
        await connection.close()
        for queue in [kept, removed, changed, added] { await CommandLineTests.deleteWarrenQueues(queue) }
    }

    @Test func onlyTheQueuesOfAChangedHandlerRestartAndOnlyThatHandlerIsRebuilt() async throws {
        let (plain, special) = (TestBroker.uniqueName("diff-plain"), TestBroker.uniqueName("diff-special"))
        let queues: [QueueEntry] = [.init(name: plain), .init(name: special, handler: "other")]
        let reloads = ConfigurationReloads()
        let (recorder, builds, log, stop, run) = await Self.start(try Self.config(queues, file: "before.toml"), reloads: reloads)

        reloads.submit(try Self.config(queues, otherTimeout: "10s", file: "after.toml"))
        #expect(await log.wait(for: "configuration reloaded"))
        #expect(builds["other"] == 2, "the changed handler was not rebuilt")
        #expect(builds["scripted"] == 1, "an unchanged handler was rebuilt")
        #expect(await log.wait { _ in Self.consumerUps(log, special) == 2 } != nil, "the handler's queue did not restart")
        #expect(Self.consumerUps(log, plain) == 1)

        let connection = try await TestBroker.connect()
        try await Self.publish(["p", "s"], to: plain, on: try await connection.openPublisher())
        #expect(await recorder.wait { $0.finished == 2 })
        stop.set()
        #expect(await run.value == .stopped)
        await connection.close()
        for queue in [plain, special] { await CommandLineTests.deleteWarrenQueues(queue) }
    }

    @Test func aReloadTheBrokerRefusesChangesNothing() async throws {
        let queue = TestBroker.uniqueName("diff-refused")
        let reloads = ConfigurationReloads()
        let (recorder, _, log, stop, run) = await Self.start(try Self.config([.init(name: queue)], file: "before.toml"), reloads: reloads)

        // The queue exists as transient: declaring it durable is refused (PRECONDITION_FAILED).
        reloads.submit(try Self.config([.init(name: queue, prefetch: 5, durable: true)], file: "after.toml"))
        #expect(await log.wait(for: "reload refused: the broker rejects the new topology, keeping the running configuration"))
        let consumers = await Self.consumerPrefetches(listing: [queue])
        #expect(consumers[queue] == [32], "the refused reload touched the running consumer")
        let connection = try await TestBroker.connect()
        try await Self.publish(["still"], to: queue, on: try await connection.openPublisher())
        #expect(await recorder.wait { $0.finished == 1 })
        #expect(Self.consumerUps(log, queue) == 1)

        stop.set()
        #expect(await run.value == .stopped)
        await connection.close()
        await CommandLineTests.deleteWarrenQueues(queue)
    }

    /// `[publisher]` is part of the connections: such a reload drains everything and starts over
    /// with the new file, and nothing in flight is lost or run twice.
    @Test func aConnectionSettingChangeRestartsTheSessionGracefully() async throws {
        let queue = TestBroker.uniqueName("diff-restart")
        let before = try Self.config([.init(name: queue)], file: "before.toml")
        var after = try Self.config([.init(name: queue, prefetch: 16)], file: "after.toml")
        after.publisher.confirmTimeout = .seconds(7)
        let reloads = ConfigurationReloads()
        let (recorder, _, log, stop, run) = await Self.start(before, reloads: reloads)
        let connection = try await TestBroker.connect()
        let ids = (0..<10).map { "m\($0)" }
        try await Self.publish(ids, to: queue, sleepMs: 100, on: try await connection.openPublisher())
        #expect(await recorder.wait { $0.running >= 1 })

        reloads.submit(after)
        #expect(await log.wait(for: "reload changes the connections: restarting them"))
        #expect(await recorder.wait { Set($0.calls.map(\.messageID)) == Set(ids) && $0.running == 0 })
        #expect(await log.wait { _ in Self.consumerUps(log, queue) == 2 } != nil)
        let consumers = await Self.consumerPrefetches(listing: [queue])
        #expect(consumers[queue] == [16])

        stop.set()
        #expect(await run.value == .stopped)
        let calls = recorder.snapshot.calls
        #expect(calls.count == Set(calls.map(\.messageID)).count, "a message ran twice")
        await connection.close()
        await CommandLineTests.deleteWarrenQueues(queue)
    }
}
