import AMQP
import Testing
@testable import WarrenCore

/// What warren declares for a queue's retry ladder and parking queue, and how it reads the
/// broker's refusals (the broker itself is exercised by the integration and cluster tests).
@Suite struct TopologyPlanTests {
    static func plan(type: String) throws -> TopologyPlan {
        let source = """
            [broker]
            urls = ["amqp://guest:guest@127.0.0.1:5672/"]

            [[queues]]
            name = "orders"
            type = "\(type)"
            handler = "h"

            [handlers.h]
            kind = "noop"
            """
        return TopologyPlan(try ConfigurationLoader.parse(source: source, file: "test.toml"))
    }

    @Test func aQuorumQueuesLadderAndParkingQueueAreQuorumQueuesThatDeadLetterAtLeastOnce() throws {
        let plan = try Self.plan(type: "quorum")
        let ladder = plan.queues.filter { if case .retry = $0.role { true } else { false } }
        #expect(ladder.count == RetryPolicy().delaySeries.count)
        for step in ladder {
            let arguments = step.declaration.arguments
            #expect(step.declaration.durable)
            #expect(arguments["x-queue-type"] == "quorum")
            #expect(arguments["x-dead-letter-strategy"] == "at-least-once")
            // The broker falls back to at-most-once dead-lettering without it.
            #expect(arguments["x-overflow"] == "reject-publish")
            #expect(arguments["x-dead-letter-exchange"] == "")
            #expect(arguments["x-dead-letter-routing-key"] == "orders")
            #expect(arguments["x-message-ttl"] != nil)
            #expect(step.owner == "orders")
        }
        let parking = try #require(plan.queues.first { if case .parking = $0.role { true } else { false } })
        #expect(parking.declaration.arguments["x-queue-type"] == "quorum")
    }

    @Test func aClassicQueuesLadderStaysClassicAsBefore() throws {
        let plan = try Self.plan(type: "classic")
        let ladder = plan.queues.filter { if case .retry = $0.role { true } else { false } }
        #expect(ladder.count == RetryPolicy().delaySeries.count)
        for step in ladder {
            guard case .retry(_, let delay) = step.role else { continue }
            #expect(step.declaration.arguments == [
                "x-message-ttl": .int64(delay.milliseconds), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "orders",
            ])
        }
    }

    static func step(passive: Bool, role: TopologyPlan.QueueRole = .configured) -> TopologyPlan.QueueStep {
        TopologyPlan.QueueStep(
            declaration: QueueDeclaration(name: "orders.retry.1s", passive: passive), role: role, declare: !passive, configPath: "queues[0]",
            typeKey: "queues[0].type")
    }

    static func refusal(_ code: UInt16, _ text: String) -> AMQPError {
        AMQPError(.channelClosed, "declaring failed", replyCode: code, replyText: text)
    }

    @Test func aQueueOnANodeThatIsDownIsUnavailableForNowNeverAConfigurationError() {
        let text = "NOT_FOUND - home node 'rabbit@b' of durable queue 'orders.retry.1s' in vhost '/' is down or inaccessible"
        for passive in [false, true] {
            let problem = TopologyRefusal.queueProblem(Self.step(passive: passive), Self.refusal(404, text))
            #expect(problem.isTransient)
            #expect(problem.message.contains("is unavailable for now"))
            #expect(problem.message.contains("home node 'rabbit@b'"))
        }
    }

    @Test func notFoundForADeclarationThatCreatesIsTransientButForAPassiveOneItIsTheFiles() {
        let created = TopologyRefusal.queueProblem(Self.step(passive: false), Self.refusal(404, "NOT_FOUND - no queue 'orders.retry.1s'"))
        #expect(created.isTransient)
        let passive = TopologyRefusal.queueProblem(Self.step(passive: true), Self.refusal(404, "NOT_FOUND - no queue 'orders.retry.1s'"))
        #expect(!passive.isTransient)
        #expect(passive.message.contains("declare = false"))
    }

    @Test func inequivalentAndForbiddenStayConfigurationErrors() {
        let inequivalent = TopologyRefusal.queueProblem(
            Self.step(passive: false),
            Self.refusal(406, "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'orders' in vhost '/': received 'classic' but current is 'quorum'"))
        #expect(!inequivalent.isTransient)
        let forbidden = TopologyRefusal.queueProblem(Self.step(passive: false), Self.refusal(403, "ACCESS_REFUSED - access to queue 'orders' refused"))
        #expect(!forbidden.isTransient)
    }
}
