import Testing

@testable import WarrenCore

/// The dispatcher without processes: workers are stand-in streams, so these tests see exactly
/// which request goes where and when.
@Suite("Pipe dispatch: capacity, FIFO waiting, id matching, worker loss", .timeLimit(.minutes(1)))
struct PipeDispatcherTests {
    struct FakeWorker {
        let serial: UInt64
        var frames: AsyncStream<PipeProtocol.Frame>.Iterator
        var stops: AsyncStream<String>.Iterator

        static func start(_ dispatcher: PipeDispatcher, index: Int) -> FakeWorker {
            let (frames, framesInput) = AsyncStream.makeStream(of: PipeProtocol.Frame.self)
            let (stops, stopInput) = AsyncStream.makeStream(of: String.self)
            let serial = dispatcher.workerStarted(index: index, pid: Int32(1000 + index), frames: framesInput, stop: stopInput)
            return FakeWorker(serial: serial, frames: frames.makeAsyncIterator(), stops: stops.makeAsyncIterator())
        }

        /// The body of the next frame written to this worker.
        mutating func next() async -> String? {
            await frames.next().map { String(decoding: $0.body, as: UTF8.self) }
        }
    }

    static func frame(_ body: String) -> PipeProtocol.Frame { PipeProtocol.Frame(header: [], body: Array(body.utf8)) }

    static func ack(_ id: UInt64, _ reply: String) -> PipeProtocol.Response {
        PipeProtocol.Response(id: id, outcome: .success(HandlerOutput(reply: Array(reply.utf8))))
    }

    static func reply(_ outcome: HandlerOutcome?) -> String? {
        guard case .success(let output)? = outcome, let reply = output.reply else { return nil }
        return String(decoding: reply, as: UTF8.self)
    }

    @Test func requestsWaitInOrderUntilAWorkerHasRoomAndAnswersFindTheirCallerById() async {
        let dispatcher = PipeDispatcher(capacity: 2)
        await withTaskGroup(of: (String, String?).self) { group in
            let ids = (0..<3).map { _ in dispatcher.makeID() }
            for (n, id) in ids.enumerated() {
                group.addTask { ("r\(n)", Self.reply(await dispatcher.submit(id, Self.frame("r\(n)")))) }
                // Let each submission queue before the next, so the FIFO order is known.
                while dispatcher.pendingCount < n + 1 { await Task.yield() }
            }
            var worker = FakeWorker.start(dispatcher, index: 0)
            #expect(await worker.next() == "r0")
            #expect(await worker.next() == "r1")
            // Capacity 2: r2 waits until an answer frees room. Answer out of order.
            #expect(dispatcher.complete(worker.serial, Self.ack(ids[1], "for r1")))
            #expect(await worker.next() == "r2")
            #expect(dispatcher.complete(worker.serial, Self.ack(ids[2], "for r2")))
            #expect(dispatcher.complete(worker.serial, Self.ack(ids[0], "for r0")))
            var results: [String: String?] = [:]
            for await (name, reply) in group { results[name] = reply }
            #expect(results == ["r0": "for r0", "r1": "for r1", "r2": "for r2"])
        }
    }

    @Test func anAnswerWithAnIdTheWorkerDoesNotHaveIsRefused() {
        let dispatcher = PipeDispatcher(capacity: 1)
        let worker = FakeWorker.start(dispatcher, index: 0)
        #expect(!dispatcher.complete(worker.serial, Self.ack(99, "?")))
    }

    @Test func aWorkerThatEndsFailsItsInFlightRequestsAndOthersTakeTheQueue() async {
        let dispatcher = PipeDispatcher(capacity: 1)
        var first = FakeWorker.start(dispatcher, index: 0)
        let a = dispatcher.makeID()
        let b = dispatcher.makeID()
        async let outcomeA = dispatcher.submit(a, Self.frame("a"))
        #expect(await first.next() == "a")
        async let outcomeB = dispatcher.submit(b, Self.frame("b"))
        while dispatcher.pendingCount < 2 { await Task.yield() }
        dispatcher.workerEnded(first.serial, failure: HandlerFailure("pipe worker exited with code 1", exitCode: 1))
        guard case .failure(let failure)? = await outcomeA else { Issue.record("a should fail"); return }
        #expect(failure.error == "pipe worker exited with code 1")
        var second = FakeWorker.start(dispatcher, index: 0)
        #expect(await second.next() == "b", "the waiting request goes to the replacement")
        #expect(dispatcher.complete(second.serial, Self.ack(b, "ok")))
        #expect(Self.reply(await outcomeB) == "ok")
    }

