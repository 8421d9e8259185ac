import Testing

@testable import WarrenCore

/// The control socket's request lines and answers, without a socket.
@Suite struct ControlProtocolTests {
    private func parse(_ text: String) -> Result<ControlProtocol.Request, ControlProtocol.RequestProblem> {
        ControlProtocol.parse(Array(text.utf8))
    }

    @Test func parsesEachCommand() {
        #expect(parse("status") == .success(.status))
        #expect(parse("pause orders") == .success(.pause(queue: "orders")))
        #expect(parse("resume orders") == .success(.resume(queue: "orders")))
    }

    @Test func theQueueNameIsEverythingAfterTheFirstSpaceByteForByte() {
        #expect(parse("pause my queue") == .success(.pause(queue: "my queue")))
        #expect(parse("pause  leading") == .success(.pause(queue: " leading")))
        #expect(parse("resume trailing ") == .success(.resume(queue: "trailing ")))
        #expect(parse("pause ordres.é") == .success(.pause(queue: "ordres.é")))
    }

    @Test func aCarriageReturnBeforeTheLineFeedIsDropped() {
        #expect(parse("status\r") == .success(.status))
        #expect(parse("pause orders\r") == .success(.pause(queue: "orders")))
        // Only the last one: one inside the name is part of it.
        #expect(parse("pause a\rb\r") == .success(.pause(queue: "a\rb")))
    }

    @Test func pauseAndResumeNeedAQueueName() {
        #expect(parse("pause") == .failure(.missingQueue(command: "pause")))
        #expect(parse("resume ") == .failure(.missingQueue(command: "resume")))
        #expect(parse("resume \r") == .failure(.missingQueue(command: "resume")))
        #expect(ControlProtocol.RequestProblem.missingQueue(command: "pause").description == "no queue name: pause QUEUE")
    }

    @Test func unknownCommandsAndStrayArgumentsAreRefusedByName() {
        #expect(parse("stop orders") == .failure(.unknownCommand("stop")))
        #expect(parse("PAUSE orders") == .failure(.unknownCommand("PAUSE")))
        #expect(parse("status orders") == .failure(.unexpectedArgument(command: "status")))
        #expect(parse("") == .failure(.empty))
        #expect(parse("\r") == .failure(.empty))
        let reason = ControlProtocol.RequestProblem.unknownCommand("stop").description
        #expect(reason == "unknown command \"stop\": expected pause QUEUE, resume QUEUE or status")
        // A control character in the command is escaped: the answer stays one line.
        #expect(ControlProtocol.RequestProblem.unknownCommand("a\u{1b}b").description.hasPrefix(#"unknown command "a\u001bb""#))
    }

    @Test func bytesThatAreNotUTF8AreRefused() {
        #expect(ControlProtocol.parse([0x70, 0x61, 0x75, 0x73, 0x65, 0x20, 0xff, 0xfe]) == .failure(.notUTF8))
        #expect(ControlProtocol.RequestProblem.notUTF8.description == "the request is not valid UTF-8")
    }

    // MARK: the line reader

    @Test func theReaderWaitsForTheLineFeedAcrossChunks() {
        var reader = ControlProtocol.LineReader()
        #expect(reader.isEmpty)
        #expect(reader.append(Array("pau".utf8)) == .needMore)
        #expect(!reader.isEmpty)
        #expect(reader.append(Array("se orders\nstatus\n".utf8)) == .line(Array("pause orders".utf8)))
    }

    @Test func aLineOfExactlyTheLimitIsAcceptedAndOneByteMoreIsTooLong() {
        let limit = ControlProtocol.maxRequestBytes
        let longest = "pause " + String(repeating: "q", count: limit - 7)
        var reader = ControlProtocol.LineReader()
        #expect(reader.append(Array((longest + "\n").utf8)) == .line(Array(longest.utf8)))

        var over = ControlProtocol.LineReader()
        #expect(over.append(Array((longest + "q\n").utf8)) == .tooLong)

        // Without any line feed: too long as soon as the limit is reached.
        var trickle = ControlProtocol.LineReader()
        #expect(trickle.append([UInt8](repeating: 0x61, count: limit - 1)) == .needMore)
        #expect(trickle.append([0x61]) == .tooLong)
    }

