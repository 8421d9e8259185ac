import AMQP
import ArgumentParser
import Foundation
import WarrenCore

struct DeadLetters: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dead-letters",
        abstract: "Inspect the messages warren parked.",
        discussion: """
            QUEUE is a configured queue (its parked messages are in QUEUE.dead) or the name of any \
            queue holding parked copies. The broker settings come from --config.
            """,
        subcommands: [List.self, Replay.self, Purge.self])

    /// Reads the parked messages of `queue` one by one with basic.get, at most as many as the
    /// queue held at the first read (a producer adding to it does not keep the walk going);
    /// `visit` acks what it is done with and returns false to stop. What is not acked goes
    /// back in place when the channel closes.
    static func walk(
        _ queue: String, configuration: Configuration, verb: String,
        _ visit: (ParkedMessage, GetChannel) async throws -> Bool
    ) async throws {
        let logger = Bootstrap.logging(configuration.log, override: .warning)
        let parking = ParkingQueues.holding(queue, in: configuration)
        let connection = try await connectOnce(configuration, role: "dead-letters", logger: logger)
        do {
            let channel = try await connection.openGetChannel(maxBodySize: configuration.defaults.maxBodySize)
            var remaining: Int?
            while remaining.map({ $0 > 0 }) ?? true, let got = try await channel.get(parking) {
                remaining = (remaining ?? Int(got.messageCount) + 1) - 1
                if try await !visit(ParkedMessage(got.delivery), channel) { break }
            }
            try await channel.close()
        } catch let error as AMQPError {
            await connection.close()
            if error.replyCode == 404 {
                printError("queue \"\(parking)\" does not exist")
                throw WarrenExit.config
            }
            printError("lost the broker while \(verb): \(error)")
            throw WarrenExit.unavailable
        } catch {
            await connection.close()
            throw error
        }
        await connection.close()
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List parked messages, one line each; nothing is removed or reordered.",
            discussion: """
                Each message is read with basic.get and left unacknowledged; closing the channel \
                at the end puts every one back where it was. On a quorum queue that raises each \
                message's x-delivery-count by one (mind a delivery limit on the parking queue).
                """)

        @OptionGroup var options: ConfigOption
        @Argument(help: "The configured queue, or the queue holding the parked copies.") var queue: String
        @Flag(help: "One JSON object per line.") var json = false
        @Option(help: "List at most this many.") var limit: Int?

        func run() async throws {
            if let limit, limit < 1 {
                throw ValidationError("--limit must be at least 1")
            }
            var listed = 0
            try await DeadLetters.walk(queue, configuration: try options.load(), verb: "listing") { message, _ in
                if json {
                    FileHandle.standardOutput.write(Data(try message.jsonLine()))
                } else {
                    print(message.textLine)
                }
                listed += 1
                return listed < (limit ?? .max)
            }
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete the selected parked messages (needs --yes).",
            discussion: """
                Filters combine: every one given must match. A message without a readable \
                x-warren-failed-at never matches --older-than. Prints purged=N kept=M. Without \
                --yes nothing is deleted and the exit status is 64.
                """)

        @OptionGroup var options: ConfigOption
        @Argument(help: "The configured queue, or the queue holding the parked copies.") var queue: String
        @Option(help: "Only messages parked with this reason (failed, rejected, attempts_exhausted, unrouted, too_large, publish_failed, unknown).")
        var reason: String?
        @Option(name: .customLong("older-than"), help: "Only messages parked longer ago than this (e.g. 7d, 12h).")
        var olderThan: String?
        @Flag(help: "Really delete them.") var yes = false

        func run() async throws {
            var selection = ParkedSelection(reason: reason)
            if let olderThan {
                guard let cutoff = ParkedSelection.cutoff(olderThan: olderThan) else {
                    throw ValidationError("--older-than expects a duration such as 12h or 7d, got \"\(olderThan)\"")
                }
                selection.parkedBefore = cutoff
            }
            guard yes else {
                printError("purge deletes parked messages for good: add --yes to do it (nothing was deleted)")
                throw WarrenExit.usage
            }
            var purged = 0
            var kept = 0
            try await DeadLetters.walk(queue, configuration: try options.load(), verb: "purging") { message, channel in
                if selection.matches(message) {
                    try await channel.ack(message.delivery)
                    purged += 1
                } else {
                    kept += 1
                }
                return true
            }
            print("purged=\(purged) kept=\(kept)")
        }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Publish the selected parked messages again to where they were first published.",
            discussion: """
                Each selected message is republished to its x-warren-original-exchange and \
                routing key (or to --to-queue), with confirms and mandatory routing, the same body \
                and properties, without warren's x-warren-* headers (its attempts start again at \
                1) and with x-warren-replays counting replays. Its parked copy is removed only once \
                the broker confirmed the replay: a replay that is returned, nacked or not \
                confirmed leaves it parked. Killed at any moment, nothing is lost (a message may be \
                replayed twice). Prints replayed=N kept=M failed=K; exits 0 when K = 0, else 1.
                """)

        @OptionGroup var options: ConfigOption
        @Argument(help: "The configured queue, or the queue holding the parked copies.") var queue: String
        @Option(help: "Only messages parked with this reason.") var reason: String?
        @Option(help: "Only messages whose last handler was this one.") var handler: String?
        @Option(name: .customLong("message-id"), help: "Only the message with this message_id.") var messageID: String?
        @Option(name: .customLong("to-queue"), help: "Publish to this queue (through the default exchange) instead of the original destination.")
        var toQueue: String?
        @Option(help: "Replay at most this many.") var limit: Int?
        @Flag(name: .customLong("dry-run"), help: "List what would be replayed; change nothing.") var dryRun = false

        func run() async throws {
            if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
            let selection = ParkedSelection(reason: reason, handler: handler, messageID: messageID)
            let configuration = try options.load()
            var publisher: Publisher?
            var (replayed, kept, failed) = (0, 0, 0)
            try await DeadLetters.walk(queue, configuration: configuration, verb: "replaying") { message, channel in
                // A message warren did not park has no original destination of its own: only
                // when asked for by id, or sent to a named queue.
                guard selection.matches(message), message.isWarrens || messageID != nil || toQueue != nil,
                    replayed + failed < (limit ?? .max)
                else {
                    kept += 1
                    return true
                }
                guard let copy = message.replayCopy(toQueue: toQueue) else {
                    printError("\(message.textLine): no original destination (give --to-queue); kept")
                    failed += 1
                    return true
                }
                if dryRun {
                    print("would replay \(message.textLine) to exchange=\"\(copy.exchange)\" routing_key=\"\(copy.routingKey.text ?? "")\"")
                    replayed += 1
                    return true
                }
                if publisher == nil {
                    publisher = try await channel.connection.openPublisher(PublisherOptions(confirmTimeout: configuration.publisher.confirmTimeout))
                }
                guard let publisher else { return false }
                let outcome: PublishOutcome
                do {
                    outcome = try await publisher.publish(copy)
                } catch {
                    printError("\(message.textLine): replay not published (\(error)); kept")
                    failed += 1
                    return true
                }
                guard outcome == .confirmed else {
                    printError("\(message.textLine): replay \(outcome); kept")
                    failed += 1
                    return true
                }
                try await channel.ack(message.delivery)
                replayed += 1
                return true
            }
            print(dryRun ? "would replay=\(replayed) kept=\(kept) failed=\(failed)" : "replayed=\(replayed) kept=\(kept) failed=\(failed)")
            if failed > 0 { throw WarrenExit.failure }
        }
    }
}
