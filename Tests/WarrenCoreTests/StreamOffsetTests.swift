import Foundation
import Synchronization
import TestSupport
import Testing

@testable import WarrenCore

@Suite struct StreamOffsetTests {
    // MARK: - Tracker

    @Suite struct Tracker {
        @Test func inOrderProcessingMovesTheWatermarkToEachProcessedOffset() {
            var tracker = StreamOffsetTracker(resumeAfter: nil)
            #expect(tracker.watermark == nil)
            #expect(tracker.resumeOffset == nil)
            for offset: Int64 in 0..<5 { tracker.delivered(offset) }
            #expect(tracker.pendingCount == 5)
            for offset: Int64 in 0..<5 {
                tracker.processed(offset)
                #expect(tracker.watermark == offset)
                #expect(tracker.resumeOffset == offset + 1)
            }
            #expect(tracker.pendingCount == 0)
        }

        @Test func outOfOrderCompletionWaitsForTheOldestUnprocessedDelivery() {
            var tracker = StreamOffsetTracker(resumeAfter: 9)
            for offset: Int64 in 10...14 { tracker.delivered(offset) }
            tracker.processed(12)
            tracker.processed(14)
            tracker.processed(11)
            #expect(tracker.watermark == 9, "10 is still running")
            tracker.processed(10)
            #expect(tracker.watermark == 12, "13 is still running")
            tracker.processed(13)
            #expect(tracker.watermark == 14)
            #expect(tracker.pendingCount == 0)
        }

        @Test func gapsBetweenDeliveredOffsetsDoNotBlockTheWatermark() {
            // Started mid-stream after a stored 5, then retention gaps.
            var tracker = StreamOffsetTracker(resumeAfter: 5)
            tracker.delivered(100)
            tracker.delivered(250)
            tracker.delivered(251)
            tracker.delivered(900)
            tracker.processed(250)
            tracker.processed(900)
            #expect(tracker.watermark == 5, "100 is still running")
            tracker.processed(100)
            #expect(tracker.watermark == 250, "251 is still running; 101...249 were never delivered")
            tracker.processed(251)
            #expect(tracker.watermark == 900)
            #expect(tracker.resumeOffset == 901)
        }

        @Test func duplicateAndStaleDeliveriesAreIgnored() {
            var tracker = StreamOffsetTracker(resumeAfter: 3)
            tracker.delivered(2)
            tracker.delivered(3)
            #expect(tracker.pendingCount == 0, "at or below the watermark")
            tracker.delivered(4)
            tracker.delivered(5)
            tracker.delivered(4)
            tracker.delivered(5)
            #expect(tracker.pendingCount == 2, "already pending")
            tracker.processed(4)
            tracker.delivered(4)
            #expect(tracker.pendingCount == 1, "already processed")
            tracker.processed(4)
            tracker.processed(77)
            #expect(tracker.watermark == 4, "processing twice, or an unknown offset, changes nothing")
            tracker.processed(5)
            #expect(tracker.watermark == 5)
        }

        @Test func anAbandonedDeliveryBlocksTheWatermarkUntilTheConsumerIsResubscribed() {
            var tracker = StreamOffsetTracker(resumeAfter: nil)
            for offset: Int64 in 1...4 { tracker.delivered(offset) }
            tracker.abandoned(2)
            tracker.processed(1)
            tracker.processed(3)
            tracker.processed(4)
            #expect(tracker.watermark == 1)
            tracker.processed(2)
            #expect(tracker.watermark == 1, "an abandoned delivery stays blocking in this generation")
            #expect(tracker.pendingCount == 1)
            tracker.delivered(5)
            tracker.processed(5)
            #expect(tracker.watermark == 1)

            tracker.resubscribed()
            #expect(tracker.pendingCount == 0)
            #expect(tracker.resumeOffset == 2)
            // The new consumer reads 2 onwards again.
            for offset: Int64 in 2...5 { tracker.delivered(offset) }
            #expect(tracker.pendingCount == 4)
            for offset: Int64 in 2...5 { tracker.processed(offset) }
            #expect(tracker.watermark == 5)
        }

        @Test func resubscribedDropsPendingDeliveriesAndKeepsTheWatermark() {
            var tracker = StreamOffsetTracker(resumeAfter: nil)
            for offset: Int64 in 5...8 { tracker.delivered(offset) }
            tracker.processed(5)
            tracker.processed(7)
            tracker.resubscribed()
            #expect(tracker.watermark == 5)
            #expect(tracker.pendingCount == 0)
            tracker.processed(6)
            #expect(tracker.watermark == 5, "6 belonged to the previous consumer")
            tracker.delivered(5)
            #expect(tracker.pendingCount == 0, "5 is at the watermark")
            tracker.delivered(6)
            tracker.delivered(7)
            tracker.processed(7)
            #expect(tracker.watermark == 5, "6 is running again")
            tracker.processed(6)
            #expect(tracker.watermark == 7)
        }

