import AMQP
import Foundation
import Testing
import WarrenCore

/// What a hostile or buggy producer can send, against the real broker: every case must end with
/// the message handled or parked, in a bounded number of handler runs, and warren still running.
@Suite("Hostile input against RabbitMQ", .serialized, .requiresBroker, .timeLimit(.minutes(3)))
struct HostileInputTests {
    static let shortLadder = """
        ack_policy = "nack_on_error"
        [queues.retry]
        max_attempts = 2
        delay = "100ms"
        max_delay = "200ms"
        """

    /// Runs `body` against a started harness, then stops it and deletes what it declared.
    static func withEngine(_ harness: EngineHarness, _ body: (AMQPConnection) async throws -> Void) async throws {
        let connection = try await TestBroker.connect()
        do {
            try await harness.start()
            try await body(connection)
        } catch {
            await harness.stopAndWait()
            await harness.cleanUp()
            await connection.close()
            throw error
        }
        let outcome = await harness.stopAndWait()
        await harness.cleanUp()
        await connection.close()
        #expect(outcome == .stopped, "the engine ends only because it was told to stop")
    }

    static func header(_ delivery: Delivery?, _ key: String) -> FieldValue? { delivery?.properties.headers?[key] }

    @Test func aDeliveryCountOfInt64MaxIsCountedWithoutTrappingAndParked() async throws {
        let harness = try EngineHarness(queueSettings: Self.shortLadder)
        try await Self.withEngine(harness) { connection in
            try await harness.publish("huge-count", test: "fail", headers: ["x-test-always": true, "x-delivery-count": .int64(.max)], on: connection)
            let parked = try await harness.drainParked(expecting: 1, on: connection)
            #expect(Self.header(parked.first, "x-warren-reason") == .string("attempts_exhausted"))
            #expect(Self.header(parked.first, "x-warren-attempts") == .int64(.max))
            #expect(harness.recorder.snapshot.calls(for: "huge-count").count == 1, "the count says the attempts are spent: one run")
        }
    }

    @Test func aReplyToAQueueThatIsGoneIsRetriedThenParkedNotRequeuedForever() async throws {
        let harness = try EngineHarness(queueSettings: Self.shortLadder)
        try await Self.withEngine(harness) { connection in
            try await harness.publish(
                "orphan", test: "reply", headers: ["x-test-always": true],
                properties: BasicProperties(replyTo: AMQPString(TestBroker.uniqueName("requester-gone"))), on: connection)
            let parked = try await harness.drainParked(expecting: 1, on: connection)
            #expect(Self.header(parked.first, "x-warren-reason") == .string("attempts_exhausted"))
            #expect(Self.header(parked.first, "x-warren-error")?.stringValue?.contains("312") == true, "the error names the return")
            #expect(harness.recorder.snapshot.calls(for: "orphan").count == 2, "max_attempts runs, no more")
        }
    }

    @Test(arguments: ["missing-exchange", "amq.direct/nobody-bound-this"])
    func anOutputThatTheBrokerRefusesIsRetriedThenParked(target: String) async throws {
        let exchange = target == "missing-exchange" ? TestBroker.uniqueName("missing-exchange") : target
        let harness = try EngineHarness(queueSettings: Self.shortLadder)
        try await Self.withEngine(harness) { connection in
            try await harness.publish("refused-output", test: "publish:\(exchange)", headers: ["x-test-always": true], on: connection)
            let parked = try await harness.drainParked(expecting: 1, on: connection)
            #expect(Self.header(parked.first, "x-warren-reason") == .string("attempts_exhausted"))
            #expect(harness.recorder.snapshot.calls(for: "refused-output").count == 2)
            // The publisher recovered from the channel error: an ordinary message still goes through.
            try await harness.publish("after", on: connection)
            #expect(await harness.recorder.wait { $0.calls(for: "after").count == 1 })
        }
    }

    @Test func aRetryVerdictDelayBeyondTheLadderWaitsTheNextSeriesStep() async throws {
        let harness = try EngineHarness(queueSettings: """
            ack_policy = "nack_on_error"
            [queues.retry]
            max_attempts = 3
            delay = "300ms"
            max_delay = "2s"
            """)
        try await Self.withEngine(harness) { connection in
            try await harness.publish("later", test: "verdict:retry-ms:1500", on: connection)
            #expect(await harness.recorder.wait { $0.calls(for: "later").count == 2 })
            let calls = harness.recorder.snapshot.calls(for: "later")
            guard calls.count == 2 else { return }
            let gap = calls[1].at - calls[0].at
            #expect(gap >= .milliseconds(1500), "came back after \(gap): the requested 1500ms rounds up to the 2s step, not down to the ladder's 600ms")
        }
    }

