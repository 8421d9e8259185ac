import AMQP
import Foundation
import MetricsTestKit
import Synchronization
import TestSupport
import Testing
import W3CTraceContext

@testable import WarrenCore

/// Span recording and export without a collector (docs/tracing.md, "Exporting spans"): the
/// sampler's decisions, which deliveries get spans, the OTLP encodings read back field by field,
/// the bounded queue, and the exporter's retry, refusal and stop rules with a fake request.
/// The exporter against a real HTTP receiver and broker is TraceExportTests.
@Suite("Span recording and export", .timeLimit(.minutes(1)))
struct SpanExportTests {
    static let producerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
    static let producerSpan = "00f067aa0ba902b7"

    static func delivery(traceparent: String? = nil) -> Delivery {
        let headers: FieldTable? = traceparent.map { ["traceparent": .string($0)] }
        return Delivery(
            tag: DeliveryTag(channel: 1, epoch: 1, value: 7), consumerTag: "c", redelivered: true, exchange: "orders", routingKey: "new",
            properties: BasicProperties(headers: headers, messageID: "m-1"), body: Array("payload".utf8))
    }

    static func recorder(_ sampler: TraceSampler, limits: SpanQueue.Limits = .init()) -> SpanRecorder {
        SpanRecorder(sampler: sampler, queue: SpanQueue(limits: limits))
    }

    // MARK: sampling

    @Test func aRatioSamplesThatShareOfNewTracesAndTheSameTraceAlike() {
        let sampler = TraceSampler.parentBased(ratio: 0.25)
        var ids = TraceIDSource()
        let traces = (0..<20_000).map { _ in TraceIDSource.traceID(using: &ids) }
        let sampled = traces.filter { sampler.samples(newTrace: $0) }.count
        #expect((4_400...5_600).contains(sampled), "about a quarter of 20,000: \(sampled)")
        #expect(traces.prefix(100).allSatisfy { sampler.samples(newTrace: $0) == sampler.samples(newTrace: $0) })
        #expect(traces.allSatisfy { TraceSampler.parentBased(ratio: 1).samples(newTrace: $0) })
        #expect(!traces.contains { TraceSampler.parentBased(ratio: 0).samples(newTrace: $0) })
    }

    @Test func theRatioReadsTheTraceIDsLastEightBytes() {
        let low = TraceHeaderValue.traceID(high: .max, low: 0x3FFF_FFFF_FFFF_FFFF)  // just under a quarter of 2^64
        let high = TraceHeaderValue.traceID(high: 0, low: 0x4000_0000_0000_0001)
        #expect(TraceSampler.parentBased(ratio: 0.25).samples(newTrace: low))
        #expect(!TraceSampler.parentBased(ratio: 0.25).samples(newTrace: high))
    }

    @Test func aSampledProducerIsFollowedAndAnUnsampledOneGetsNoSpans() {
        let recorder = Self.recorder(.parentBased(ratio: 0))
        let tracing = DeliveryTracing.on(recorder)
        let sampled = tracing.start(queue: "q", Self.delivery(traceparent: "00-\(Self.producerTrace)-\(Self.producerSpan)-01"), attempt: 1)
        let traced = sampled.traced
        #expect(traced != nil, "a sampled parent is followed even at ratio 0")
        #expect(sampled.trace.traceIDText == Self.producerTrace)
        #expect(sampled.trace.parentSpanID.map(TraceHeaderValue.hex) == Self.producerSpan)
        #expect(sampled.trace.spanIDText != Self.producerSpan)
        #expect(traced?.trace == sampled.trace)

        let unsampled = tracing.start(queue: "q", Self.delivery(traceparent: "00-\(Self.producerTrace)-\(Self.producerSpan)-00"), attempt: 1)
        #expect(unsampled.traced == nil)
        #expect(unsampled.trace.spanIDText == Self.producerSpan, "propagation goes on: the producer's context")
        #expect(!unsampled.trace.flags.contains(.sampled))
        #expect(recorder.queue.count == 0, "nothing recorded")
    }

    @Test func aNewTraceTurnedDownIsPassedOnUnsampled() {
        let (trace, traced) = DeliveryTracing.on(Self.recorder(.parentBased(ratio: 0))).start(queue: "q", Self.delivery(), attempt: 1)
        #expect(traced == nil)
        #expect(!trace.flags.contains(.sampled))
        #expect(trace.child().traceparent.hasSuffix("-00"), "handlers see an unsampled traceparent")
    }

