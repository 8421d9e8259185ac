import AMQP
import Foundation
import Testing
import WarrenCore

@Suite("HTTP webhook handler against RabbitMQ and a real HTTP server", .requiresBroker, .timeLimit(.minutes(2)))
struct HTTPHandlerTests {
    /// A queue whose handler `hook` is an http handler posting to `url`. `queue` settings go
    /// last in the queue's table, so they may open `[queues.retry]`.
    static func config(queue: String, url: String, handler: String = "", queueSettings: String = "") -> String {
        """
        [broker]
        urls = ["\(TestBroker.url)"]
        [handlers.hook]
        kind = "http"
        url = "\(url)"
        \(handler)
        [[queues]]
        name = "\(queue)"
        durable = false
        handler = "hook"
        \(queueSettings)
        """
    }

    /// Runs the engine for `source`, publishing `messages` once it is consuming, until `done`.
    @discardableResult
    static func run(
        _ source: String, publishing messages: [OutgoingMessage], on connection: AMQPConnection, until done: @escaping @Sendable () async throws -> Bool
    ) async throws -> [String] {
        let publisher = try await connection.openPublisher(PublisherOptions(maxInFlight: 1000, confirmTimeout: .seconds(30)))
        let sent = Latch()
        return try await BuiltinHandlerTests.withEngine(source) {
            if !sent.isSet {
                sent.set()
                let confirmed = try await withThrowingTaskGroup(of: PublishOutcome.self) { group in
                    for message in messages { group.addTask { try await publisher.publish(message) } }
                    return try await group.reduce(0) { $0 + ($1 == .confirmed ? 1 : 0) }
                }
                #expect(confirmed == messages.count)
            }
            return try await done()
        }
    }

    static func message(_ queue: String, _ body: String = "payload", _ properties: BasicProperties = BasicProperties()) -> OutgoingMessage {
        OutgoingMessage(exchange: "", routingKey: queue, mandatory: true, properties: properties, body: Array(body.utf8))
    }

    static func count(_ queue: String, on connection: AMQPConnection) async throws -> UInt32 {
        try await connection.declareQueue(QueueDeclaration(name: queue, passive: true)).messageCount
    }

    /// `condition`, and `queue` has no ready message left (checked only once the condition holds).
    static func holds(_ condition: Bool, andEmpty queue: String, on connection: AMQPConnection) async throws -> Bool {
        guard condition else { return false }
        return try await count(queue, on: connection) == 0
    }

    /// The messages in `queue`, drained (acked).
    static func drain(_ queue: String, expecting count: Int, on connection: AMQPConnection) async throws -> [Delivery] {
        let consumer = try await connection.consume(ConsumeOptions(queue: queue, prefetch: 100))
        let received = try await collect(count, from: consumer, within: .seconds(10)) { consumer.ack($0) }
        try await consumer.close()
        return received
    }

