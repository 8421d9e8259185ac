import AMQP
import ArgumentParser
import Logging
import WarrenCore

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate the configuration file and print every problem.",
        discussion: """
            With --connect, also connect and verify the topology against the live broker: what \
            exists must be equivalent to the file, declare = false queues and referenced exchanges \
            must exist, and the broker user must be allowed to declare them. Nothing absent is \
            created. Exits 78 on any configuration problem, 69 when the broker cannot be reached or \
            refuses only for reasons of its own (an exclusive queue held by another connection).
            """)

    @OptionGroup var options: ConfigOption
    @Flag(help: "Also verify the topology against the live broker.") var connect = false

    func run() async throws {
        let configuration = try options.load()
        let summary = "\(configuration.queues.count) queues, \(configuration.handlers.count) handlers, \(configuration.exchanges.count) exchanges"
        guard connect else {
            print("\(options.path): OK (\(summary))")
            return
        }
        let logger = Bootstrap.logging(configuration.log, override: .warning)
        let connection = try await connectOnce(configuration, role: "check", logger: logger)
        let problems: [TopologyError.Problem]
        do {
            problems = try await TopologyDeclarer(plan: TopologyPlan(configuration), logger: logger).verify(on: connection)
        } catch {
            await connection.close()
            printError("lost the broker while checking the topology: \(error)")
            throw WarrenExit.unavailable
        }
        await connection.close()
        guard problems.isEmpty else {
            for problem in problems { printError("\(options.path): \(problem)") }
            // A refusal that may pass by itself (an exclusive queue held by another connection, a
            // broker-side error) is not a fault of the file: unavailable, not a config error.
            if TopologyError(problems: problems).isTransient {
                printError("\(options.path): the broker refused for now; nothing in the configuration needs to change")
                throw WarrenExit.unavailable
            }
            printError("\(options.path): the live broker contradicts the configuration (\(problems.count) problem\(problems.count == 1 ? "" : "s"))")
            throw WarrenExit.config
        }
        await adviseOnDeliveryLimits(configuration)
        print("\(options.path): OK (\(summary)); the broker at \(connection.negotiated.endpoint) agrees")
    }

    /// Warnings (not problems: the exit status stays 0) about the delivery limits of quorum
    /// queues, whose policies only the management API can tell (docs/cluster.md).
    private func adviseOnDeliveryLimits(_ configuration: Configuration) async {
        let quorum = configuration.queues.enumerated().filter { $0.element.type == .quorum }
        guard !quorum.isEmpty, let endpoint = configuration.broker.endpoints.first else { return }
        guard let base = configuration.broker.managementURL else {
            printError("\(options.path): note: delivery limits set by policies on quorum queues are not checked; set broker.management_url to check them")
            return
        }
        let api = QueuePolicies(baseURL: base, user: endpoint.user, password: endpoint.password)
        for (index, queue) in quorum {
            do {
                guard let facts = try await api.facts(queue: queue.name, vhost: endpoint.vhost) else { continue }
                for warning in DeliveryLimitCheck.warnings(for: queue, at: "queues[\(index)]", facts: facts) {
                    printError("\(options.path): warning: \(warning)")
                }
            } catch {
                printError("\(options.path): warning: the policies of queue \"\(queue.name)\" were not checked: \(error)")
            }
        }
    }
}
