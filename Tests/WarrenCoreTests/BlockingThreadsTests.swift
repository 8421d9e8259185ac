import Dispatch
import Foundation
import Glibc
import Synchronization
import TestSupport
import Testing

@testable import WarrenCore

/// The threads that may block (`BlockingThreads`): a queue's workers run on them, runs hand
/// their waits to them, a plugin's calls run on them. Which queues get them.
@Suite(.timeLimit(.minutes(1))) struct BlockingThreadsTests {
    /// What a task sees of the thread it runs on.
    struct ThreadView: Equatable {
        var thread: pthread_t
        /// One of the set's threads (named "test-worker"), not one of the shared pool's.
        var onWorker: Bool
        var blocksSIGCHLD: Bool

        static func current() -> ThreadView {
            var mask = sigset_t()
            pthread_sigmask(SIG_BLOCK, nil, &mask)
            return ThreadView(thread: pthread_self(), onWorker: currentThreadName() == "test-worker", blocksSIGCHLD: sigismember(&mask, SIGCHLD) == 1)
        }
    }

    @Test func aTaskThatPrefersAThreadRunsOnItAcrossSuspensions() async {
        let worker = BlockingThreads(name: "test-worker", count: 1)
        defer { worker.stop() }
        let views = await withTaskExecutorPreference(worker) {
            var views = [ThreadView.current()]
            for _ in 0..<3 {
                // A real suspension: resumed from another thread.
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    Thread.detachNewThread { continuation.resume() }
                }
                views.append(ThreadView.current())
            }
            return views
        }
        #expect(Set(views.map { UInt($0.thread) }).count == 1, "every step ran on the set's one thread")
        #expect(views.allSatisfy { $0.onWorker }, "the set's own thread")
        #expect(views.allSatisfy { !$0.blocksSIGCHLD }, "children's exits raise nothing there")
        let elsewhere = await Task.detached { ThreadView.current() }.value
        #expect(!elsewhere.onWorker, "a thread of the shared pool")
        #expect(!views.contains { pthread_equal($0.thread, elsewhere.thread) != 0 })
    }

    @Test func jobsEnqueuedFromManyThreadsAllRun() async {
        let worker = BlockingThreads(name: "test-worker", count: 3)
        defer { worker.stop() }
        final class Ran: Sendable { let indices = Mutex<[Int]>([]) }
        let ran = Ran()
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<500 {
                group.addTask(executorPreference: worker) {
                    #expect(currentThreadName() == "test-worker")
                    ran.indices.withLock { $0.append(index) }
                }
            }
        }
        #expect(ran.indices.withLock { $0.sorted() } == Array(0..<500))
    }

    @Test func aTaskThatStillPrefersStoppedThreadsFinishesElsewhere() async {
        let worker = BlockingThreads(name: "test-worker", count: 2)
        let before = await withTaskExecutorPreference(worker) { ThreadView.current() }
        worker.stop()
        let after = await withTaskExecutorPreference(worker) { ThreadView.current() }
        #expect(before.onWorker)
        #expect(!after.onWorker, "after stop() its jobs run on the global executor")
    }

    @Test func asManyCallsBlockAtOnceAsThereAreThreadsAndEachReturnsItsResult() async {
        let count = 4
        let threads = BlockingThreads(name: "test-worker", count: count)
        defer { threads.stop() }
        // Each call blocks its thread until every one of them has started: they can only all
        // return if the set ran `count` of them at once.
        let entered = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let results = await withTaskGroup(of: (Int, String?).self) { group in
            for index in 0..<count {
                group.addTask {
                    let name = await threads.run { () -> String in
                        entered.signal()
                        release.wait()
                        return "\(index) on \(currentThreadName())"
                    }
                    return (index, name)
                }
            }
            await offPool {
                for _ in 0..<count { entered.wait() }
                for _ in 0..<count { release.signal() }
            }
            var results: [Int: String?] = [:]
            for await (index, name) in group { results[index] = name }
            return results
        }
        #expect(results.count == count)
        for index in 0..<count { #expect(results[index] == "\(index) on test-worker") }
    }

    @Test func afterStopNothingRunsAndCallersAreToldSo() async {
        let threads = BlockingThreads(name: "test-worker", count: 1)
        #expect(await threads.run { 7 } == 7)
        threads.stop()
        #expect(await threads.run { 7 } == nil, "run: nothing ran")
        let active = Mutex<Bool?>(nil)
        threads.submit { isActive in active.withLock { $0 = isActive } }
        #expect(active.withLock { $0 } == false, "submit: called at once, told it is not active")
    }

    @Test func aRunWaitsWhereItsPlacementSays() async {
        let threads = BlockingThreads(name: "test-worker", count: 1)
        defer { threads.stop() }
        #expect(await BlockingWait.on(threads).run { currentThreadName() } == "test-worker")
        #expect(await BlockingWait.spare.run { currentThreadName() } == "warren-blocking")
        let here = await withTaskExecutorPreference(threads) { await BlockingWait.here.run { pthread_self() } }
        let worker = await withTaskExecutorPreference(threads) { pthread_self() }
        #expect(here.map { pthread_equal($0, worker) != 0 } == true, "here: on the caller's own thread")
    }

    @Test func onlyQueuesWhoseHandlersAllRunProcessesGetThreadsOfTheirOwn() {
        #expect(DeliveryProcessor.threading(of: [.ownThread], dedup: false) == .ownThread)
        #expect(DeliveryProcessor.threading(of: [.ownThread, .ownThread], dedup: true) == .ownThread)
        #expect(DeliveryProcessor.threading(of: [.ownThread, .neverBlocks], dedup: false) == .sharedPool)
        #expect(DeliveryProcessor.threading(of: [.ownThread, .sharedPool], dedup: false) == .sharedPool)
        #expect(DeliveryProcessor.threading(of: [.neverBlocks], dedup: false) == .neverBlocks)
        #expect(DeliveryProcessor.threading(of: [.neverBlocks], dedup: true) == .sharedPool, "a dedup store may block")
        #expect(DeliveryProcessor.threading(of: [.sharedPool], dedup: false) == .sharedPool)
    }
}
