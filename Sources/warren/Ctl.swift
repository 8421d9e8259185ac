import ArgumentParser
import Foundation
import WarrenCore

struct Ctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ctl",
        abstract: "Pause, resume or inspect the queues of a running warren.",
        discussion: """
            Talks to the running warren over its control socket, [control] socket in the \
            configuration (default /run/warren/control.sock). The socket is mode 0660: run as \
            root, as the service user, or as a member of its group (sudo warren ctl status). \
            Exits 0 when warren answers ok, 1 when it answers with an error, 69 when the socket \
            cannot be reached.
            """,
        subcommands: [Pause.self, Resume.self, Status.self])

    /// Where the socket is: `--socket`, else the configuration's `[control] socket`.
    struct Target: ParsableArguments {
        @OptionGroup var options: ConfigOption
        @Option(help: ArgumentHelp("The control socket (default: [control] socket of the configuration).", valueName: "path"))
        var socket: String?

        func path() throws -> String {
            if let socket { return socket }
            let configuration = try options.load()
            guard let path = configuration.control.socket else {
                printError("\(options.path): [control] socket = \"\": the control socket is turned off, warren ctl has nothing to talk to")
                throw WarrenExit.config
            }
            return path
        }

        /// Sends `request` and prints the answer: stdout when it is ok, stderr otherwise.
        func send(_ request: ControlProtocol.Request) throws {
            let path = try path()
            let answer: [String]
            do {
                answer = try ControlClient.send(request, to: path)
            } catch {
                printError("warren ctl: \(error)")
                throw WarrenExit.unavailable
            }
            if ControlClient.isSuccess(answer) {
                for line in answer { print(line) }
            } else {
                for line in answer { printError(line) }
                throw WarrenExit.failure
            }
        }
    }

    struct Pause: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop consuming QUEUE until it is resumed.",
            discussion: """
                Its consumer is cancelled: running handlers finish, deliveries not yet started go \
                back to the broker, new messages wait there. The pause lasts across reloads and \
                reconnects, not across a restart. /readyz stays 200 and names the paused queue.
                """)

        @OptionGroup var target: Target
        @Argument(help: "A queue of the running configuration.") var queue: String

        func validate() throws { try Ctl.validate(queue: queue) }

        func run() throws { try target.send(.pause(queue: queue)) }
    }

    struct Resume: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Consume QUEUE again after ctl pause.")

        @OptionGroup var target: Target
        @Argument(help: "A queue of the running configuration.") var queue: String

        func validate() throws { try Ctl.validate(queue: queue) }

        func run() throws { try target.send(.resume(queue: queue)) }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One line per configured queue: its state and counts.",
            discussion: """
                After an ok line, one logfmt line per queue in configuration order: queue=NAME \
                state=consuming|paused|circuit_open|circuit_probing|waiting [held_by=operator|breaker] \
                in_flight=N handled=N failed=N.
                """)

        @OptionGroup var target: Target

        func run() throws { try target.send(.status) }
    }

    static func validate(queue: String) throws {
        if queue.contains(where: \.isNewline) { throw ValidationError("QUEUE may not contain a line break") }
        if queue.isEmpty { throw ValidationError("QUEUE may not be empty") }
    }
}
