import AMQP
import Foundation
import Testing
import W3CTraceContext

@testable import WarrenCore

/// W3C trace context: reading `traceparent` / `tracestate` from a delivery's headers, the child
/// context of a handler run, and what the copies warren publishes carry forward. Pure.
@Suite("Trace context")
struct TraceContextTests {
    static let traceHex = "4bf92f3577b34da6a3ce929d0e0e4736"
    static let spanHex = "00f067aa0ba902b7"
    static let valid = "00-\(traceHex)-\(spanHex)-01"

    /// A generator that counts: ids are predictable in tests.
    struct Counting: RandomNumberGenerator {
        var value: UInt64 = 0
        mutating func next() -> UInt64 {
            value &+= 1
            return value
        }
    }

    static func trace(_ headers: FieldTable?) -> MessageTrace {
        var ids = Counting(value: 0x1000)
        return MessageTrace.of(headers: headers, using: &ids)
    }

    static func parsed(_ value: String) -> TraceHeaderValue.Parent? {
        TraceHeaderValue.parseTraceparent(.string(value))
    }

    // MARK: traceparent

    @Test func aValidTraceparentIsContinuedWithItsIdsAndFlags() {
        let trace = Self.trace(["traceparent": .string(Self.valid)])
        #expect(trace.traceIDText == Self.traceHex)
        #expect(trace.spanIDText == Self.spanHex)
        #expect(trace.flags == .sampled)
        #expect(trace.isRemote)
        #expect(trace.traceparent == Self.valid)
    }

    @Test func aTraceparentInAByteArrayHeaderIsReadToo() {
        #expect(TraceHeaderValue.parseTraceparent(.bytes(Array(Self.valid.utf8))) != nil)
    }

    @Test func theUnsampledFlagIsKept() {
        let trace = Self.trace(["traceparent": .string("00-\(Self.traceHex)-\(Self.spanHex)-00")])
        #expect(trace.isRemote)
        #expect(trace.flags == [])
        #expect(trace.traceparent.hasSuffix("-00"))
    }

    @Test(arguments: [
        ("wrong length", "00-\(traceHex)-\(spanHex)-1"),
        ("version 00 with more after it", "00-\(traceHex)-\(spanHex)-01-extra"),
        ("bad hex", "00-\(traceHex.dropLast())g-\(spanHex)-01"),
        ("uppercase hex", "00-\(traceHex.uppercased())-\(spanHex)-01"),
        ("version ff", "ff-\(traceHex)-\(spanHex)-01"),
        ("uppercase version", "0A-\(traceHex)-\(spanHex)-01"),
        ("all-zero trace id", "00-\(String(repeating: "0", count: 32))-\(spanHex)-01"),
        ("all-zero span id", "00-\(traceHex)-\(String(repeating: "0", count: 16))-01"),
        ("bad flags", "00-\(traceHex)-\(spanHex)-0x"),
        ("wrong delimiter", "00_\(traceHex)-\(spanHex)-01"),
        ("future version without a dash after the flags", "01-\(traceHex)-\(spanHex)-01x"),
        ("empty", ""),
        ("too short", "00-\(traceHex)"),
    ])
    func anInvalidTraceparentIsIgnored(_ reason: String, _ value: String) {
        #expect(Self.parsed(value) == nil, "\(reason)")
        let trace = Self.trace(["traceparent": .string(value), "tracestate": "congo=t61rcWkgMzE"])
        #expect(!trace.isRemote, "a new trace is started: \(reason)")
        #expect(trace.state == nil, "its tracestate is not read: \(reason)")
    }

    @Test func aTraceparentThatIsNotAStringIsIgnored() {
        #expect(TraceHeaderValue.parseTraceparent(.int64(1)) == nil)
        #expect(TraceHeaderValue.parseTraceparent(.table(["traceparent": .string(Self.valid)])) == nil)
        #expect(TraceHeaderValue.parseTraceparent(.array([.string(Self.valid)])) == nil)
        #expect(!Self.trace(["traceparent": .int64(1)]).isRemote)
    }