        @Test func untrustedOffsetsNeverTrapNorMoveTheWatermarkBackwards() {
            var tracker = StreamOffsetTracker(resumeAfter: -5)
            #expect(tracker.watermark == nil, "a negative stored offset means nothing")
            tracker.delivered(-1)
            tracker.delivered(.min)
            #expect(tracker.pendingCount == 0)
            tracker.delivered(10)
            tracker.delivered(9)
            tracker.delivered(10)
            tracker.delivered(-10)
            #expect(tracker.pendingCount == 1, "non-increasing and negative offsets are ignored")
            tracker.processed(-1)
            tracker.processed(.min)
            tracker.abandoned(.min)
            tracker.processed(10)
            #expect(tracker.watermark == 10)
            tracker.delivered(.max - 1)
            tracker.delivered(.max)
            tracker.processed(.max)
            tracker.processed(.max - 1)
            #expect(tracker.watermark == .max)
            tracker.delivered(.max)
            tracker.delivered(11)
            #expect(tracker.pendingCount == 0)
            tracker.resubscribed()
            #expect(tracker.watermark == .max)
        }

        @Test func theResumeOffsetSaturatesAtInt64Max() {
            #expect(StreamOffsetTracker(resumeAfter: .max).resumeOffset == .max)
            #expect(StreamOffsetTracker(resumeAfter: .max - 1).resumeOffset == .max)
            #expect(StreamOffsetTracker(resumeAfter: 0).resumeOffset == 1)
        }

        /// Random gaps, a window of concurrent deliveries completing in random order, and
        /// resubscribes that abandon what is in flight, checked against a brute-force model: the
        /// watermark is the largest delivered offset below every unprocessed one.
        @Test(arguments: [1, 2, 3, 4] as [UInt64])
        func matchesABruteForceModelUnderRandomCompletionOrder(seed: UInt64) throws {
            var random = SplitMix64(seed: seed)
            let window = 16
            var tracker = StreamOffsetTracker(resumeAfter: nil)
            var modelWatermark: Int64?
            var delivered: [Int64] = []  // this generation, in order
            var unprocessed: Set<Int64> = []
            var inFlight: [Int64] = []
            var next: Int64 = Int64(random.next() % 100)
            for _ in 0..<5_000 {
                let roll = random.next() % 100
                if roll < 2 {
                    // The consumer ends: what is in flight is abandoned, then it resubscribes.
                    for offset in inFlight { tracker.abandoned(offset) }
                    tracker.resubscribed()
                    inFlight = []
                    unprocessed = []
                    delivered = []
                    next = modelWatermark.map { $0 + 1 } ?? next
                } else if inFlight.count < window, roll < 55 {
                    tracker.delivered(next)
                    delivered.append(next)
                    unprocessed.insert(next)
                    inFlight.append(next)
                    next += 1 + Int64(random.next() % 3)  // gaps of 0 to 2 offsets
                } else if !inFlight.isEmpty {
                    let offset = inFlight.remove(at: Int(random.next() % UInt64(inFlight.count)))
                    tracker.processed(offset)
                    unprocessed.remove(offset)
                    let oldest = unprocessed.min() ?? .max
                    if let candidate = delivered.last(where: { $0 < oldest }), candidate > (modelWatermark ?? -1) {
                        modelWatermark = candidate
                    }
                }
                // Stops at the first mismatch (the rest would only repeat it).
                try #require(tracker.watermark == modelWatermark)
                try #require(tracker.pendingCount == inFlight.count, "memory is bounded by the in-flight window")
            }
            #expect(modelWatermark != nil)
        }
    }

    // MARK: - Store

    /// A time source moved by hand.
    final class TestClock: Sendable {
        private let elapsed = Mutex<Duration>(.zero)
        var now: @Sendable () -> Duration { { self.elapsed.withLock { $0 } } }
        func advance(_ duration: Duration) { elapsed.withLock { $0 += duration } }
    }

    /// A fresh state directory, removed at the end of the test.
    static func withStateDirectory(_ body: (String) throws -> Void) rethrows {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-soff-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try body(directory)
    }