    /// A harness whose queue runs one exec handler: `/bin/sh -c script`.
    static func execHarness(policy: AckPolicy, script: String) throws -> EngineHarness {
        try EngineHarness(
            queueSettings: "ack_policy = \"\(policy.rawValue)\"", handler: "sh",
            handlers: """
                [handlers.sh]
                kind = "exec"
                command = ["/bin/sh", "-c", "\(script)"]
                """)
    }

    @Test func anExecRejectIsParkedWithItsExitCodeAndStderr() async throws {
        let harness = try Self.execHarness(policy: .nackOnError, script: "echo 'order 7 is malformed' >&2; exit 65")
        try await Self.withEngine(harness) { connection in
            try await harness.publish("malformed", on: connection)
            let parked = try await harness.drainParked(expecting: 1, on: connection)
            #expect(Self.header(parked.first, "x-warren-reason") == .string("rejected"))
            #expect(Self.header(parked.first, "x-warren-exit-code")?.integerValue == 65)
            #expect(Self.header(parked.first, "x-warren-stderr-tail")?.stringValue?.contains("order 7 is malformed") == true)
        }
    }

    @Test func whenTheParkCopyNoLongerFitsAFrameAReducedCopyIsParkedWithTheProducersHeadersWhole() async throws {
        let harness = try Self.execHarness(policy: .rejectOnError, script: "head -c 3000 /dev/zero | tr '\\\\0' e >&2; exit 3")
        try await Self.withEngine(harness) { connection in
            // The producer's headers leave 1,200 bytes of the broker's 128 KiB frame: the full
            // park copy (2 KiB of stderr tail among its headers) cannot fit, the reduced one can.
            let frameMax = connection.negotiated.frameMax
            func properties(blob: Int) -> BasicProperties {
                BasicProperties(headers: ["x-test": "success", "blob": .bytes(Array(repeating: 0xAB, count: blob))], messageID: "brim")
            }
            let blob = frameMax - 1200 - properties(blob: 0).headerFrameSize
            try await harness.publish("brim", headers: ["blob": .bytes(Array(repeating: 0xAB, count: blob))], on: connection)
            let parked = try await harness.drainParked(expecting: 1, on: connection)
            #expect(Self.header(parked.first, "x-warren-reason") == .string("failed"))
            #expect(Self.header(parked.first, "x-warren-exit-code")?.integerValue == 3, "the reduced copy keeps the exit code")
            #expect(Self.header(parked.first, "x-warren-stderr-tail") == nil, "and drops the stderr tail")
            #expect(Self.header(parked.first, "blob") == .bytes(Array(repeating: 0xAB, count: blob)), "the producer's headers are whole")
            #expect(parked.first?.body == Array("payload".utf8))
        }
    }

    @Test func anHTTPClientErrorIsParkedWithItsStatus() async throws {
        let server = try await TestHTTPServer.start { _, _ in TestHTTPServer.Response(status: 422) }
        let harness = try EngineHarness(
            queueSettings: "ack_policy = \"nack_on_error\"", handler: "web",
            handlers: """
                [handlers.web]
                kind = "http"
                url = "http://127.0.0.1:\(server.port)/hook"
                """)
        do {
            try await Self.withEngine(harness) { connection in
                try await harness.publish("unprocessable", on: connection)
                let parked = try await harness.drainParked(expecting: 1, on: connection)
                #expect(Self.header(parked.first, "x-warren-reason") == .string("rejected"))
                #expect(Self.header(parked.first, "x-warren-http-status")?.integerValue == 422)
            }
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }
}

extension HostileInputTests {
    static let rawPublish = CommandLineTests.repositoryRoot.appendingPathComponent("Tests/IntegrationTests/Support/Scripts/raw_publish.py").path

    @Test func headersNestedThousandsOfLevelsDeepAreCutAtTheLimitAndTheMessageHandled() async throws {
        let harness = try EngineHarness(queueSettings: Self.shortLadder)
        try await Self.withEngine(harness) { connection in
            // No client library (ours included) encodes 18,000 levels (about all a 128 KiB frame holds): the script writes the frames.
            let endpoint = TestBroker.endpoint
            let sent = await ToolRun.run(["/usr/bin/env", "python3", Self.rawPublish, endpoint.host, "\(endpoint.port)", harness.queue, "deep", "18000"])
            #expect(sent.status == 0, "\(sent.output)")
            #expect(await harness.recorder.wait { $0.calls(for: "deep").count == 1 })
            // What the handler saw stops at the documented depth.
            var value = harness.recorder.snapshot.calls(for: "deep").first?.headers?["deep"]
            var levels = 0
            while case .table(let table) = value, let inner = table["n"] {
                value = inner
                levels += 1
            }
            #expect(levels == FieldTable.maximumDepth, "32 tables inside the headers, then void")
            #expect(value == .void)
            try await harness.publish("after-deep", on: connection)
            #expect(await harness.recorder.wait { $0.calls(for: "after-deep").count == 1 }, "the consumer carries on")
        }
    }
}
