import AMQP
import Foundation
import Synchronization
import TestSupport
import Testing
import WarrenCore

/// Thousands of randomly mutated messages (properties, header tables of every field type and
/// nesting, extreme counters, duplicate keys, sizes around the limit, replies nobody receives)
/// through a queue whose handler fails at random. Warren must never die, every message must end
/// handled or parked, and no message may run more than `max_attempts` times (+1 for a
/// redelivery). The seed is printed; `WARREN_FUZZ_SEED` replays a run.
@Suite("Fuzzing the engine with mutated messages", .serialized, .requiresBroker, .timeLimit(.minutes(6)))
struct MessageFuzzTests {
    static let count = Int(ProcessInfo.processInfo.environment["WARREN_FUZZ_COUNT"] ?? "") ?? 2000
    static let maxAttempts = 3
    static let maxBody = 2048

    @Test func mutatedMessagesAreEachHandledOrParkedWithinMaxAttempts() async throws {
        let seed = UInt64(ProcessInfo.processInfo.environment["WARREN_FUZZ_SEED"] ?? "") ?? UInt64.random(in: 0...UInt64.max)
        print("message fuzz: seed=\(seed) count=\(Self.count)")
        let harness = try EngineHarness(queueSettings: """
            ack_policy = "nack_on_error"
            prefetch = 64
            concurrency = 8
            max_body_size = "\(Self.maxBody)B"
            [queues.retry]
            max_attempts = \(Self.maxAttempts)
            delay = "20ms"
            max_delay = "80ms"
            """)
        let handler = FuzzHandler(seed: seed)
        let connection = try await TestBroker.connect()
        let replies = TestBroker.uniqueName("fuzz-replies")
        _ = try await connection.declareQueue(QueueDeclaration(name: replies, durable: false))
        try await harness.start(handler: handler)
        let parkedIDs = Mutex<[Int: Int]>([:])
        let parkConsumer = try await connection.consume(ConsumeOptions(queue: "\(harness.queue).dead", prefetch: 200))
        let parking = Task {
            do {
                for try await delivery in parkConsumer.deliveries {
                    if let id = delivery.properties.headers?["x-fuzz-id"]?.integerValue {
                        parkedIDs.withLock { $0[Int(id), default: 0] += 1 }
                    }
                    parkConsumer.ack(delivery)
                }
            } catch {}
        }

        // Generating thousands of nested tables is CPU-bound work: made in one go, off the
        // cooperative pool, in the same order from the same seed.
        let messages = await offPool {
            var generator = SplitMix64(seed: seed)
            return (0..<Self.count).map { id in Self.mutatedMessage(id: id, replies: replies, using: &generator) }
        }
        let publisher = try await connection.openPublisher()
        var receipts: [PublishReceipt] = []
        for (properties, body) in messages {
            receipts.append(try publisher.submit(OutgoingMessage(
                exchange: "", routingKey: harness.queue, mandatory: true, properties: properties, body: body)))
            if receipts.count >= 200 {
                for receipt in receipts { #expect(try await receipt.outcome() == .confirmed) }
                receipts.removeAll()
            }
        }
        for receipt in receipts { #expect(try await receipt.outcome() == .confirmed) }

        // Done when every message is parked or its last run succeeded, and nothing is left in the
        // queue, its delay queues or a handler.
        let ladder = harness.declaredQueues.filter { $0.contains(".retry.") }
        // A message between its handler's return and its settlement (publishing a retry or park
        // copy) is in no queue: the state must hold still for half a second to count.
        var settled = false
        var previous: (runs: Int, parked: Int)?
        let deadline = ContinuousClock.now + .seconds(240)
        while ContinuousClock.now < deadline {
            let parked = parkedIDs.withLock { Set($0.keys) }
            let succeeded = handler.succeededLast
            let accounted = (0..<Self.count).allSatisfy { parked.contains($0) || succeeded.contains($0) }
            let now = (runs: handler.runsPerMessage.values.reduce(0, +), parked: parked.count)
            if accounted, handler.running == 0, try await Self.empty([harness.queue] + ladder, on: connection) {
                if let previous, previous == now {
                    settled = true
                    break
                }
                previous = now
            } else {
                previous = nil
            }
            try await Task.sleep(for: .milliseconds(500))
        }
        let outcome = await harness.stopAndWait()
        try? await parkConsumer.close()
        parking.cancel()
        #expect(outcome == .stopped, "the engine ran until it was stopped")
        #expect(settled, "seed \(seed): every message handled or parked")
        #expect(try await Self.empty([harness.queue] + ladder, on: connection), "seed \(seed): nothing left behind")
        let runs = handler.runsPerMessage
        let overLimit = runs.filter { $0.value > Self.maxAttempts + 1 }
        #expect(overLimit.isEmpty, "seed \(seed): messages run more than max_attempts + 1 times: \(overLimit.prefix(10))")
        let duplicatesParked = parkedIDs.withLock { $0.filter { $0.value > 1 } }
        #expect(duplicatesParked.isEmpty, "seed \(seed): parked twice: \(duplicatesParked.prefix(10))")
        print("message fuzz: seed=\(seed) runs=\(runs.values.reduce(0, +)) parked=\(parkedIDs.withLock { $0.count }) max_runs=\(runs.values.max() ?? 0)")
        await harness.cleanUp()
        try? await TestBroker.deleteQueue(replies)
        await connection.close()
    }

    static func empty(_ queues: [String], on connection: AMQPConnection) async throws -> Bool {
        for name in queues where try await connection.declareQueue(QueueDeclaration(name: name, passive: true)).messageCount > 0 {
            return false
        }
        return true
    }

    // MARK: mutation

    static func mutatedMessage(id: Int, replies: String, using g: inout SplitMix64) -> (BasicProperties, [UInt8]) {
        var p = BasicProperties()
        if g.chance(0.3) { p.contentType = randomShort(&g, maxBytes: g.chance(0.1) ? 255 : 40) }
        if g.chance(0.2) { p.contentEncoding = randomShort(&g, maxBytes: 20) }
        if g.chance(0.3) { p.deliveryMode = g.chance(0.5) ? 2 : 1 }
        if g.chance(0.2) { p.priority = UInt8(truncatingIfNeeded: g.next()) }
        if g.chance(0.3) { p.correlationID = randomShort(&g, maxBytes: g.chance(0.1) ? 255 : 36) }
        switch g.below(20) {
        case 0: p.replyTo = AMQPString(TestBroker.uniqueName("fuzz-gone"))  // nobody listens: the reply is returned
        case 1: p.replyTo = AMQPString(replies)
        default: break
        }
        if g.chance(0.1) { p.expiration = AMQPString("\(60_000 + g.below(100_000))") }
        if g.chance(0.7) { p.messageID = g.chance(0.1) ? "" : AMQPString(bytes: Array("fuzz-\(id)-".utf8) + randomShort(&g, maxBytes: 200).bytes) }
        if g.chance(0.3) { p.timestamp = g.next() }
        if g.chance(0.3) { p.type = randomShort(&g, maxBytes: 255) }
        if g.chance(0.2) { p.appID = randomShort(&g, maxBytes: 64) }
        var headers = g.chance(0.8) ? randomTable(&g, depth: 0) : FieldTable()
        if g.chance(0.15) { headers["x-delivery-count"] = extremeInteger(&g) }
        if g.chance(0.15) { headers["x-warren-attempt"] = extremeInteger(&g) }
        // The handler's own instructions and the test's tracking id.
        headers = FieldTable(headers.entries.filter { entry in !["x-fuzz-id", "CC", "BCC"].contains { entry.key.hasBytes(of: $0) } })
        headers["x-fuzz-id"] = FieldValue.int64(Int64(id))
        p.headers = headers
        let size = switch g.below(6) {
        case 0: 0
        case 1: maxBody
        case 2: maxBody + 1
        case 3: maxBody - 1
        default: g.below(maxBody * 2)
        }
        return (p, (0..<size).map { _ in UInt8(truncatingIfNeeded: g.next()) })
    }

    /// A short string: UTF-8 text most of the time, raw bytes (invalid UTF-8, NUL, CR, LF) the rest.
    static func randomShort(_ g: inout SplitMix64, maxBytes: Int) -> AMQPString {
        if g.chance(0.3) {
            return AMQPString(bytes: (0..<g.below(maxBytes + 1)).map { _ in UInt8(truncatingIfNeeded: g.next()) })
        }
        return AMQPString(randomText(&g, maxBytes: maxBytes))
    }

    static func randomText(_ g: inout SplitMix64, maxBytes: Int) -> String {
        var text = ""
        let target = g.below(maxBytes + 1)
        while text.utf8.count < target {
            let scalar: Unicode.Scalar? = switch g.below(4) {
            case 0: Unicode.Scalar(UInt32(0x20 + g.below(0x5F)))
            case 1: Unicode.Scalar(UInt32(g.below(0x20)))  // control characters, NUL included
            case 2: Unicode.Scalar(UInt32(0xA0 + g.below(0x700)))
            default: Unicode.Scalar(UInt32(0x1F300 + g.below(0x300)))
            }
            guard let scalar, text.utf8.count + String(scalar).utf8.count <= maxBytes else { break }
            text.unicodeScalars.append(scalar)
        }
        return text
    }

    static func finite<F: BinaryFloatingPoint>(_ value: F) -> F { value.isFinite ? value : 0 }

    static func extremeInteger(_ g: inout SplitMix64) -> FieldValue {
        switch g.below(8) {
        case 0: .int64(.max)
        case 1: .int64(.min)
        case 2: .uint64(.max)
        case 3: .int32(.min)
        case 4: .string("not a number")
        case 5: .int8(-1)
        case 6: .int64(Int64(g.below(5)))
        default: .table(["nested": .int64(1)])
        }
    }

    static func randomTable(_ g: inout SplitMix64, depth: Int) -> FieldTable {
        var table = FieldTable()
        for _ in 0..<g.below(depth == 0 ? 12 : 4) {
            // Duplicate keys now and then: kept as sent, the first one read.
            let key = g.chance(0.1) && !table.isEmpty ? table.entries[0].key : randomShort(&g, maxBytes: 30)
            table = FieldTable(table.entries + [FieldTable.Entry(key, randomValue(&g, depth: depth))])
        }
        return table
    }

    static func randomValue(_ g: inout SplitMix64, depth: Int) -> FieldValue {
        switch g.below(depth < 5 ? 18 : 16) {
        case 0: .boolean(g.chance(0.5))
        case 1: .int8(Int8(truncatingIfNeeded: g.next()))
        case 2: .uint8(UInt8(truncatingIfNeeded: g.next()))
        case 3: .int16(Int16(truncatingIfNeeded: g.next()))
        case 4: .uint16(UInt16(truncatingIfNeeded: g.next()))
        case 5: .int32(Int32(truncatingIfNeeded: g.next()))
        case 6: .uint32(UInt32(truncatingIfNeeded: g.next()))
        case 7: .int64(Int64(bitPattern: g.next()))
        case 8: .uint64(g.next())
        // Finite only: RabbitMQ closes the producer's connection for a NaN or an infinity.
        case 9: .float(finite(Float(bitPattern: UInt32(truncatingIfNeeded: g.next()))))
        case 10: .double(finite(Double(bitPattern: g.next())))
        case 11: .decimal(scale: UInt8(truncatingIfNeeded: g.next()), value: UInt32(truncatingIfNeeded: g.next()))
        case 12: g.chance(0.7) ? .string(randomText(&g, maxBytes: 200)) : .nonUTF8String((0..<g.below(64)).map { _ in UInt8(truncatingIfNeeded: g.next()) })
        case 13: .bytes((0..<g.below(64)).map { _ in UInt8(truncatingIfNeeded: g.next()) })
        case 14: .timestamp(g.next())
        case 15: .void
        case 16: .table(randomTable(&g, depth: depth + 1))
        default: .array((0..<g.below(4)).map { _ in randomValue(&g, depth: depth + 1) })
        }
    }
}

extension SplitMix64 {
    mutating func below(_ n: Int) -> Int { n <= 0 ? 0 : Int(next() % UInt64(n)) }
    mutating func chance(_ p: Double) -> Bool { Double(next() % 1_000_000) < p * 1_000_000 }
}

/// Fails, rejects, asks for a retry or succeeds (with a reply) at random, decided from the
/// message's id and attempt so a seed replays the same run; counts runs per message.
final class FuzzHandler: MessageHandler {
    private struct State {
        var runs: [Int: Int] = [:]
        var lastSucceeded: Set<Int> = []
        var running = 0
    }

    private let state = Mutex(State())
    let seed: UInt64

    init(seed: UInt64) { self.seed = seed }

    var runsPerMessage: [Int: Int] { state.withLock { $0.runs } }
    var succeededLast: Set<Int> { state.withLock { $0.lastSucceeded } }
    var running: Int { state.withLock { $0.running } }

    func handle(_ input: HandlerInput) async -> HandlerOutcome {
        guard let id = input.properties.headers?["x-fuzz-id"]?.integerValue.map({ Int($0) }) else {
            return .failure(HandlerFailure("no x-fuzz-id"))
        }
        state.withLock { $0.running += 1 }
        defer { state.withLock { $0.running -= 1 } }
        var g = SplitMix64(seed: seed ^ UInt64(truncatingIfNeeded: id) &* 31 ^ UInt64(truncatingIfNeeded: input.attempt))
        let roll = g.below(100)
        let outcome: HandlerOutcome = switch roll {
        case 0..<35: .failure(HandlerFailure("random failure", exitCode: 1, stderrTail: "fuzz"))
        case 35..<40: .verdict(.reject, error: "random reject", output: .none)
        case 40..<45: .verdict(.retry(delay: .milliseconds(Int64(g.below(200)))), error: "random retry", output: .none)
        default: .success(HandlerOutput(reply: input.properties.replyTo == nil ? nil : Array("reply".utf8)))
        }
        state.withLock { state in
            state.runs[id, default: 0] += 1
            if outcome.isSuccess { state.lastSucceeded.insert(id) } else { state.lastSucceeded.remove(id) }
        }
        return outcome
    }
}