    @Test func aSamplerThatIgnoresParentsTurnsDownASampledOne() {
        let (trace, traced) = DeliveryTracing.on(Self.recorder(TraceSampler(root: .never, followsParent: false)))
            .start(queue: "q", Self.delivery(traceparent: "00-\(Self.producerTrace)-\(Self.producerSpan)-01"), attempt: 1)
        #expect(traced == nil)
        #expect(trace.traceparent == "00-\(Self.producerTrace)-\(Self.producerSpan)-00")
    }

    @Test func withTracingOffNewTracesAreFlaggedSampled() {
        let (trace, traced) = DeliveryTracing.off.start(queue: "q", Self.delivery(), attempt: 1)
        #expect(traced == nil && trace.flags.contains(.sampled))
    }

    // MARK: what is recorded

    @Test func aDeliveryRecordsItsSpanTheRunsAndThePublishes() throws {
        let recorder = Self.recorder(.parentBased(ratio: 1))
        let (trace, traced) = DeliveryTracing.on(recorder).start(
            queue: "orders.q", Self.delivery(traceparent: "00-\(Self.producerTrace)-\(Self.producerSpan)-01"), attempt: 2)
        let delivery = try #require(traced)
        let run = delivery.startRun("h").run
        run.end(handler: "h", .failure(HandlerFailure("exit code 3", exitCode: 3)))
        run.end(handler: "h", .failure(HandlerFailure("exit code 3", exitCode: 3)))  // a span ends once
        let copy = OutgoingMessage(exchange: "", routingKey: "orders.q.retry", mandatory: true, properties: BasicProperties(), body: [])
        delivery.recordPublish(copy, started: SpanClock.now(), result: .confirmed, problem: nil)
        delivery.end(outcome: "failure", decision: "retried", error: "exit 3")

        let spans = recorder.queue.takeBatch()
        #expect(spans.map(\.name) == ["h run", "publish amq.default", "orders.q process"])
        let (runSpan, publish, process) = (spans[0], spans[1], spans[2])
        #expect(process.trace == trace && process.kind == .consumer)
        #expect(process.trace.parentSpanID.map(TraceHeaderValue.hex) == Self.producerSpan)
        #expect(runSpan.trace.parentSpanID == trace.spanID && runSpan.trace.traceID == trace.traceID)
        #expect(runSpan.trace == run.trace, "the run's span is the context the handler received")
        #expect(runSpan.error != nil && runSpan.exception == runSpan.error)
        #expect(publish.kind == .producer && publish.trace.parentSpanID == trace.spanID)
        #expect(publish.attributes.contains(SpanAttribute("warren.publish.result", "confirmed")))
        #expect(process.attributes.contains(SpanAttribute("warren.attempt", 2)))
        #expect(process.attributes.contains(SpanAttribute("warren.message.redelivered", true)))
        #expect(process.attributes.contains(SpanAttribute("messaging.message.id", "m-1")))
        #expect(process.attributes.contains(SpanAttribute("warren.ack_decision", "retried")))
        #expect(process.error == "exit 3")
        #expect(spans.allSatisfy { $0.start <= $0.end && $0.trace.flags.contains(.sampled) })
    }

    // MARK: OTLP encodings

    static func span(error: String? = nil) -> FinishedSpan {
        let trace = MessageTrace(
            traceID: TraceHeaderValue.traceID(high: 0x4bf9_2f35_77b3_4da6, low: 0xa3ce_929d_0e0e_4736),
            spanID: TraceHeaderValue.spanID(0x1122_3344_5566_7788), parentSpanID: TraceHeaderValue.spanID(0x00f0_67aa_0ba9_02b7),
            flags: .sampled, state: "vendor=a")
        let name = String(repeating: "q", count: 200) + " process"  // a message over 127 bytes: a 2-byte length
        return FinishedSpan(
            trace: trace, name: name, kind: .consumer, start: 1_700_000_000_000_000_000, end: 1_700_000_000_000_500_000,
            attributes: [SpanAttribute("k", "v\u{1}\"é"), SpanAttribute("n", -5), SpanAttribute("b", false)], error: error,
            exception: error)
    }