    // MARK: status lines

    private func report(
        _ name: String, consuming: Bool = true, heldBy: QueueControls.HeldBy? = nil, probing: Bool = false,
        inFlight: Int = 0, handled: Int = 0, failed: Int = 0
    ) -> QueueControls.QueueReport {
        QueueControls.QueueReport(
            name: name, consuming: consuming, heldBy: heldBy, probing: probing, inFlight: inFlight, handled: handled, failed: failed)
    }

    @Test func statusLinesNameTheStateAndTheCounts() {
        #expect(
            ControlProtocol.statusLine(report("orders", inFlight: 2, handled: 130, failed: 4))
                == "queue=orders state=consuming in_flight=2 handled=130 failed=4")
        #expect(
            ControlProtocol.statusLine(report("orders", consuming: false, heldBy: .operator, handled: 7))
                == "queue=orders state=paused held_by=operator in_flight=0 handled=7 failed=0")
        #expect(
            ControlProtocol.statusLine(report("orders", consuming: false, heldBy: .breaker, failed: 9))
                == "queue=orders state=circuit_open held_by=breaker in_flight=0 handled=0 failed=9")
        #expect(
            ControlProtocol.statusLine(report("orders", consuming: true, heldBy: .breaker, probing: true, inFlight: 1))
                == "queue=orders state=circuit_probing held_by=breaker in_flight=1 handled=0 failed=0")
        #expect(
            ControlProtocol.statusLine(report("orders", consuming: false))
                == "queue=orders state=waiting in_flight=0 handled=0 failed=0")
    }

    @Test func queueNamesWithSpacesOrQuotesAreQuotedAsInTheLogs() {
        #expect(ControlProtocol.statusLine(report("my queue")).hasPrefix(#"queue="my queue" state=consuming"#))
        #expect(ControlProtocol.statusLine(report(#"a"b"#)).hasPrefix(#"queue="a\"b" "#))
        #expect(ControlProtocol.statusLine(report("a=b")).hasPrefix(#"queue="a=b" "#))
    }

    @Test func theRequestLineOfEachCommandParsesBackToIt() {
        for request in [ControlProtocol.Request.status, .pause(queue: "my queue"), .resume(queue: "x")] {
            let line = Array(request.line.utf8)
            #expect(line.last == UInt8(ascii: "\n"))
            #expect(ControlProtocol.parse(line.dropLast()) == .success(request))
        }
    }

    // MARK: [control]

    private func control(_ section: String) throws -> ControlConfiguration {
        try ConfigurationLoader.parse(
            source: "[broker]\nurl = \"amqp://localhost/\"\n\(section)", file: "warren.toml", environment: [:]
        ).control
    }

    @Test func theSocketDefaultsToTheRuntimeDirectoryAndAnEmptyPathTurnsItOff() throws {
        #expect(try control("") == ControlConfiguration(socket: "/run/warren/control.sock", socketConfigured: false))
        #expect(try control("[control]") == ControlConfiguration(socket: "/run/warren/control.sock", socketConfigured: false))
        #expect(try control("[control]\nsocket = \"\"") == ControlConfiguration(socket: nil, socketConfigured: true))
        #expect(try control("[control]\nsocket = \"/tmp/w.sock\"") == ControlConfiguration(socket: "/tmp/w.sock", socketConfigured: true))
        // 107 bytes is the most sun_path holds.
        let longest = "/" + String(repeating: "a", count: 106)
        #expect(try control("[control]\nsocket = \"\(longest)\"").socket == longest)
    }
}