    @Test func a200AcksTheMessageAfterPostingBodyContentTypeAndWarrenHeaders() async throws {
        let server = try await TestHTTPServer.start()
        let queue = TestBroker.uniqueName("http-ok")
        let connection = try await TestBroker.connect()
        let source = Self.config(queue: queue, url: "\(server.url)/hooks/orders?v=1", handler: """
            headers = { Authorization = "Bearer t0ken", "X-Custom" = "yes" }
            """)
        let declared = try await Self.run(source, publishing: [
            Self.message(queue, #"{"id":1}"#, BasicProperties(contentType: "application/json", messageID: "m-json")),
            // Not mandatory: the AMQP publisher gives mandatory messages an id, and this one has none.
            OutgoingMessage(exchange: "", routingKey: queue, mandatory: false, properties: BasicProperties(), body: Array("raw".utf8)),
        ], on: connection) { try await Self.holds(server.requests.count >= 2, andEmpty: queue, on: connection) }
        #expect(server.requests.count == 2)
        let json = try #require(server.requests.first { $0.header("X-Warren-Message-Id") == "m-json" })
        #expect(json.method == "POST")
        #expect(json.uri == "/hooks/orders?v=1")
        #expect(json.body == Array(#"{"id":1}"#.utf8))
        #expect(json.header("Content-Type") == "application/json")
        #expect(json.header("X-Warren-Queue") == queue)
        #expect(json.header("X-Warren-Routing-Key") == queue)
        #expect(json.header("X-Warren-Attempt") == "1")
        #expect(json.header("X-Warren-Redelivered") == "false")
        #expect(json.header("Authorization") == "Bearer t0ken")
        #expect(json.header("X-Custom") == "yes")
        #expect(json.header("User-Agent")?.hasPrefix("warren/") == true)
        let raw = try #require(server.requests.first { $0.body == Array("raw".utf8) })
        #expect(raw.header("Content-Type") == "application/octet-stream", "no content type on the message")
        #expect(raw.header("X-Warren-Message-Id") == nil, "no message id on the message")
        #expect(try await Self.count("\(queue).dead", on: connection) == 0)
        await BuiltinHandlerTests.delete(declared)
        await server.stop()
        await connection.close()
    }

    @Test func a400IsARejectVerdictAndParksTheMessageWithReasonRejected() async throws {
        let server = try await TestHTTPServer.start { _, _ in TestHTTPServer.Response(status: 400) }
        let queue = TestBroker.uniqueName("http-400")
        let connection = try await TestBroker.connect()
        let declared = try await Self.run(Self.config(queue: queue, url: server.url), publishing: [Self.message(queue)], on: connection) {
            try await Self.count("\(queue).dead", on: connection) == 1
        }
        #expect(server.requests.count == 1, "a reject is not retried")
        let parked = try #require(try await Self.drain("\(queue).dead", expecting: 1, on: connection).first)
        #expect(parked.body == Array("payload".utf8))
        #expect(parked.properties.headers?["x-warren-reason"] == .string("rejected"))
        #expect(parked.properties.headers?["x-warren-error"] == .string("HTTP 400"))
        #expect(parked.properties.headers?["x-warren-handler"] == .string("hook"))
        await BuiltinHandlerTests.delete(declared)
        await server.stop()
        await connection.close()
    }

    @Test func a503IsAFailureThatTheRetryLadderRetriesUntilItSucceeds() async throws {
        let server = try await TestHTTPServer.start { _, index in TestHTTPServer.Response(status: index < 2 ? 503 : 200) }
        let queue = TestBroker.uniqueName("http-503")
        let connection = try await TestBroker.connect()
        let source = Self.config(queue: queue, url: server.url, queueSettings: """
            [queues.retry]
            max_attempts = 5
            delay = "100ms"
            multiplier = 2.0
            """)
        let declared = try await Self.run(source, publishing: [Self.message(queue)], on: connection) {
            try await Self.holds(server.requests.count >= 3, andEmpty: queue, on: connection)
        }
        #expect(server.requests.map { $0.header("X-Warren-Attempt") } == ["1", "2", "3"])
        #expect(server.requests.allSatisfy { $0.body == Array("payload".utf8) })
        for name in declared {
            #expect(try await Self.count(name, on: connection) == 0, "\(name) is empty: acked after the third try, nothing parked")
        }
        await BuiltinHandlerTests.delete(declared)
        await server.stop()
        await connection.close()
    }

    @Test func a429WithRetryAfterIsRetriedAfterThatDelay() async throws {
        let server = try await TestHTTPServer.start { _, index in
            index == 0 ? TestHTTPServer.Response(status: 429, headers: [("Retry-After", "8")]) : TestHTTPServer.Response()
        }
        let queue = TestBroker.uniqueName("http-429")
        let connection = try await TestBroker.connect()
        // Ladder 1s, 8s, 64s: the requested 8 s is taken (the first step at least as long), not
        // the first attempt's 1 s nor the 64 s after it; far enough apart that a loaded
        // machine's delays cannot blur them.
        let source = Self.config(queue: queue, url: server.url, queueSettings: """
            [queues.retry]
            max_attempts = 4
            delay = "1s"
            multiplier = 8.0
            """)
        let declared = try await Self.run(source, publishing: [Self.message(queue)], on: connection) {
            try await Self.holds(server.requests.count >= 2, andEmpty: queue, on: connection)
        }
        let requests = server.requests
        try #require(requests.count == 2)
        let gap = requests[1].at - requests[0].at
        #expect(gap >= .milliseconds(7900) && gap < .seconds(40), "gap \(gap): the 8 s step, not the 1 s or 64 s one")
        #expect(requests[1].header("X-Warren-Attempt") == "2")
        #expect(try await Self.count("\(queue).dead", on: connection) == 0)
        await BuiltinHandlerTests.delete(declared)
        await server.stop()
        await connection.close()
    }

    @Test func anUnreachableServerIsAFailureRetriedThenParkedNamingTheConnectionProblem() async throws {
        // A port that was just listening and is closed now: connections are refused.
        let gone = try await TestHTTPServer.start()
        await gone.stop()
        let queue = TestBroker.uniqueName("http-down")
        let connection = try await TestBroker.connect()
        let source = Self.config(queue: queue, url: "\(gone.url)/hook", queueSettings: """
            [queues.retry]
            max_attempts = 3
            delay = "100ms"
            """)
        let declared = try await Self.run(source, publishing: [Self.message(queue)], on: connection) {
            try await Self.count("\(queue).dead", on: connection) == 1
        }
        let parked = try #require(try await Self.drain("\(queue).dead", expecting: 1, on: connection).first)
        let headers = parked.properties.headers
        #expect(headers?["x-warren-reason"] == .string("attempts_exhausted"))
        #expect(headers?["x-warren-attempts"]?.integerValue == 3)
        #expect(headers?["x-warren-error"] == .string("connection refused by 127.0.0.1:\(gone.port)"))
        #expect(headers?["x-warren-http-status"] == nil)
        await BuiltinHandlerTests.delete(declared)
        await connection.close()
    }

    @Test func aRequestWithReplyToGetsExactlyOneReplyCarryingTheResponseBody() async throws {
        let server = try await TestHTTPServer.start { request, _ in
            TestHTTPServer.Response(status: 201, body: Array("reply to \(request.method) \(request.body.count)".utf8))
        }
        let queue = TestBroker.uniqueName("http-rpc")
        let replies = "\(queue).replies"
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: replies, durable: false))
        let source = Self.config(queue: queue, url: server.url, handler: #"method = "PUT""#)
        let request = BasicProperties(correlationID: "corr-7", replyTo: AMQPString(replies), messageID: "rpc-1")
        let declared = try await Self.run(source, publishing: [Self.message(queue, "12345", request)], on: connection) {
            try await Self.holds(try await Self.count(replies, on: connection) >= 1, andEmpty: queue, on: connection)
        }
        #expect(try await Self.count(replies, on: connection) == 1, "exactly one reply")
        let reply = try #require(try await Self.drain(replies, expecting: 1, on: connection).first)
        #expect(reply.properties.correlationID == "corr-7")
        #expect(reply.body == Array("reply to PUT 5".utf8))
        #expect(server.requests.count == 1)
        try await connection.deleteQueue(replies)
        await BuiltinHandlerTests.delete(declared)
        await server.stop()
        await connection.close()
    }

