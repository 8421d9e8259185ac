import AMQP
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import WarrenCore

/// Records, for each message, what the thread its handler ran on was.
struct ThreadProbeHandler: MessageHandler {
    struct Observation: Sendable, Equatable {
        /// A connection's I/O thread.
        var ioThread: Bool
        /// Where the engine told the handler to wait with a thread held: "here", "on" (the
        /// queue's blocking threads) or "spare".
        var blocking: String
        /// The run is on a queue worker's own thread ("warren-worker").
        var workerThread: Bool
    }

    final class Observations: Sendable {
        let list = Mutex<[Observation]>([])
    }

    let threading: HandlerThreading
    let recorder = Recorder()
    let observations = Observations()
    var enforcesOwnTimeout: Bool { true }

    func handle(_ input: HandlerInput) async -> HandlerOutcome {
        let seen = Self.observe(input)
        observations.list.withLock { $0.append(seen) }
        recorder.started(input)
        recorder.finished()
        return .success(.none)
    }

    static func observe(_ input: HandlerInput) -> Observation {
        Observation(
            ioThread: IOLoopExecutor.isCurrentThreadAnIOThread, blocking: blockingName(input.blocking),
            workerThread: currentThreadName() == "warren-worker")
    }
}

func blockingName(_ blocking: BlockingWait) -> String {
    switch blocking {
    case .here: "here"
    case .on: "on"
    case .spare: "spare"
    }
}

@Suite("Where queue workers run, against RabbitMQ", .requiresBroker, .timeLimit(.minutes(2)))
struct WorkerPlacementTests {
    @Test func workersRunOnTheIOThreadOnTheirOwnThreadsOrOnThePoolByWhatTheirHandlersDo() async throws {
        let base = TestBroker.uniqueName("placement")
        let probes: [String: ThreadProbeHandler] = [
            "quick": ThreadProbeHandler(threading: .neverBlocks),
            "process": ThreadProbeHandler(threading: .ownThread),
            "pool": ThreadProbeHandler(threading: .sharedPool),
        ]
        let queues = probes.keys.sorted().map { (name: $0, queue: "\(base).\($0)") }
        let engine = try await RoutingEngine.start("""
            [broker]
            urls = ["\(TestBroker.url)"]
            connection_name = "warren-placement-tests"
            \(queues.map { """
                [[queues]]
                name = "\($0.queue)"
                durable = false
                concurrency = 2
                handler = "\($0.name)"
                [handlers.\($0.name)]
                kind = "noop"
                """ }.joined(separator: "\n"))
            """, overrides: probes, recorders: probes.mapValues(\.recorder))
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        for (_, queue) in queues {
            for index in 0..<5 {
                #expect(try await publisher.publish(routingKey: queue, body: [], properties: BasicProperties(messageID: "m\(index)")) == .confirmed)
            }
        }
        for (name, _) in queues {
            #expect(await probes[name]!.recorder.wait { $0.finished == 5 }, "\(name) handled its five messages")
        }
        _ = await engine.stopAndCleanUp()
        await connection.close()

        // I/O thread / where it may block / on a worker's own thread.
        let seen = probes.mapValues { $0.observations.list.withLock { Set($0.map { "\($0.ioThread)/\($0.blocking)/\($0.workerThread)" }) } }
        #expect(seen["quick"] == ["true/spare/false"], "handlers that never block run on the I/O thread")
        #expect(seen["process"] == ["false/here/true"], "handlers that wait for a process run on the worker's own thread, and may block it")
        #expect(seen["pool"] == ["false/spare/false"], "anything else runs on the shared pool")
    }
}