    static func contents(_ path: String) -> String? {
        FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) }
    }

    static func permissions(_ path: String) throws -> Int {
        try #require(FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
    }

    /// Plain percent-decoding of a name's components (a "%" ending a component marks a cut).
    static func decode(_ components: [String]) -> [UInt8]? {
        var text = components.dropLast().map { String($0.dropLast()) }.joined() + (components.last ?? "")
        if text == "%" { text = "" }
        var bytes: [UInt8] = []
        var utf8 = Array(text.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "%") {
                guard utf8.count >= 2, let value = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16) else { return nil }
                bytes.append(value)
                utf8 = utf8.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return bytes
    }

    @Suite struct Store {
        @Test func aWrittenWatermarkIsLoadedByTheNextStoreWithDurableFileModes() throws {
            try withStateDirectory { (directory: String) throws in
                let store = StreamOffsetStore(directory: directory, queue: "orders.stream", vhost: "/", flushEvery: 1, flushInterval: .seconds(1))
                #expect(try store.load() == nil, "no file yet")
                #expect(try store.record(42))
                #expect(store.path == directory + "/stream-offsets/%2F/orders.stream")
                #expect(contents(store.path) == "42\n")
                #expect(try permissions(store.path) & ~0o640 == 0)
                #expect(try permissions(store.directory) & ~0o750 == 0)
                #expect(!FileManager.default.fileExists(atPath: store.directory + "/.orders.stream.tmp"), "the temporary file was renamed")

                let restarted = StreamOffsetStore(directory: directory, queue: "orders.stream", vhost: "/", flushEvery: 1, flushInterval: .seconds(1))
                #expect(try restarted.load() == 42)
                try restarted.flush(.max)
                #expect(try StreamOffsetStore(directory: directory, queue: "orders.stream", vhost: "/", flushEvery: 1, flushInterval: .seconds(1)).load() == .max)
            }
        }

        @Test func hostileNamesBecomeDistinctSafeFileNamesThatDecodeBack() throws {
            let long = String(repeating: "é", count: 127) + "x"  // 255 bytes, 766 encoded
            let names = [
                "../x", "a/b", "", ".", "..", "...", ".hidden", "%", "%25", "%2E", "a%2Fb", "\u{1}\u{7F}\u{FFFF}ü",
                String(repeating: "q", count: 255), String(repeating: "/", count: 255), long, "x.tmp", "x",
            ]
            var paths: Set<String> = []
            for name in names {
                let components = StreamOffsetStore.components(name)
                for component in components {
                    #expect(!component.isEmpty && component != "." && component != "..")
                    #expect(!component.hasPrefix("."), "no hidden files, apart from temporary ones")
                    #expect(!component.contains("/"))
                    #expect(component.utf8.count <= StreamOffsetStore.longestComponent, "room for the temporary name within NAME_MAX")
                    #expect(component.utf8.allSatisfy { $0 < 0x80 })
                }
                #expect(decode(components) == Array(name.utf8), "\(name) -> \(components)")
                let (directory, file) = StreamOffsetStore.location(directory: "/state", queue: name, vhost: name)
                #expect(directory.hasPrefix("/state/stream-offsets/"))
                paths.insert(directory + "/" + file)
            }
            #expect(paths.count == names.count, "no two names share a file")
            // Every path component of a cut encoding but the last ends with "%", which no whole
            // encoding does: a cut name's directory is never another name's file.
            #expect(StreamOffsetStore.components(long).dropLast().allSatisfy { $0.hasSuffix("%") })
            #expect(StreamOffsetStore.components(long).count > 1)

            try withStateDirectory { (directory: String) throws in
                for name in names {
                    let store = StreamOffsetStore(directory: directory, queue: name, vhost: name, flushEvery: 1, flushInterval: .seconds(1))
                    try store.flush(7)
                    #expect(try StreamOffsetStore(directory: directory, queue: name, vhost: name, flushEvery: 1, flushInterval: .seconds(1)).load() == 7)
                    let real = URL(fileURLWithPath: store.path).resolvingSymlinksInPath().standardizedFileURL.path
                    #expect(real.hasPrefix(directory + "/stream-offsets/"))
                }
                // Nothing was written outside stream-offsets/.
                #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["stream-offsets"])
            }
        }

        @Test func recordWritesAfterFlushEveryRecords() throws {
            try withStateDirectory { (directory: String) throws in
                let clock = TestClock()
                let store = StreamOffsetStore(directory: directory, queue: "q", vhost: "v", flushEvery: 3, flushInterval: .seconds(3600), now: clock.now)
                #expect(try store.record(1) == false)
                #expect(try store.record(2) == false)
                #expect(contents(store.path) == nil)
                #expect(try store.record(3) == true)
                #expect(contents(store.path) == "3\n")
                #expect(try store.record(4) == false)
                #expect(try store.record(5) == false)
                #expect(try store.record(6) == true)
                #expect(contents(store.path) == "6\n")
            }
        }

        @Test func recordWritesOnceFlushIntervalPassedSinceTheLastWrite() throws {
            try withStateDirectory { (directory: String) throws in
                let clock = TestClock()
                let store = StreamOffsetStore(directory: directory, queue: "q", vhost: "v", flushEvery: 1000, flushInterval: .seconds(1), now: clock.now)
                #expect(try store.record(1) == false)
                clock.advance(.milliseconds(999))
                #expect(try store.record(2) == false)
                clock.advance(.milliseconds(1))
                #expect(try store.record(3) == true)
                #expect(contents(store.path) == "3\n")
                clock.advance(.milliseconds(500))
                #expect(try store.record(4) == false, "the interval counts from the last write")
                clock.advance(.milliseconds(500))
                #expect(try store.record(5) == true)
                #expect(contents(store.path) == "5\n")
            }
        }

        @Test func anUnchangedWatermarkIsNotWrittenAgain() throws {
            try withStateDirectory { (directory: String) throws in
                let clock = TestClock()
                let store = StreamOffsetStore(directory: directory, queue: "q", vhost: "v", flushEvery: 1, flushInterval: .seconds(1), now: clock.now)
                #expect(try store.record(nil) == false, "nothing processed yet: nothing to write")
                #expect(try store.record(8) == true)
                // Removing the file shows whether anything writes it again.
                try FileManager.default.removeItem(atPath: store.path)
                clock.advance(.seconds(5))
                #expect(try store.record(8) == false)
                try store.flush(8)
                try store.flush(nil)
                #expect(contents(store.path) == nil)

                // A loaded value counts as stored.
                try Data("9\n".utf8).write(to: URL(fileURLWithPath: store.path))
                let restarted = StreamOffsetStore(directory: directory, queue: "q", vhost: "v", flushEvery: 1, flushInterval: .seconds(1), now: clock.now)
                #expect(try restarted.load() == 9)
                try FileManager.default.removeItem(atPath: store.path)
                #expect(try restarted.record(9) == false)
                #expect(contents(store.path) == nil)
                // A changed value is written by flush whatever the counters say.
                let patient = StreamOffsetStore(directory: directory, queue: "q", vhost: "v", flushEvery: 1000, flushInterval: .seconds(3600), now: clock.now)
                #expect(try patient.record(10) == false)
                try patient.flush(10)
                #expect(contents(store.path) == "10\n")
            }
        }

        @Test(arguments: ["", "\n", "abc", "12x", "-1", "+1", " 1", "1 ", "1\n\n", "1\r\n", "9223372036854775808", "99999999999999999999999", "\u{0}"])
        func aCorruptFileThrowsAnErrorNamingThePath(content: String) throws {
            try withStateDirectory { (directory: String) throws in
                let store = StreamOffsetStore(directory: directory, queue: "q", vhost: "v", flushEvery: 1, flushInterval: .seconds(1))
                try FileManager.default.createDirectory(atPath: store.directory, withIntermediateDirectories: true)
                try Data(content.utf8).write(to: URL(fileURLWithPath: store.path))
                let error = try #require(throws: StreamOffsetStore.StoreError.self) { try store.load() }
                #expect(error.code == .corruptFile)
                #expect(error.path == store.path)
                #expect(error.description.contains(store.path))
            }
        }

        @Test func validContentAcceptsTheWholeInt64Range() {
            #expect(StreamOffsetStore.parse(Array("0".utf8)) == 0)
            #expect(StreamOffsetStore.parse(Array("9223372036854775807\n".utf8)) == .max)
            #expect(StreamOffsetStore.parse(Array("0042".utf8)) == 42)
        }

        @Test func aWriteUnderARegularFileThrowsWithThePathAndTheNextWriteRetries() throws {
            try withStateDirectory { (directory: String) throws in
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                // The state directory's stream-offsets/ is a regular file.
                try Data("not a directory".utf8).write(to: URL(fileURLWithPath: directory + "/stream-offsets"))
                let store = StreamOffsetStore(directory: directory, queue: "q", vhost: "v", flushEvery: 1, flushInterval: .seconds(1))
                let error = try #require(throws: StreamOffsetStore.StoreError.self) { try store.record(5) }
                #expect(error.code == .io)
                #expect(error.path.hasPrefix(directory + "/stream-offsets"))
                #expect(error.description.contains(String(cString: strerror(ENOTDIR))))
                #expect(throws: StreamOffsetStore.StoreError.self) { try store.flush(5) }
                let loadError = try #require(throws: StreamOffsetStore.StoreError.self) { try store.load() }
                #expect(loadError.code == .io)

                // Once the directory can be made, the same value is written.
                try FileManager.default.removeItem(atPath: directory + "/stream-offsets")
                #expect(try store.record(5) == true)
                #expect(contents(store.path) == "5\n")
            }
        }
    }
}