    @Test func theProtobufRequestHasOTLPsFieldsAndNumbers() throws {
        let resource = SpanResource(serviceName: "svc", attributes: ["deployment.environment": "prod"])
        let body = OTLPEncoding.protobufBytes([Self.span(error: "exit 3"), Self.span()], resource: resource)
        #expect(!body.isEmpty)
        let request = try Wire.fields(body[...])
        let resourceSpans = try Wire.message(request, 1)
        let resourceAttributes = try Wire.message(resourceSpans, 1).filter { $0.number == 1 }.map { try Wire.keyValue($0) }
        #expect(resourceAttributes.first.map { $0 == ("service.name", .string("svc")) } == true)
        #expect(resourceAttributes.contains { $0 == ("deployment.environment", .string("prod")) })
        let scopeSpans = try Wire.message(resourceSpans, 2)
        #expect(try Wire.string(try Wire.message(scopeSpans, 1), 1) == "warren")
        let spans = scopeSpans.filter { $0.number == 2 }
        #expect(spans.count == 2)
        let span = try Wire.fields(try #require(spans.first?.bytes))
        #expect(try Wire.bytesField(span, 1) == Array(Self.span().trace.traceID.bytesArray))
        #expect(try Wire.bytesField(span, 2) == [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88])
        #expect(try Wire.string(span, 3) == "vendor=a")
        #expect(try Wire.bytesField(span, 4) == [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        #expect(try Wire.string(span, 5) == Self.span().name)
        #expect(span.first { $0.number == 6 }?.varint == 5)
        #expect(span.first { $0.number == 7 }?.fixed64 == 1_700_000_000_000_000_000)
        #expect(span.first { $0.number == 8 }?.fixed64 == 1_700_000_000_000_500_000)
        let attributes = try span.filter { $0.number == 9 }.map { try Wire.keyValue($0) }
        #expect(attributes.map(\.0) == ["k", "n", "b"])
        #expect(attributes[0].1 == .string("v\u{1}\"é") && attributes[1].1 == .int(-5) && attributes[2].1 == .bool(false))
        let status = try Wire.message(span, 15)
        #expect(try Wire.string(status, 2) == "exit 3" && status.first { $0.number == 3 }?.varint == 2)
        let event = try Wire.message(span, 11)
        #expect(try Wire.string(event, 2) == "exception")
        let second = try Wire.fields(try #require(spans.last?.bytes))
        #expect(!second.contains { $0.number == 15 || $0.number == 11 }, "no status, no event without an error")
    }

    @Test func sizesAreExactForEveryShapeOfSpan() throws {
        var spans: [FinishedSpan] = []
        for value in [0, -1, 127, 128, Int.max, Int.min] {
            for length in [0, 127, 128, 20_000] {
                var span = Self.span(error: length == 128 ? String(repeating: "e", count: 300) : nil)
                span.name = String(repeating: "n", count: length)
                span.trace.state = length == 0 ? nil : span.trace.state
                span.trace.parentSpanID = value == 0 ? nil : span.trace.parentSpanID
                span.attributes = [SpanAttribute("i", value), SpanAttribute(String(repeating: "k", count: length), String(repeating: "v", count: length))]
                spans.append(span)
            }
        }
        let body = OTLPEncoding.protobufBytes(spans, resource: SpanResource(serviceName: "svc", attributes: [:]))
        #expect(!body.isEmpty, "the sizes and the bytes agree")
        let scopeSpans = try Wire.message(try Wire.message(try Wire.fields(body[...]), 1), 2)
        let decoded = try scopeSpans.filter { $0.number == 2 }.map { try Wire.fields(try #require($0.bytes)) }
        #expect(decoded.count == spans.count)
        for (span, fields) in zip(spans, decoded) {
            #expect(try Wire.string(fields, 5) == span.name)
            let attributes = try fields.filter { $0.number == 9 }.map { try Wire.keyValue($0) }
            #expect(attributes.first.map { $0.1 } == span.attributes.first.map { if case .int(let n) = $0.value { .int(n) } else { .bool(false) } })
        }
    }

    @Test func theJSONRequestIsOTLPJSON() throws {
        let body = OTLPEncoding.json([Self.span(error: "exit 3")], resource: SpanResource(serviceName: "svc", attributes: [:]))
        let root = try #require(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
        let resourceSpans = try #require((root["resourceSpans"] as? [[String: Any]])?.first)
        let span = try #require(((resourceSpans["scopeSpans"] as? [[String: Any]])?.first?["spans"] as? [[String: Any]])?.first)
        #expect(span["traceId"] as? String == Self.producerTrace)
        #expect(span["spanId"] as? String == "1122334455667788")
        #expect(span["parentSpanId"] as? String == Self.producerSpan)
        #expect(span["kind"] as? Int == 5)
        #expect(span["startTimeUnixNano"] as? String == "1700000000000000000", "64-bit integers are strings")
        let attributes = try #require(span["attributes"] as? [[String: Any]])
        #expect((attributes[0]["value"] as? [String: Any])?["stringValue"] as? String == "v\u{1}\"é", "escaped and read back")
        #expect((attributes[1]["value"] as? [String: Any])?["intValue"] as? String == "-5")
        #expect((attributes[2]["value"] as? [String: Any])?["boolValue"] as? Bool == false)
        #expect((span["status"] as? [String: Any])?["code"] as? Int == 2)
    }

    // MARK: the queue and the exporter

    @Test func aFullQueueDropsAndCountsInsteadOfWaiting() {
        let queue = SpanQueue(limits: .init(capacity: 3, batchSize: 2))
        for _ in 0..<5 { queue.append(Self.span()) }
        #expect(queue.count == 3)
        #expect(queue.takeDropped() == 2 && queue.takeDropped() == 0)
        #expect(queue.takeBatch().count == 2 && queue.takeBatch().count == 1 && queue.takeBatch().isEmpty)
    }

    @Test func aFullBatchWakesTheExporter() async {
        let queue = SpanQueue(limits: .init(capacity: 10, batchSize: 2))
        async let woken: Void = queue.waitForBatch()
        queue.append(Self.span())
        queue.append(Self.span())
        await woken
        #expect(queue.count == 2)
    }

    /// A fake collector: answers each request from a script, then accepts; `acceptedTotals`
    /// yields the number of spans accepted so far after each accepted request.
    final class Collector: Sendable {
        let answers: Mutex<[SpanExporter.Sent]>
        let received = Mutex<[Int]>([])
        let accepted = Mutex(0)
        let (acceptedTotals, acceptedContinuation) = AsyncStream.makeStream(of: Int.self)
        init(_ answers: [SpanExporter.Sent]) { self.answers = Mutex(answers) }
        func send(_ batch: [FinishedSpan]) -> SpanExporter.Sent {
            received.withLock { $0.append(batch.count) }
            let answer = answers.withLock { $0.isEmpty ? SpanExporter.Sent.accepted : $0.removeFirst() }
            if answer == .accepted {
                acceptedContinuation.yield(accepted.withLock { total in
                    total += batch.count
                    return total
                })
            }
            return answer
        }
    }

    static func exporter(_ queue: SpanQueue, _ metrics: TestMetrics, log: CapturedLog) -> SpanExporter {
        var configuration = TracingConfiguration(endpoint: "http://user:pw@collector:4318")
        configuration.scheduleDelay = .milliseconds(20)
        var exporter = SpanExporter(configuration, queue: queue, logger: log.logger(level: .debug), factory: metrics)
        exporter.firstBackoff = .milliseconds(10)
        return exporter
    }

    @Test func aFailureAtStopCountsEverythingLeftAsDropped() async throws {
        let queue = SpanQueue(limits: .init(capacity: 100, batchSize: 4))
        let (metrics, log) = (TestMetrics(), CapturedLog())
        let collector = Collector([.failed("connection refused"), .failed("HTTP 503")])
        for _ in 0..<6 { queue.append(Self.span()) }
        queue.close()
        let exporter = Self.exporter(queue, metrics, log: log)
        await exporter.export { collector.send($0) }
        // Closed before the first request: one failure at stop counts what is left.
        #expect(collector.received.withLock { $0 } == [4])
        #expect(try metrics.expectCounter(WarrenMetrics.traceSpansDropped, []).totalValue == 6)
        #expect(!log.all.contains { "\($0.metadata)".contains("pw") }, "no credentials in the log")
    }

    @Test func whileRunningAFailureIsRetriedUntilTheCollectorTakesIt() async throws {
        let queue = SpanQueue(limits: .init(capacity: 100, batchSize: 4))
        let (metrics, log) = (TestMetrics(), CapturedLog())
        let collector = Collector([.failed("connection refused"), .failed("HTTP 503")])
        let exporter = Self.exporter(queue, metrics, log: log)
        let running = Task { await exporter.export { collector.send($0) } }
        for _ in 0..<6 { queue.append(Self.span()) }
        for await total in collector.acceptedTotals where total >= 6 { break }
        queue.close()
        await running.value
        #expect(collector.received.withLock { $0 }.prefix(3) == [4, 4, 4], "the same batch, three times")
        #expect(try metrics.expectCounter(WarrenMetrics.traceSpansExported, []).totalValue == 6)
        #expect(metrics.counters.first { $0.label == WarrenMetrics.traceSpansDropped }.map { $0.totalValue } ?? 0 == 0)
        #expect(log.matching("trace spans not exported: the collector did not take the batch; retrying with back-off").count == 1)
        #expect(log.matching("trace spans exported again: the collector took a batch").count == 1)
    }

    @Test func aRefusedBatchIsDroppedAndCounted() async throws {
        let queue = SpanQueue(limits: .init(capacity: 100, batchSize: 4))
        let (metrics, log) = (TestMetrics(), CapturedLog())
        let collector = Collector([.refused("HTTP 400")])
        for _ in 0..<5 { queue.append(Self.span()) }
        queue.close()
        await Self.exporter(queue, metrics, log: log).export { collector.send($0) }
        #expect(collector.received.withLock { $0 } == [4, 1])
        #expect(try metrics.expectCounter(WarrenMetrics.traceSpansDropped, []).totalValue == 4)
        #expect(try metrics.expectCounter(WarrenMetrics.traceSpansExported, []).totalValue == 1)
        #expect(log.matching("trace spans not exported: the collector refused the batch").first?.metadata["url"] == "http://collector:4318/v1/traces")
    }

    @Test func theBackOffDoublesUpToThirtySeconds() {
        var exporter = Self.exporter(SpanQueue(limits: .init()), TestMetrics(), log: CapturedLog())
        exporter.firstBackoff = .seconds(1)
        #expect((1...8).map { exporter.backoff(after: $0) } == [1, 2, 4, 8, 16, 30, 30, 30].map { Duration.seconds($0) })
    }
}

/// Protobuf's wire format read back: enough of it to check OTLP's field numbers.
enum Wire {
    struct Field {
        var number: Int
        var varint: UInt64?
        var fixed64: UInt64?
        var bytes: ArraySlice<UInt8>?
    }

    enum Value: Equatable {
        case string(String)
        case int(Int64)
        case bool(Bool)
    }

    struct Malformed: Error {}

    static func fields(_ data: ArraySlice<UInt8>) throws -> [Field] {
        var index = data.startIndex
        func varint() throws -> UInt64 {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                guard index < data.endIndex, shift < 64 else { throw Malformed() }
                let byte = data[index]
                index += 1
                value |= UInt64(byte & 0x7F) << shift
                if byte < 0x80 { return value }
                shift += 7
            }
        }
        var result: [Field] = []
        while index < data.endIndex {
            let key = try varint()
            var field = Field(number: Int(key >> 3))
            switch key & 7 {
            case 0: field.varint = try varint()
            case 1:
                guard data.endIndex - index >= 8 else { throw Malformed() }
                field.fixed64 = data[index..<index + 8].reversed().reduce(0) { $0 << 8 | UInt64($1) }
                index += 8
            case 2:
                let length = Int(try varint())
                guard data.endIndex - index >= length else { throw Malformed() }
                field.bytes = data[index..<index + length]
                index += length
            default: throw Malformed()
            }
            result.append(field)
        }
        return result
    }

    static func message(_ fields: [Field], _ number: Int) throws -> [Field] {
        guard let bytes = fields.first(where: { $0.number == number })?.bytes else { throw Malformed() }
        return try Self.fields(bytes)
    }

    static func bytesField(_ fields: [Field], _ number: Int) throws -> [UInt8] {
        guard let bytes = fields.first(where: { $0.number == number })?.bytes else { throw Malformed() }
        return Array(bytes)
    }

    static func string(_ fields: [Field], _ number: Int) throws -> String {
        String(decoding: try bytesField(fields, number), as: UTF8.self)
    }

    static func keyValue(_ field: Field) throws -> (String, Value) {
        guard let bytes = field.bytes else { throw Malformed() }
        let pair = try fields(bytes)
        let value = try message(pair, 2)
        let key = try string(pair, 1)
        if let text = value.first(where: { $0.number == 1 })?.bytes { return (key, .string(String(decoding: text, as: UTF8.self))) }
        if let flag = value.first(where: { $0.number == 2 })?.varint { return (key, .bool(flag != 0)) }
        if let number = value.first(where: { $0.number == 3 })?.varint { return (key, .int(Int64(bitPattern: number))) }
        throw Malformed()
    }
}

extension TraceID {
    var bytesArray: [UInt8] { withUnsafeBytes(of: bytes) { Array($0) } }
}