    @Test func aHigherVersionIsReadForItsFirstFourFieldsAndSentOnAsVersion00() {
        let longer = "cc-\(Self.traceHex)-\(Self.spanHex)-01-what-the-future-will-bring"
        let trace = Self.trace(["traceparent": .string(longer)])
        #expect(trace.isRemote)
        #expect(trace.traceIDText == Self.traceHex)
        #expect(trace.traceparent == Self.valid)
        #expect(Self.parsed("cc-\(Self.traceHex)-\(Self.spanHex)-01") != nil, "exactly the four fields")
    }

    @Test func aVeryLongHeaderDoesNotTrap() {
        let long = "01-\(Self.traceHex)-\(Self.spanHex)-01-" + String(repeating: "a", count: 100_000)
        #expect(Self.parsed(long) != nil)
        #expect(Self.parsed("00-\(Self.traceHex)-\(Self.spanHex)-01" + String(repeating: "0", count: 100_000)) == nil)
    }

    @Test func aMessageWithoutTraceparentStartsASampledTrace() {
        let trace = Self.trace(nil)
        #expect(!trace.isRemote)
        #expect(trace.parentSpanID == nil)
        #expect(trace.flags == .sampled)
        #expect(trace.state == nil)
        #expect(Self.parsed(trace.traceparent) != nil, "renders as a valid traceparent: \(trace.traceparent)")
    }

    @Test func newTracesHaveDistinctIds() {
        let traces = (0..<1000).map { _ in MessageTrace.started() }
        #expect(Set(traces.map(\.traceID)).count == 1000)
        #expect(Set(traces.map(\.spanID)).count == 1000)
        #expect(traces.allSatisfy { Self.parsed($0.traceparent) != nil })
    }

    @Test func anAllZeroDrawIsNeverAnId() {
        var zeros = Counting(value: UInt64.max)  // draws 0, then 1, 2, ...
        let trace = MessageTrace.started(using: &zeros)
        #expect(trace.traceID != .null)
        #expect(trace.spanID != .null)
    }

    // MARK: child contexts

    @Test func aChildKeepsTheTraceAndStateAndHasASpanOfItsOwn() {
        let delivery = Self.trace(["traceparent": .string(Self.valid), "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"])
        let first = delivery.child()
        let second = delivery.child()
        #expect(first.traceID == delivery.traceID)
        #expect(first.spanID != delivery.spanID)
        #expect(first.spanID != second.spanID)
        #expect(first.parentSpanID == delivery.spanID)
        #expect(first.flags == .sampled)
        #expect(first.state == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        #expect(!first.isRemote)
    }

    @Test func eachHandlerOfAFanOutRunsInASpanOfItsOwnUnderTheDeliverys() {
        let delivery = Self.deliveryTrace
        let first = HandlerInput(
            queue: "q", exchange: "", routingKey: "k", redelivered: false, attempt: 1, properties: BasicProperties(), body: [],
            deliveryTag: 1, trace: delivery.child(), deliveryTrace: delivery)
        let second = first.nextRun("second")
        #expect(second.trace.spanID != first.trace.spanID)
        #expect(second.trace.traceID == delivery.traceID)
        #expect(second.trace.parentSpanID == delivery.spanID)
        #expect(second.deliveryTrace == delivery)
    }

    @Test func aChildKeepsOnlyTheSampledFlag() {
        let unsampled = Self.trace(["traceparent": .string("00-\(Self.traceHex)-\(Self.spanHex)-00")])
        #expect(unsampled.child().flags == [])
        let otherBits = Self.trace(["traceparent": .string("00-\(Self.traceHex)-\(Self.spanHex)-ff")])
        #expect(otherBits.child().flags == .sampled)
        #expect(otherBits.child().traceparent.hasSuffix("-01"))
    }

