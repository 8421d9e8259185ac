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
        subcommands: [List.self])

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
            let configuration = try options.load()
            let logger = Bootstrap.logging(configuration.log, override: .warning)
            let parking = ParkingQueues.holding(queue, in: configuration)
            let connection = try await connectOnce(configuration, role: "dead-letters", logger: logger)
            do {
                let channel = try await connection.openGetChannel(maxBodySize: configuration.defaults.maxBodySize)
                // At most what the queue held at the first get: a producer adding to it while
                // we walk does not keep the walk going.
                var remaining: Int?
                var listed = 0
                while listed < (limit ?? .max), remaining.map({ $0 > 0 }) ?? true, let got = try await channel.get(parking) {
                    remaining = (remaining ?? Int(got.messageCount) + 1) - 1
                    let message = ParkedMessage(got.delivery)
                    if json {
                        FileHandle.standardOutput.write(Data(try message.jsonLine()))
                    } else {
                        print(message.textLine)
                    }
                    listed += 1
                }
                try await channel.close()
            } catch let error as AMQPError {
                await connection.close()
                if error.replyCode == 404 {
                    printError("queue \"\(parking)\" does not exist")
                    throw WarrenExit.config
                }
                printError("lost the broker while listing: \(error)")
                throw WarrenExit.unavailable
            }
            await connection.close()
        }
    }
}