    @Test func aReplyOverOneMebibyteFailsWhileTheSameBodyWithoutReplyToIsIgnored() async throws {
        let server = try await TestHTTPServer.start { _, _ in TestHTTPServer.Response(body: [UInt8](repeating: 0x61, count: 2 << 20)) }
        let queue = TestBroker.uniqueName("http-big")
        let replies = "\(queue).replies"
        let connection = try await TestBroker.connect()
        try await connection.declareQueue(QueueDeclaration(name: replies, durable: false))
        let source = Self.config(queue: queue, url: server.url, queueSettings: #"ack_policy = "reject_on_error""#)
        let declared = try await Self.run(source, publishing: [
            Self.message(queue, "wants a reply", BasicProperties(correlationID: "big", replyTo: AMQPString(replies), messageID: "rpc")),
            Self.message(queue, "fire and forget", BasicProperties(messageID: "plain")),
        ], on: connection) {
            try await Self.holds(try await Self.count("\(queue).dead", on: connection) == 1, andEmpty: queue, on: connection)
        }
        let parked = try #require(try await Self.drain("\(queue).dead", expecting: 1, on: connection).first)
        #expect(parked.properties.messageID == "rpc")
        #expect(parked.properties.headers?["x-warren-error"] == .string("response body exceeds 1 MiB"))
        #expect(parked.properties.headers?["x-warren-http-status"]?.integerValue == 200)
        #expect(try await Self.count(replies, on: connection) == 0, "no truncated reply")
        #expect(server.requests.count == 2, "the message without reply_to succeeded on its first request")
        try await connection.deleteQueue(replies)
        await BuiltinHandlerTests.delete(declared)
        await server.stop()
        await connection.close()
    }

    @Test func aRedirectIsNotFollowedAndCountsAsAFailure() async throws {
        let server = try await TestHTTPServer.start { request, _ in
            request.uri == "/old" ? TestHTTPServer.Response(status: 301, headers: [("Location", "/new")]) : TestHTTPServer.Response()
        }
        let queue = TestBroker.uniqueName("http-301")
        let connection = try await TestBroker.connect()
        let source = Self.config(queue: queue, url: "\(server.url)/old", queueSettings: #"ack_policy = "reject_on_error""#)
        let declared = try await Self.run(source, publishing: [Self.message(queue)], on: connection) {
            try await Self.count("\(queue).dead", on: connection) == 1
        }
        #expect(server.requests.map(\.uri) == ["/old"], "the POST did not move to /new")
        let parked = try #require(try await Self.drain("\(queue).dead", expecting: 1, on: connection).first)
        #expect(parked.properties.headers?["x-warren-reason"] == .string("failed"))
        #expect(parked.properties.headers?["x-warren-error"] == .string("HTTP 301"))
        #expect(parked.properties.headers?["x-warren-http-status"]?.integerValue == 301)
        await BuiltinHandlerTests.delete(declared)
        await server.stop()
        await connection.close()
    }

    @Test func aServerSlowerThanTheHandlerTimeoutIsATimeoutFailure() async throws {
        let server = try await TestHTTPServer.start { _, _ in TestHTTPServer.Response(delay: .seconds(40)) }
        let queue = TestBroker.uniqueName("http-slow")
        let connection = try await TestBroker.connect()
        let source = Self.config(queue: queue, url: server.url, handler: #"timeout = "500ms""#, queueSettings: #"ack_policy = "reject_on_error""#)
        let clock = ContinuousClock()
        let started = clock.now
        let declared = try await Self.run(source, publishing: [Self.message(queue)], on: connection) {
            try await Self.count("\(queue).dead", on: connection) == 1
        }
        #expect(clock.now - started < .seconds(30), "the run ended at the timeout, not when the server answered (40 s)")
        let parked = try #require(try await Self.drain("\(queue).dead", expecting: 1, on: connection).first)
        #expect(parked.properties.headers?["x-warren-reason"] == .string("failed"))
        #expect(parked.properties.headers?["x-warren-error"] == .string("timeout after 500ms"))
        #expect(server.requests.count == 1)
        await BuiltinHandlerTests.delete(declared)
        await server.stop()
        await connection.close()
    }

    @Test func athousandRequestsReuseThePooledConnectionsInsteadOfLeakingOne() async throws {
        let server = try await TestHTTPServer.start { _, _ in TestHTTPServer.Response(body: Array("ok".utf8)) }
        let queue = TestBroker.uniqueName("http-pool")
        let connection = try await TestBroker.connect()
        let concurrency = 4
        let source = Self.config(queue: queue, url: server.url, queueSettings: """
            prefetch = 16
            concurrency = \(concurrency)
            """)
        let messages = (0..<1000).map { Self.message(queue, "message \($0)", BasicProperties(messageID: "m\($0)")) }
        let declared = try await Self.run(source, publishing: messages, on: connection) {
            try await Self.holds(server.requests.count >= 1000, andEmpty: queue, on: connection)
        }
        #expect(server.requests.count == 1000)
        #expect(Set(server.requests.compactMap { $0.header("X-Warren-Message-Id") }).count == 1000)
        #expect(server.acceptedConnections <= concurrency, "\(server.acceptedConnections) connections for 1000 requests")
        await BuiltinHandlerTests.delete(declared)
        await server.stop()
        await connection.close()
    }
}
