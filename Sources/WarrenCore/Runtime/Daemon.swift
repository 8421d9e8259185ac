import AMQP
import Logging

/// `warren run` at this stage of the engine: connect (retrying with back-off for as long as it
/// takes), declare the topology, and stay connected until asked to stop, reconnecting if the
/// connection is lost. Consuming comes with the engine.
public struct Daemon: Sendable {
    public enum Outcome: Sendable, Equatable {
        case stopped
        /// The live broker contradicts the configuration (exit 78).
        case topologyRejected
    }

    public let configuration: Configuration
    public let logger: Logger

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Runs until `stop` yields (or finishes).
    public func run(stop: AsyncStream<Void>) async -> Outcome {
        let plan = TopologyPlan(configuration)
        let stopSignal = StopSignal(stop)
        var backoff = Backoff(initial: configuration.broker.reconnectInitialDelay, maximum: configuration.broker.reconnectMaxDelay)
        var failuresInARow = 0
        while !stopSignal.isSet {
            let connection: AMQPConnection
            do {
                connection = try await AMQPConnection.connect(configuration.connectionConfiguration(role: "consumer"), logger: logger)
            } catch {
                failuresInARow += 1
                if failuresInARow == 1 {
                    logger.warning("broker unreachable, reconnecting", metadata: ["error": "\(error)"])
                } else {
                    logger.debug("reconnect attempt failed", metadata: ["attempt": "\(failuresInARow)", "error": "\(error)"])
                }
                await stopSignal.wait(upTo: backoff.next())
                continue
            }
            if failuresInARow > 0 {
                logger.info("broker reachable again", metadata: ["attempts": "\(failuresInARow + 1)"])
            }
            failuresInARow = 0
            backoff.reset()
            logger.info("connected", metadata: [
                "endpoint": "\(connection.negotiated.endpoint)", "heartbeat_s": "\(connection.negotiated.heartbeat)",
            ])
            do {
                try await TopologyDeclarer(plan: plan, logger: logger).declare(on: connection)
            } catch let error as TopologyError {
                for problem in error.problems {
                    logger.error("topology rejected", metadata: ["config": "\(configuration.sourceFile)", "problem": "\(problem)"])
                }
                await connection.close()
                return .topologyRejected
            } catch {
                logger.warning("connection lost while declaring the topology", metadata: ["error": "\(error)"])
                continue
            }
            logger.info("ready", metadata: ["queues": "\(configuration.queues.count)"])
            let lost = await stopSignal.waitOrConnectionEnd(connection)
            if !lost {
                await connection.close()
                break
            }
            logger.warning("connection lost, reconnecting")
        }
        logger.info("stopped")
        return .stopped
    }
}

/// Turns a stop stream into something both loops and sleeps can check.
final class StopSignal: Sendable {
    private let stream: AsyncStream<Void>
    private let flag = FlagBox()

    init(_ stream: AsyncStream<Void>) {
        self.stream = stream
        let flag = flag
        Task { [stream] in
            for await _ in stream { break }
            flag.set()
        }
    }

    var isSet: Bool { flag.value }

    /// Sleeps for `duration`, or less if stopped meanwhile.
    func wait(upTo duration: Duration) async {
        let deadline = ContinuousClock.now + duration
        while !isSet, ContinuousClock.now < deadline {
            try? await Task.sleep(for: min(.milliseconds(100), deadline - ContinuousClock.now))
        }
    }

    /// Returns true when the connection ended by itself, false when a stop was requested.
    func waitOrConnectionEnd(_ connection: AMQPConnection) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await event in connection.events {
                    if case .closed = event { return true }
                }
                return true
            }
            group.addTask { [self] in
                while !isSet { try? await Task.sleep(for: .milliseconds(100)) }
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }
}

import Synchronization

final class FlagBox: Sendable {
    private let storage = Atomic<Bool>(false)
    var value: Bool { storage.load(ordering: .acquiring) }
    func set() { storage.store(true, ordering: .releasing) }
}
