import Foundation
import Glibc
import Synchronization
import TestSupport
import Testing

@testable import WarrenCore

/// The thread of its own that each worker of an exec queue gets, and which queues get one.
@Suite(.timeLimit(.minutes(1))) struct WorkerThreadTests {
    /// What a task sees of the thread it runs on.
    struct ThreadView: Equatable {
        var thread: pthread_t
        /// The worker's thread (named "test-worker"), not one of the shared pool's.
        var onWorker: Bool
        var blocksSIGCHLD: Bool

        static func current() -> ThreadView {
            var mask = sigset_t()
            pthread_sigmask(SIG_BLOCK, nil, &mask)
            return ThreadView(thread: pthread_self(), onWorker: currentThreadName() == "test-worker", blocksSIGCHLD: sigismember(&mask, SIGCHLD) == 1)
        }
    }

    @Test func aTaskThatPrefersTheThreadRunsOnItAcrossSuspensions() async {
        let worker = WorkerThread(name: "test-worker")
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
        #expect(Set(views.map { UInt($0.thread) }).count == 1, "every step ran on the worker's one thread")
        #expect(views.allSatisfy { $0.onWorker }, "the worker's own thread")
        #expect(views.allSatisfy { !$0.blocksSIGCHLD }, "children's exits raise nothing there")
        let elsewhere = await Task.detached { ThreadView.current() }.value
        #expect(!elsewhere.onWorker, "a thread of the shared pool")
        #expect(!views.contains { pthread_equal($0.thread, elsewhere.thread) != 0 })
    }

    @Test func jobsEnqueuedFromManyThreadsAllRun() async {
        let worker = WorkerThread(name: "test-worker")
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

    @Test func aTaskThatStillPrefersAStoppedThreadFinishesElsewhere() async {
        let worker = WorkerThread(name: "test-worker")
        let before = await withTaskExecutorPreference(worker) { ThreadView.current() }
        worker.stop()
        let after = await withTaskExecutorPreference(worker) { ThreadView.current() }
        #expect(before.onWorker)
        #expect(!after.onWorker, "after stop() its jobs run on the global executor")
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
