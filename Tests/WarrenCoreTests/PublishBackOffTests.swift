import Synchronization
import Testing

@testable import WarrenCore

/// The brake a queue puts on itself after a transient publish failure.
@Suite("Publish back-off", .timeLimit(.minutes(1)))
struct PublishBackOffTests {
    @Test func failuresInARowWaitLongerUpToTheCapAndAConfirmedPublishEndsIt() {
        let backOff = PublishBackOff()
        #expect(!backOff.isActive)
        #expect(backOff.failed() == .milliseconds(250), "the first failure waits the initial step")
        #expect(backOff.isActive)
        var longest = Duration.zero
        for _ in 0..<12 {
            let delay = backOff.failed()
            #expect(delay >= .milliseconds(250) && delay <= .seconds(30))
            longest = max(longest, delay)
        }
        #expect(longest > .milliseconds(250), "consecutive failures back off further")
        backOff.succeeded()
        #expect(!backOff.isActive)
        #expect(backOff.failed() == .milliseconds(250), "a confirmed publish starts the ladder again")
    }

    @Test func withoutABackOffWaitingReturnsAtOnceWhateverTheHealth() async {
        let backOff = PublishBackOff()
        await backOff.wait(unless: Latch(), healthy: { false })
    }

    @Test func aWaitingQueueResumesOnlyOnceThePublisherIsHealthy() async {
        let backOff = PublishBackOff()
        backOff.failed()
        let healthy = Atomic<Bool>(false)
        let checks = Atomic<Int>(0)
        let waiter = Task {
            await backOff.wait(unless: Latch()) {
                checks.add(1, ordering: .relaxed)
                return healthy.load(ordering: .relaxed)
            }
        }
        // It keeps asking while the publisher is down.
        while checks.load(ordering: .relaxed) < 2 { await Task.yield() }
        healthy.store(true, ordering: .relaxed)
        await waiter.value
        #expect(checks.load(ordering: .relaxed) >= 3)
    }

    @Test func stoppingEndsTheWaitEvenWhileThePublisherIsDown() async {
        let backOff = PublishBackOff()
        for _ in 0..<10 { backOff.failed() }
        let stop = Latch()
        stop.set()
        await backOff.wait(unless: stop, healthy: { false })
    }
}
