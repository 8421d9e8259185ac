import Foundation
import Testing

@testable import AMQP

/// The assembler's oversized-body phase: the header decides, body frames go to a spool file
/// (never into `body`), and the frame sequence is checked as strictly as for an in-memory body.
@Suite("ContentAssembler spooling")
struct ContentAssemblerSpoolTests {
    private func deliver(_ tag: UInt64) -> ContentAssembler.Start {
        .deliver(.init(deliveryTag: tag, redelivered: false, exchange: "x", routingKey: "k"))
    }

    private func feed(_ assembler: inout ContentAssembler, _ bytes: [UInt8]) throws -> ContentAssembler.Message? {
        try bytes.withUnsafeBytes { buffer in try assembler.body(buffer) }
    }

    /// Feeds `payload` in frames of at most `frameSize` bytes; returns the message the last one completed.
    private func feedAll(_ assembler: inout ContentAssembler, _ payload: [UInt8], frameSize: Int) throws -> ContentAssembler.Message? {
        var completed: ContentAssembler.Message?
        var offset = 0
        while offset < payload.count {
            let end = min(offset + frameSize, payload.count)
            #expect(completed == nil, "a message completed before its last frame")
            completed = try feed(&assembler, Array(payload[offset..<end]))
            offset = end
        }
        return completed
    }

    @Test func aHeaderOverTheLimitSpoolsTheBodyInsteadOfBufferingIt() throws {
        let payload = (0..<(5 * 1000 + 3)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        var a = ContentAssembler(maxBodySize: 4096)
        try a.begin(deliver(1))
        #expect(try a.header(bodySize: UInt64(payload.count), properties: BasicProperties(messageID: "big")) == nil)
        #expect(a.isSpooling)
        let message = try #require(try feedAll(&a, payload, frameSize: 1000))
        #expect(message.body.isEmpty)
        let oversized = try #require(message.oversized)
        #expect(oversized.size == payload.count)
        let file = try oversized.spool.get()
        #expect(try file.readAll() == payload)
        #expect(message.properties.messageID == "big")
        #expect(a.isIdle)
        #expect(!a.isSpooling)
    }

    @Test func aBodyExactlyAtTheLimitIsBufferedInMemory() throws {
        let payload = [UInt8](repeating: 9, count: 4096)
        var a = ContentAssembler(maxBodySize: 4096)
        try a.begin(deliver(1))
        _ = try a.header(bodySize: UInt64(payload.count), properties: BasicProperties())
        #expect(!a.isSpooling)
        let message = try #require(try feedAll(&a, payload, frameSize: 1000))
        #expect(message.oversized == nil)
        #expect(message.body == payload)
    }

    @Test func bodyFramesAreCountedAgainstTheAnnouncedSizeWhileSpooling() throws {
        var a = ContentAssembler(maxBodySize: 2)
        try a.begin(deliver(1))
        _ = try a.header(bodySize: 6, properties: BasicProperties())
        #expect(try feed(&a, [1, 2]) == nil)
        #expect(try feed(&a, [3, 4]) == nil)
        let message = try #require(try feed(&a, [5, 6]))
        #expect(try message.oversized?.spool.get().readAll() == [1, 2, 3, 4, 5, 6])
    }

    @Test func moreBodyBytesThanAnnouncedWhileSpoolingIsAProtocolError() throws {
        var a = ContentAssembler(maxBodySize: 2)
        try a.begin(deliver(1))
        _ = try a.header(bodySize: 4, properties: BasicProperties())
        _ = try feed(&a, [1, 2, 3])
        let error = #expect(throws: AMQPError.self) { try feed(&a, [4, 5]) }
        #expect(error?.code == .protocolError)
    }

    @Test func aNewMethodBeforeASpooledBodyEndsIsAProtocolError() throws {
        var a = ContentAssembler(maxBodySize: 2)
        try a.begin(deliver(1))
        _ = try a.header(bodySize: 4, properties: BasicProperties())
        _ = try feed(&a, [1, 2])
        let error = #expect(throws: AMQPError.self) { try a.begin(deliver(2)) }
        #expect(error?.code == .protocolError)
    }

    @Test func aSpoolThatCannotBeOpenedStillConsumesTheBodyAndReportsWhy() throws {
        var a = ContentAssembler(maxBodySize: 2)
        a.openSpool = { _ throws(AMQPError) in throw AMQPError(.spoolFailed, "no space left on device") }
        try a.begin(deliver(1))
        _ = try a.header(bodySize: 4, properties: BasicProperties())
        #expect(try feed(&a, [1, 2]) == nil)
        let message = try #require(try feed(&a, [3, 4]))
        #expect(message.body.isEmpty)
        let oversized = try #require(message.oversized)
        #expect(oversized.size == 4)
        #expect(throws: AMQPError.self) { try oversized.spool.get() }
        // The sequence stayed in step: the next delivery assembles normally.
        try a.begin(deliver(2))
        let next = try #require(try a.header(bodySize: 0, properties: BasicProperties()))
        #expect(next.oversized == nil)
    }

    @Test func aSpoolDirectoryThatDoesNotExistFailsToOpen() {
        let error = #expect(throws: AMQPError.self) {
            try SpooledBody.create(size: 1, in: "/nonexistent-\(UUID().uuidString)")
        }
        #expect(error?.code == .spoolFailed)
    }

    @Test func resetDropsAPartialSpool() throws {
        var a = ContentAssembler(maxBodySize: 2)
        try a.begin(deliver(1))
        _ = try a.header(bodySize: 4, properties: BasicProperties())
        _ = try feed(&a, [1, 2])
        a.reset()
        #expect(a.isIdle)
        #expect(!a.isSpooling)
        try a.begin(deliver(2))
        #expect(try a.header(bodySize: 1, properties: BasicProperties()) == nil)
        let next = try #require(try feed(&a, [7]))
        #expect(next.body == [7])
    }
}