    // MARK: tracestate

    @Test(arguments: [
        "congo=t61rcWkgMzE",
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
        "rojo=1 ,\tcongo=2",
        "tenant@vendor=value",
        "0tenant@v=x",
        "a=b,,c=d",
        "a= value with spaces",
        "a=" + String(repeating: "v", count: 256),
    ])
    func aValidTracestateIsPassedOnUnchanged(_ value: String) {
        let trace = Self.trace(["traceparent": .string(Self.valid), "tracestate": .string(value)])
        #expect(trace.state == value)
    }

    @Test(arguments: [
        ("empty", ""),
        ("only blanks and commas", " , "),
        ("no equals sign", "congo"),
        ("uppercase key", "Congo=1"),
        ("key starting with a digit", "0congo=1"),
        ("empty value", "congo="),
        ("equals sign in the value", "congo=a=b"),
        ("control character", "congo=a\u{1}b"),
        ("system id too long", "t@abcdefghijklmno=1"),
        ("two at signs", "a@b@c=1"),
        ("duplicate key", "a=1,b=2,a=3"),
        ("value too long", "a=" + String(repeating: "v", count: 257)),
        ("33 members", (0..<33).map { "k\($0)=v" }.joined(separator: ",")),
        ("over 512 characters", (0..<20).map { "key\($0)=" + String(repeating: "v", count: 24) }.joined(separator: ",")),
        ("non-ASCII", "congo=é"),
    ])
    func anInvalidTracestateIsDropped(_ reason: String, _ value: String) {
        let trace = Self.trace(["traceparent": .string(Self.valid), "tracestate": .string(value)])
        #expect(trace.isRemote, "the traceparent still counts: \(reason)")
        #expect(trace.state == nil, "\(reason)")
    }

    @Test func thirtyTwoMembersAreAllowed() {
        let value = (0..<32).map { "k\($0)=v" }.joined(separator: ",")
        #expect(Self.trace(["traceparent": .string(Self.valid), "tracestate": .string(value)]).state == value)
    }

    @Test func aTracestateThatIsNotAStringIsDropped() {
        #expect(Self.trace(["traceparent": .string(Self.valid), "tracestate": .int64(7)]).state == nil)
        #expect(Self.trace(["traceparent": .string(Self.valid), "tracestate": .bytes(Array("a=1".utf8))]).state == "a=1")
    }

    // MARK: carried forward

    static let deliveryTrace = trace(["traceparent": .string(valid), "tracestate": "congo=1"])

    @Test func anOutputWithoutTraceparentCarriesTheRunsContext() {
        let run = Self.deliveryTrace.child()
        let output = HandlerOutput(reply: [1], publishes: [OutgoingMessage(routingKey: "out", body: [])])
        let traced = HandlerOutcome.success(output).tracing(run)
        guard case .success(let result) = traced else {
            Issue.record("not a success: \(traced)")
            return
        }
        #expect(result.publishes[0].properties.headers?["traceparent"] == .string(run.traceparent))
        #expect(result.publishes[0].properties.headers?["tracestate"] == "congo=1")
        #expect(result.replyTrace == run)
        let reply = result.replyProperties(correlationID: "c-1")
        #expect(reply.correlationID == "c-1")
        #expect(reply.headers?["traceparent"] == .string(run.traceparent))
    }

