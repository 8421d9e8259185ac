import AMQP
import Foundation
import Testing

@Suite("Publishing against RabbitMQ", .requiresBroker, .timeLimit(.minutes(3)))
struct PublishingTests {
    @Test func tenThousandPublishesAreAllConfirmed() async throws {
        let connection = try await TestBroker.connect()
        try await TestBroker.withQueue("publish10k", on: connection) { queue in
            // A publish's deadline counts from its submission, so the last of 10,000 submitted at
            // once waits for 9,000 confirms first: with the whole suite loading the broker, that
            // outlasts the default 5 seconds. What this test checks is that all are confirmed.
            let publisher = try await connection.openPublisher(PublisherOptions(maxInFlight: 1000, confirmTimeout: .seconds(120)))
            let outcomes = try await withThrowingTaskGroup(of: PublishOutcome.self) { group in
                for index in 0..<10_000 {
                    group.addTask { try await publisher.publish(routingKey: queue, body: Array("p\(index)".utf8)) }
                }
                var outcomes: [PublishOutcome: Int] = [:]
                for try await outcome in group { outcomes[outcome, default: 0] += 1 }
                return outcomes
            }
            #expect(outcomes == [.confirmed: 10_000])
            let state = try await connection.declareQueue(QueueDeclaration(name: queue, passive: true))
            #expect(state.messageCount == 10_000)
        }
        await connection.close()
    }

    @Test func anUnroutableMandatoryPublishIsReturned() async throws {
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        let outcome = try await publisher.publish(routingKey: TestBroker.uniqueName("nobody-bound"), body: Array("lost?".utf8))
        #expect(outcome == .returned(replyCode: 312, replyText: "NO_ROUTE"))
        // A message with its own message id is matched by it, among routable neighbours.
        try await TestBroker.withQueue("mixed", on: connection) { queue in
            async let routed = publisher.publish(routingKey: queue, body: [1], properties: BasicProperties(messageID: "dup"))
            async let unrouted = publisher.publish(routingKey: "\(queue).nobody", body: [2], properties: BasicProperties(messageID: "dup"))
            async let routedAgain = publisher.publish(routingKey: queue, body: [3], properties: BasicProperties(messageID: "dup"))
            let results = try await [routed, unrouted, routedAgain]
            #expect(results.filter { $0 == .confirmed }.count == 2)
            #expect(results.filter { if case .returned = $0 { true } else { false } }.count == 1)
        }
        await connection.close()
    }

    @Test func publishingToAMissingExchangeFailsWith404AndThePublisherKeepsWorking() async throws {
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        let error = await #expect(throws: AMQPError.self) {
            _ = try await publisher.publish(exchange: TestBroker.uniqueName("no-such-exchange"), routingKey: "k", body: [1])
        }
        #expect(error?.code == .channelClosed)
        #expect(error?.replyCode == 404)
        #expect(error?.replyText?.contains("no exchange") == true)
        try await TestBroker.withQueue("after-404", on: connection) { queue in
            let outcome = try await publisher.publish(routingKey: queue, body: [2])
            #expect(outcome == .confirmed)
        }
        await connection.close()
    }

    @Test func aConfirmThatNeverComesTimesOutWithinTheConfirmTimeoutPlusOneSecond() async throws {
        let proxy = try LoopbackProxy(upstreamHost: TestBroker.endpoint.host, upstreamPort: TestBroker.endpoint.port)
        defer { proxy.stop() }
        var endpoint = TestBroker.endpoint
        endpoint.host = "127.0.0.1"
        endpoint.port = proxy.port
        // A long heartbeat, so that the confirm deadline, not heartbeat loss, is what fires.
        let connection = try await AMQPConnection.connect(TestBroker.configuration(heartbeat: .seconds(60), endpoint: endpoint), logger: TestBroker.logger)
        let confirmTimeout = Duration.seconds(1)
        try await TestBroker.withQueue("blackhole", on: connection) { queue in
            let publisher = try await connection.openPublisher(PublisherOptions(maxInFlight: 10, confirmTimeout: confirmTimeout))
            let before = try await publisher.publish(routingKey: queue, body: [0])
            #expect(before == .confirmed)
            proxy.freeze()
            let clock = ContinuousClock()
            let started = clock.now
            let outcome = try await publisher.publish(routingKey: queue, body: [1])
            let elapsed = clock.now - started
            #expect(outcome == .timedOut)
            #expect(elapsed >= confirmTimeout)
            // Without the timeout it would wait for as long as the proxy stays frozen.
            #expect(elapsed < confirmTimeout * 10, "timed out after \(elapsed)")
            proxy.thaw()
        }
        await connection.close()
    }

    @Test func anOverLongRoutingKeyIsRefusedBeforeAnythingIsSent() async throws {
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openPublisher()
        let error = await #expect(throws: AMQPError.self) {
            _ = try await publisher.publish(routingKey: String(repeating: "k", count: 256), body: [])
        }
        #expect(error?.code == .invalidArgument)
        #expect(connection.isOpen)
        await connection.close()
    }
}

@Suite("Connecting to RabbitMQ", .requiresBroker, .timeLimit(.minutes(1)))
struct ConnectingTests {
    @Test func theBrokerIsReachable() async throws {
        // Under CI this is the test that says plainly that the broker is missing.
        let connection = try await TestBroker.connect()
        #expect(connection.negotiated.frameMax == 131_072)
        await connection.close()
        #expect(!connection.isOpen)
    }

    @Test func aWrongPasswordIsAnAuthenticationFailureThatDoesNotShowThePassword() async throws {
        var endpoint = TestBroker.endpoint
        endpoint.password = "definitely-wrong-\(UUID().uuidString)"
        let error = await #expect(throws: AMQPError.self) {
            _ = try await AMQPConnection.connect(TestBroker.configuration(endpoint: endpoint), logger: TestBroker.logger)
        }
        #expect(error?.code == .authenticationFailed)
        #expect(error?.replyCode == 403)
        #expect(error.map { !"\($0)".contains(endpoint.password) } == true)
    }

    @Test func theFirstReachableEndpointWins() async throws {
        var dead = TestBroker.endpoint
        dead.host = "127.0.0.1"
        dead.port = 1  // nothing listens on port 1
        var configuration = TestBroker.configuration()
        configuration.endpoints = [dead, TestBroker.endpoint]
        let connection = try await AMQPConnection.connect(configuration, logger: TestBroker.logger)
        #expect(connection.negotiated.endpoint == TestBroker.endpoint)
        await connection.close()
    }

    @Test func operationsOnAClosedConnectionFailWithClosedByClient() async throws {
        let connection = try await TestBroker.connect()
        await connection.close()
        let error = await #expect(throws: AMQPError.self) {
            try await connection.declareQueue(QueueDeclaration(name: TestBroker.uniqueName("closed")))
        }
        #expect(error?.code == .closedByClient)
    }
}