    @Test func theSweeperSeesOnlyPassedDeadlinesAndIsKickedOnlyForAnEarlierOne() async {
        let dispatcher = PipeDispatcher(capacity: 4)
        var worker = FakeWorker.start(dispatcher, index: 0)
        let (kicks, kick) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        var wakeUps = kicks.makeAsyncIterator()
        #expect(dispatcher.armSweep(kick: kick) == nil, "nothing waits: the sweeper sleeps until kicked")
        let start = ContinuousClock.now
        func expiry(_ seconds: Int) -> PipeDispatcher.Expiry {
            .init(deadline: start + .seconds(seconds), timeout: .seconds(seconds), queue: "q", messageID: nil)
        }
        let late = dispatcher.makeID()
        async let lateOutcome = dispatcher.submit(late, Self.frame("late"), expiry: expiry(20))
        #expect(await worker.next() == "late")
        #expect(await wakeUps.next() != nil, "the first deadline kicks an idle sweeper")
        #expect(dispatcher.armSweep(kick: kick) == start + .seconds(20))
        let soon = dispatcher.makeID()
        async let soonOutcome = dispatcher.submit(soon, Self.frame("soon"), expiry: expiry(10))
        #expect(await worker.next() == "soon")
        #expect(await wakeUps.next() != nil, "an earlier deadline kicks it again")
        #expect(dispatcher.armSweep(kick: kick) == start + .seconds(10))

        #expect(dispatcher.expired(at: start + .seconds(5)).isEmpty)
        #expect(dispatcher.expired(at: start + .seconds(15)).map(\.id) == [soon])
        #expect(Set(dispatcher.expired(at: start + .seconds(25)).map(\.id)) == [soon, late])

        #expect(dispatcher.complete(worker.serial, Self.ack(soon, "s")))
        #expect(dispatcher.complete(worker.serial, Self.ack(late, "l")))
        #expect(Self.reply(await soonOutcome) == "s")
        #expect(Self.reply(await lateOutcome) == "l")
        #expect(dispatcher.expired(at: start + .seconds(25)).isEmpty, "answered requests are no longer watched")
    }

    @Test func aTimeOutAnswersTheCallerAndStopsTheWorkerThatHadTheRequest() async {
        let dispatcher = PipeDispatcher(capacity: 2)
        var worker = FakeWorker.start(dispatcher, index: 0)
        let id = dispatcher.makeID()
        async let outcome = dispatcher.submit(id, Self.frame("slow"))
        #expect(await worker.next() == "slow")
        let pid = dispatcher.timeOut(id, failure: HandlerFailure("timeout after 1s", isTimeout: true), stopReason: "hung")
        #expect(pid == 1000)
        guard case .failure(let failure)? = await outcome else { Issue.record("expected the timeout failure"); return }
        #expect(failure.isTimeout)
        #expect(await worker.stops.next() == "hung")
        // A late answer to the timed-out request is expected and dropped, not a protocol error.
        #expect(dispatcher.complete(worker.serial, Self.ack(id, "late")))
        // The stopped worker takes no new request.
        let next = dispatcher.makeID()
        async let waiting = dispatcher.submit(next, Self.frame("next"))
        while dispatcher.pendingCount < 1 { await Task.yield() }
        #expect(dispatcher.queuedCount == 1)
        dispatcher.close()
        guard case .failure? = await waiting else { Issue.record("closing fails waiting requests"); return }
    }

    @Test func aCancelledCallerLeavesNoWaiterBehind() async {
        let dispatcher = PipeDispatcher(capacity: 1)
        let queued = Task { await dispatcher.submit(dispatcher.makeID(), Self.frame("never")) }
        while dispatcher.pendingCount < 1 { await Task.yield() }
        queued.cancel()
        #expect(await queued.value == nil)
        #expect(dispatcher.pendingCount == 0)
        #expect(dispatcher.queuedCount == 0)

        var worker = FakeWorker.start(dispatcher, index: 0)
        let id = dispatcher.makeID()
        let inFlight = Task { await dispatcher.submit(id, Self.frame("taken")) }
        #expect(await worker.next() == "taken")
        inFlight.cancel()
        #expect(await inFlight.value == nil)
        #expect(dispatcher.pendingCount == 0)
        #expect(dispatcher.complete(worker.serial, Self.ack(id, "late")), "the late answer is still matched, then dropped")
    }

    @Test func requestsAfterCloseFailAtOnce() async {
        let dispatcher = PipeDispatcher(capacity: 1)
        dispatcher.close()
        guard case .failure(let failure)? = await dispatcher.submit(dispatcher.makeID(), Self.frame("x")) else { Issue.record("expected failure"); return }
        #expect(failure == PipeDispatcher.stoppedFailure)
    }

    @Test func equalLoadsTakeTurnsAcrossWorkers() async {
        let dispatcher = PipeDispatcher(capacity: 4)
        var workers = (0..<3).map { FakeWorker.start(dispatcher, index: $0) }
        await withTaskGroup(of: Void.self) { group in
            var ids: [UInt64] = []
            for n in 0..<3 {
                let id = dispatcher.makeID()
                ids.append(id)
                group.addTask { _ = await dispatcher.submit(id, Self.frame("r\(n)")) }
                #expect(await workers[n].next() == "r\(n)", "each idle worker gets one")
            }
            for (n, id) in ids.enumerated() { #expect(dispatcher.complete(workers[n].serial, Self.ack(id, ""))) }
        }
    }
}
