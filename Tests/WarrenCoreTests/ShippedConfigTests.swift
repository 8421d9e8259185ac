import AMQP
import Foundation
import Testing

@testable import WarrenCore

/// The configs in `config/` load on a real machine (with python3 on PATH) and say what they claim.
@Suite("Shipped configurations")
struct ShippedConfigTests {
    @Test func exampleConfigLoadsAndRunsOneLoggedDemoQueue() throws {
        let c = try ConfigurationLoader.load(path: RepositoryConfigs.examplePath, checks: .live)
        #expect(c.sourceFile == RepositoryConfigs.examplePath)
        #expect(c.broker.endpoints == [AMQPEndpoint(host: "127.0.0.1", port: 5672, vhost: "/", user: "guest", password: "guest")])
        #expect(c.broker.connectionName == "warren-example@\(ProcessInfo.processInfo.hostName)")
        #expect(c.exchanges.map(\.name) == ["warren.demo"])
        #expect(c.exchanges.first?.type == "topic")

        try #require(c.queues.count == 1)
        let demo = c.queues[0]
        #expect(demo.name == "warren.demo")
        #expect(demo.bindings == [BindingConfiguration(exchange: "warren.demo", routingKey: "demo.#")])
        #expect(demo.target == .handler("print"))
        #expect(demo.prefetch == 16)
        #expect(demo.concurrency == 4)
        #expect(demo.parkingQueue == "warren.demo.dead")
        #expect(c.handlers == [HandlerConfiguration(name: "print", kind: .log, timeout: nil)])
    }

    @Test func referenceConfigLoadsWithEveryHandlerKindButPlugin() throws {
        let c = try ConfigurationLoader.load(path: RepositoryConfigs.referencePath, checks: .live)
        #expect(Set(c.handlers.map(\.kind.name)) == Set(HandlerKind.names).subtracting(["plugin"]))
        #expect(c.queues.map(\.name) == ["orders.billing", "events.all"])
        // Every handler a queue names exists.
        for queue in c.queues {
            for name in queue.handlerNames {
                #expect(c.handler(named: name) != nil, "\(queue.name) names \(name)")
            }
        }
    }

    /// The reference documents each key "with its default value": where it writes the default,
    /// the value must be the model's default.
    @Test func referenceConfigWritesTheDocumentedDefaults() throws {
        let c = try ConfigurationLoader.load(path: RepositoryConfigs.referencePath, checks: .live)
        let broker = BrokerConfiguration(endpoints: [])
        #expect(c.broker.endpoints == [AMQPEndpoint(host: "127.0.0.1")])
        #expect(c.broker.passwordFile == nil)
        #expect(c.broker.heartbeat == broker.heartbeat)
        #expect(c.broker.connectTimeout == broker.connectTimeout)
        #expect(c.broker.reconnectInitialDelay == broker.reconnectInitialDelay)
        #expect(c.broker.reconnectMaxDelay == broker.reconnectMaxDelay)
        #expect(c.broker.connectionName == "warren@\(ProcessInfo.processInfo.hostName)")
        #expect(c.broker.consumerTimeout == broker.consumerTimeout)
        #expect(c.broker.tls == nil)

        let publisher = PublisherConfiguration()
        #expect(c.publisher.confirmTimeout == publisher.confirmTimeout)
        #expect(c.publisher.mandatory == publisher.mandatory)
        #expect(c.publisher.maxInFlight == publisher.maxInFlight)

        let defaults = QueueDefaults()
        #expect(c.defaults.ackPolicy == defaults.ackPolicy)
        #expect(c.defaults.prefetch == defaults.prefetch)
        #expect(c.defaults.concurrency == defaults.concurrency)
        #expect(c.defaults.handlerTimeout == defaults.handlerTimeout)
        #expect(c.defaults.ackMode == defaults.ackMode)
        #expect(c.defaults.shutdownTimeout == defaults.shutdownTimeout)
        #expect(c.defaults.maxBodySize == defaults.maxBodySize)

        #expect(c.log.level == LogConfiguration().level)
        #expect(c.log.format == LogConfiguration().format)
        #expect(c.metrics == MetricsConfiguration(host: "127.0.0.1", port: 9419))
        #expect(c.dedup.store == DedupConfiguration().store)
        #expect(c.dedup.path == DedupConfiguration().path)
        #expect(c.dedup.ttl == DedupConfiguration().ttl)
        #expect(c.control.socket == ControlConfiguration().socket)

        let exchange = try #require(c.exchanges.first)
        #expect(exchange.durable == true)
        #expect(exchange.autoDelete == false)
        #expect(exchange.internal == false)
        #expect(exchange.arguments.isEmpty)

        let billing = try #require(c.queues.first)
        #expect(billing.declare == true)
        #expect(billing.durable == true)
        #expect(billing.ackMode == defaults.ackMode)
        #expect(billing.shutdownTimeout == defaults.shutdownTimeout)
        #expect(billing.maxBodySize == defaults.maxBodySize)
        #expect(billing.dedup == false)
        #expect(billing.singleActiveConsumer == false)
        #expect(billing.consumerPriority == 0)
        #expect(billing.retry == RetryPolicy())
        #expect(billing.deadLetter == .publish(exchange: "", routingKey: QueueConfiguration.parkingQueueName(billing.name)))
        #expect(billing.parkingQueue == "orders.billing.dead")

        let events = try #require(c.queues.last)
        if case .routes(let routes, let unrouted) = events.target {
            #expect(routes.count == 3)
            #expect(unrouted == .deadLetter)
        } else {
            Issue.record("events.all should have routes, has \(events.target)")
        }

        #expect(c.handler(named: "search-index")?.kind == .http(
            url: "http://127.0.0.1:8080/index", method: "POST", headers: ["Authorization": "Bearer token"]))
        #expect(c.handler(named: "archive")?.kind == .file(path: "/var/lib/warren/archive.jsonl", fsync: .batch))
        #expect(c.handler(named: "eu-compliance")?.kind == .republish(exchange: "compliance", routingKey: "eu.{routing_key}"))
        #expect(c.handler(named: "billing")?.timeout == .seconds(60))
    }
}