    @Test func anOutputThatSetsItsOwnTraceparentKeepsIt() {
        let own: FieldTable = ["traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "mine=1", "k": "v"]
        let output = HandlerOutput(publishes: [OutgoingMessage(routingKey: "out", properties: BasicProperties(headers: own), body: [])])
        guard case .success(let result) = HandlerOutcome.success(output).tracing(Self.deliveryTrace.child()) else {
            Issue.record("not a success")
            return
        }
        #expect(result.publishes[0].properties.headers == own)
    }

    @Test func aRetryCopyCarriesTheDeliverysContextSoEveryAttemptIsOneTrace() {
        let queue = DeliveryDecisionTests.queue(retry: RetryPolicy(maxAttempts: 5))
        var headers: FieldTable = ["traceparent": "00-garbage", "tracestate": "dropped=1"]
        var traceIDs: Set<String> = []
        for attempt in 1...3 {
            let delivery = DeliveryDecisionTests.delivery(headers: headers)
            let trace = MessageTrace.of(headers: delivery.properties.headers)
            var decision = DeliveryDecision(.init(queue: queue, delivery: delivery, attempt: attempt, trace: trace))
            let copy = DeliveryDecisionTests.published(decision.start(DeliveryDecisionTests.failure))
            #expect(copy?.purpose == .retryCopy)
            let copied = copy?.messages.first?.properties.headers
            #expect(copied?["traceparent"] == .string(trace.traceparent))
            #expect(copied?["tracestate"] == nil, "an invalid traceparent's tracestate is not carried")
            traceIDs.insert(trace.traceIDText)
            headers = copied ?? [:]
        }
        #expect(traceIDs.count == 1, "the attempts after the first continue the trace the first started")
    }

    @Test func aDeadLetterCopyCarriesTheDeliverysContextAndTracestate() {
        let queue = DeliveryDecisionTests.queue(retry: nil)
        let delivery = DeliveryDecisionTests.delivery(headers: ["traceparent": .string(Self.valid), "tracestate": "congo=1"])
        let trace = MessageTrace.of(headers: delivery.properties.headers)
        var decision = DeliveryDecision(.init(queue: queue, delivery: delivery, attempt: 1, trace: trace))
        let park = DeliveryDecisionTests.published(decision.start(.handled(.verdict(.reject, error: nil, output: .none), handler: "h", outputs: [])))
        #expect(park?.purpose == .parkCopy)
        #expect(park?.messages.first?.properties.headers?["traceparent"] == .string(Self.valid))
        #expect(park?.messages.first?.properties.headers?["tracestate"] == "congo=1")
    }

    @Test func republishCarriesTheDeliverysContextNotTheRuns() async {
        let delivery = Self.trace(nil)
        let input = HandlerInput(
            queue: "q", exchange: "", routingKey: "k", redelivered: false, attempt: 1, properties: BasicProperties(), body: [],
            deliveryTag: 1, trace: delivery.child(), deliveryTrace: delivery)
        let outcome = await RepublishHandler(exchange: "", routingKey: "copy").handle(input).tracing(input.trace)
        guard case .success(let output) = outcome else {
            Issue.record("not a success")
            return
        }
        #expect(output.publishes[0].properties.headers?["traceparent"] == .string(delivery.traceparent))
    }

    @Test func aPipeRequestCarriesTheRunsTraceparentAndTracestateOnlyWhenThereIsOne() throws {
        var input = PipeProtocolTests.input(body: [])
        input.trace = Self.deliveryTrace.child()
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(try PipeProtocol.request(id: 1, input).header.dropLast())) as? [String: Any])
        #expect(object["traceparent"] as? String == input.trace.traceparent)
        #expect(object["tracestate"] as? String == "congo=1")
        input.trace = Self.trace(nil).child()
        let bare = try #require(
            try JSONSerialization.jsonObject(with: Data(try PipeProtocol.request(id: 2, input).header.dropLast())) as? [String: Any])
        #expect(bare["traceparent"] as? String == input.trace.traceparent)
        #expect(bare["tracestate"] == nil)
    }

    @Test func theLogCarriesTraceAndSpanIds() {
        let trace = Self.deliveryTrace
        let metadata = MessageLog(
            logger: .init(label: "t"), queue: "q", delivery: DeliveryDecisionTests.delivery(), attempt: 1, trace: trace
        ).metadata([:])
        #expect(metadata[LogKeys.traceID] == "\(Self.traceHex)")
        #expect(metadata[LogKeys.spanID] == "\(Self.spanHex)")
    }
}
