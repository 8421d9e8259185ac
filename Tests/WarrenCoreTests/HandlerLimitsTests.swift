import AMQP
import Foundation
import Logging
import Testing
import TestSupport

@testable import WarrenCore

/// What a message can make a handler's process cost: `WARREN_HEADERS` stays under its cap (so
/// exec never fails with E2BIG because of a message), and a pipe worker's stderr is logged at
/// most so many lines per message.
@Suite("Handler limits", .timeLimit(.minutes(2)))
final class HandlerLimitsTests: Sendable {
    let directory: String

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-limits-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// `count` headers `h000`, `h001`, ... each a string of `size` characters that JSON escapes
    /// six-fold (control characters), so the JSON is far larger than the table on the wire.
    static func bulkyHeaders(count: Int, size: Int) -> FieldTable {
        FieldTable((0..<count).map { index in
            FieldTable.Entry(String(format: "h%03d", index), .string(String(repeating: "\u{1}", count: size)))
        })
    }

    static func decode(_ json: [UInt8]) throws -> [String: String] {
        try #require(try JSONSerialization.jsonObject(with: Data(json)) as? [String: String])
    }

    // MARK: WARREN_HEADERS

    @Test func headersWithinTheCapAreUnchanged() {
        let table: FieldTable = ["k": "v", "n": .int32(3)]
        let (json, omitted) = HeadersVariable.json(table, limit: HeadersVariable.maxBytes)
        #expect(json == MessageJSON.headersJSON(table))
        #expect(omitted == 0)
    }

    @Test func headersOverTheCapAreCutAtEntryBoundariesIntoValidJSON() throws {
        let table = Self.bulkyHeaders(count: 40, size: 1000)  // about 240 KiB of JSON
        let (json, omitted) = HeadersVariable.json(table, limit: HeadersVariable.maxBytes)
        #expect(json.count <= HeadersVariable.maxBytes)
        let kept = try Self.decode(json)
        #expect(!kept.isEmpty)
        #expect(kept.count + omitted == 40)
        for (key, value) in kept {
            #expect(value == String(repeating: "\u{1}", count: 1000), "entry \(key) is complete")
        }
        // Key order: the kept entries are the first ones.
        #expect(kept.keys.sorted() == (0..<kept.count).map { String(format: "h%03d", $0) })
    }

    @Test func anEntryTooLargeOnItsOwnIsLeftOutAndSmallerOnesKept() throws {
        var table = Self.bulkyHeaders(count: 1, size: 20_000)  // h000: 120 KiB of JSON
        table["small"] = "yes"
        let (json, omitted) = HeadersVariable.json(table, limit: HeadersVariable.maxBytes)
        #expect(try Self.decode(json) == ["small": "yes"])
        #expect(omitted == 1)
    }

    @Test func theWholeExecEnvironmentStaysWithinItsBudget() throws {
        let environment = try ExecEnvironment(inherited: ["PATH": "/usr/bin:/bin"], configured: ["BIG": String(repeating: "x", count: 100_000)])
        let input = HandlerInput(
            queue: "q", exchange: "", routingKey: "q", redelivered: false, attempt: 1,
            properties: BasicProperties(headers: Self.bulkyHeaders(count: 200, size: 1000)), body: [], deliveryTag: 1)
        let block = environment.environment(for: input)
        #expect(block.bytes.count <= HeadersVariable.maxEnvironmentBytes)
    }

    @Test func anExecRunWithHugeHeadersStartsAndSeesTheCutVariable() async throws {
        let path = "\(directory)/env.sh"
        try writeExecutable("#!/bin/sh\nprintf '%s %s' \"${#WARREN_HEADERS}\" \"$WARREN_HEADERS_OMITTED\"\n", to: path)
        var logger = Logger(label: "warren.tests.limits")
        logger.logLevel = .critical
        let handler = try ExecHandler(name: "env", command: [path], environment: [:], workingDirectory: nil, logger: logger)
        // About 1.5 MiB of JSON: past Linux's 128 KiB per-string limit, and past ARG_MAX.
        let properties = BasicProperties(
            headers: Self.bulkyHeaders(count: 250, size: 1000), correlationID: "c", replyTo: "replies", messageID: "m")
        let outcome = await handler.handle(HandlerInput(
            queue: "q", exchange: "", routingKey: "q", redelivered: false, attempt: 1, properties: properties, body: [], deliveryTag: 1))
        guard case .success(let output) = outcome else {
            Issue.record("expected the run to start and succeed, got \(outcome)")
            return
        }
        let words = String(decoding: output.reply ?? [], as: UTF8.self).split(separator: " ")
        let length = words.first.flatMap { Int($0) } ?? -1
        let omitted = words.last.flatMap { Int($0) } ?? -1
        #expect(length <= HeadersVariable.maxBytes)
        #expect(length > 0)
        #expect(omitted > 0)
    }

    // MARK: pipe stderr

    @Test func theLineBudgetAdmitsSoManyLinesPerMessageAndCountsTheRest() {
        var budget = PipeStderr.LineBudget(linesPerMessage: 2)
        let admitted = [budget.admit(bytes: 5), budget.admit(bytes: 5), budget.admit(bytes: 7), budget.admit(bytes: 3)]
        #expect(admitted == [true, true, false, false])
        let suppressed = budget.messageSent()
        #expect(suppressed?.lines == 2)
        #expect(suppressed?.bytes == 10)
        let afterRefill = budget.admit(bytes: 1)
        #expect(afterRefill)
        let nothing = budget.messageSent()
        #expect(nothing == nil, "nothing left out since the last message")
    }

    @Test func aPipeWorkersStderrIsLoggedAtMostSoManyLinesPerMessage() {
        let log = CapturedLog()
        let stderr = PipeStderr(handler: "p", index: 0, pid: 42, logger: log.logger(), linesPerMessage: 3)
        for n in 0..<10 { stderr.read(LineBuffer.Line(bytes: Array("line \(n)".utf8))) }
        #expect(log.matching("pipe worker stderr").count == 3)
        stderr.messageSent()
        let summary = log.matching("pipe worker stderr suppressed").first
        #expect(summary != nil)
        #expect(summary?.metadata["suppressed_lines"] == "7")
        #expect(summary?.metadata["suppressed_bytes"] == "\(7 * 6)")
        for n in 0..<5 { stderr.read(LineBuffer.Line(bytes: Array("next \(n)".utf8))) }
        #expect(log.matching("pipe worker stderr").count == 6, "a new message brings a new allowance")
        stderr.ended()
        #expect(log.matching("pipe worker stderr suppressed").count == 2, "what the last message left out is reported at the end")
    }
}
