import Foundation
import Synchronization
import Testing

@testable import WarrenCore

/// A settable wall clock, in milliseconds.
final class ManualClock: Sendable {
    private let now = Mutex<Int64>(1_700_000_000_000)
    var clock: DedupClock { { self.now.withLock { $0 } } }
    func advance(_ duration: Duration) { now.withLock { $0 += duration.milliseconds } }
}

@Suite("Dedup stores")
struct DedupStoreTests {
    static func temporaryPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("warren-dedup-\(UUID().uuidString).sqlite").path
    }

    static func removeDatabase(_ path: String) {
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    }

    /// The behaviour both stores share, run against each.
    static func checkRecordsPerQueueHandlerAndMessage(_ store: any DedupStore) async throws {
        #expect(try await store.completed(queue: "q", messageID: "m1", handlers: ["a", "b", "c"]).isEmpty)
        try await store.record(queue: "q", messageID: "m1", handlers: ["a", "c"])
        #expect(try await store.completed(queue: "q", messageID: "m1", handlers: ["a", "b", "c"]) == ["a", "c"])
        // Only the handlers asked about are reported.
        #expect(try await store.completed(queue: "q", messageID: "m1", handlers: ["b"]).isEmpty)
        // Another message, or the same message id on another queue, is not done.
        #expect(try await store.completed(queue: "q", messageID: "m2", handlers: ["a"]).isEmpty)
        #expect(try await store.completed(queue: "other", messageID: "m1", handlers: ["a"]).isEmpty)
    }

    static func checkEntriesExpireAfterTheTTL(_ store: any DedupStore, _ clock: ManualClock) async throws {
        try await store.record(queue: "q", messageID: "m", handlers: ["a"])
        clock.advance(.seconds(59))
        #expect(try await store.completed(queue: "q", messageID: "m", handlers: ["a"]) == ["a"])
        clock.advance(.seconds(1))
        #expect(try await store.completed(queue: "q", messageID: "m", handlers: ["a"]).isEmpty)
        // Recording again starts a new TTL.
        try await store.record(queue: "q", messageID: "m", handlers: ["a"])
        #expect(try await store.completed(queue: "q", messageID: "m", handlers: ["a"]) == ["a"])
    }

    @Test func theMemoryStoreRecordsPerQueueHandlerAndMessage() async throws {
        try await Self.checkRecordsPerQueueHandlerAndMessage(MemoryDedupStore(ttl: .seconds(60)))
    }

    @Test func theMemoryStoreForgetsEntriesAfterTheTTLAndReleasesThem() async throws {
        let clock = ManualClock()
        let store = MemoryDedupStore(ttl: .seconds(60), clock: clock.clock)
        try await Self.checkEntriesExpireAfterTheTTL(store, clock)
        clock.advance(.seconds(61))
        try await store.record(queue: "q", messageID: "other", handlers: ["a"])
        #expect(store.count == 1)
    }

    @Test func theMemoryStoreStaysWithinItsCapacityForgettingTheOldestFirst() async throws {
        let store = MemoryDedupStore(ttl: .seconds(3600), capacity: 100)
        for n in 0..<1000 { try await store.record(queue: "q", messageID: "m\(n)", handlers: ["a"]) }
        #expect(store.count == 100)
        #expect(try await store.completed(queue: "q", messageID: "m999", handlers: ["a"]) == ["a"])
        #expect(try await store.completed(queue: "q", messageID: "m0", handlers: ["a"]).isEmpty)
    }

    @Test func theSQLiteStoreRecordsPerQueueHandlerAndMessage() async throws {
        let path = Self.temporaryPath()
        defer { Self.removeDatabase(path) }
        let store = try await SQLiteDedupStore.open(path: path, ttl: .seconds(60))
        try await Self.checkRecordsPerQueueHandlerAndMessage(store)
        await store.close()
    }

    @Test func theSQLiteStoreForgetsEntriesAfterTheTTLAndPurgesThem() async throws {
        let path = Self.temporaryPath()
        defer { Self.removeDatabase(path) }
        let clock = ManualClock()
        let store = try await SQLiteDedupStore.open(path: path, ttl: .seconds(60), clock: clock.clock)
        try await Self.checkEntriesExpireAfterTheTTL(store, clock)
        try await store.record(queue: "q", messageID: "old", handlers: ["a"])
        clock.advance(.seconds(120))
        // The next record after the purge interval deletes what expired.
        try await store.record(queue: "q", messageID: "new", handlers: ["a"])
        #expect(try await store.rowCount() == 1)
        await store.close()
    }

    @Test func theSQLiteStoreRemembersAcrossARestart() async throws {
        let path = Self.temporaryPath()
        defer { Self.removeDatabase(path) }
        let first = try await SQLiteDedupStore.open(path: path, ttl: .seconds(60))
        try await first.record(queue: "q", messageID: "m", handlers: ["a", "b"])
        await first.close()
        let second = try await SQLiteDedupStore.open(path: path, ttl: .seconds(60))
        #expect(try await second.completed(queue: "q", messageID: "m", handlers: ["a", "b", "c"]) == ["a", "b"])
        await second.close()
    }

    @Test func aSQLiteStoreInAMissingDirectoryFailsNamingTheDirectory() async throws {
        let path = "/nonexistent-\(UUID().uuidString)/dedup.sqlite"
        let error = await #expect(throws: SQLiteDedupStore.OpenError.self) {
            _ = try await SQLiteDedupStore.open(path: path, ttl: .seconds(60))
        }
        #expect(error?.description.contains("does not exist") == true)
    }
}
