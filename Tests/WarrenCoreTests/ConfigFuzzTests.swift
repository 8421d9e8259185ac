import Foundation
import TestSupport
import Testing

@testable import WarrenCore

/// The repository's `config/` directory, found from this file's own path.
enum RepositoryConfigs {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // WarrenCoreTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // package root
        .appendingPathComponent("config")

    static var referencePath: String { directory.appendingPathComponent("warren.reference.toml").path }
    static var examplePath: String { directory.appendingPathComponent("warren.example.toml").path }
}

/// SplitMix64: small, fast, and the same sequence on every machine.


/// Byte- and line-level mutations of a configuration file.
struct ConfigMutator {
    var random: SplitMix64

    /// Fragments that tend to reach the corners of the TOML lexer and of the schema.
    static let fragments: [String] = [
        "[", "]", "[[", "]]", "{", "}", "\"", "'", "\"\"\"", "'''", "=", ",", ".", "#", "\\", "\\u", "\n", "\r", "\t", " ",
        "0", "-1", "1e309", "99999999999999999999", "inf", "nan", "true", "0x", "1979-05-27T07:32:00Z", "${", "${WARREN_X}",
        "$${", "}", "%h", "%2f", "://", "@", "ms", "KiB", "\u{FEFF}", "\u{0}", "é", "🐇", "a.b.c", "\"x-queue-type\"",
    ]

    init(seed: UInt64) { random = SplitMix64(seed: seed) }

    mutating func int(_ bound: Int) -> Int { bound <= 0 ? 0 : Int.random(in: 0..<bound, using: &random) }

    mutating func mutate(_ input: [UInt8]) -> [UInt8] {
        var bytes = input
        for _ in 0..<(1 + int(3)) {  // 1 to 3 mutations, so most files stay close to valid
            apply(&bytes)
        }
        return bytes
    }

    mutating func apply(_ bytes: inout [UInt8]) {
        switch int(10) {
        case 0:  // flip one bit
            guard !bytes.isEmpty else { return }
            bytes[int(bytes.count)] ^= UInt8(1 << int(8))
        case 1:  // replace a byte with any byte
            guard !bytes.isEmpty else { return }
            bytes[int(bytes.count)] = UInt8(truncatingIfNeeded: random.next())
        case 2:  // insert a byte
            bytes.insert(UInt8(truncatingIfNeeded: random.next()), at: int(bytes.count + 1))
        case 3:  // delete a run of bytes
            guard !bytes.isEmpty else { return }
            let start = int(bytes.count)
            bytes.removeSubrange(start..<min(bytes.count, start + 1 + int(8)))
        case 4:  // insert a fragment
            let fragment = Array(Self.fragments[int(Self.fragments.count)].utf8)
            bytes.insert(contentsOf: fragment, at: int(bytes.count + 1))
        case 5, 6, 7:  // line operations: drop, duplicate or swap lines
            var starts = [0]
            for index in bytes.indices where bytes[index] == 0x0A { starts.append(index + 1) }
            let count = starts.count
            // Line k, with its newline when it has one.
            func line(_ k: Int) -> Range<Int> { starts[k]..<(k + 1 < count ? starts[k + 1] : bytes.count) }
            let i = int(count)
            switch int(3) {
            case 0:
                bytes.removeSubrange(line(i))
            case 1:
                var copy = Array(bytes[line(i)])
                if copy.last != 0x0A { copy.append(0x0A) }
                bytes.insert(contentsOf: copy, at: starts[int(count)])
            default:
                let j = int(count)
                let (a, b) = (min(i, j), max(i, j))
                guard a != b else { return }
                var first = Array(bytes[line(a)])
                var second = Array(bytes[line(b)])
                let firstEnds = first.last == 0x0A
                let secondEnds = second.last == 0x0A
                if firstEnds { first.removeLast() }
                if secondEnds { second.removeLast() }
                bytes.replaceSubrange(line(b), with: first + (secondEnds ? [0x0A] : []))
                bytes.replaceSubrange(line(a), with: second + (firstEnds ? [0x0A] : []))
            }
        case 8:  // truncate
            bytes.removeSubrange(int(bytes.count + 1)...)
        default:  // overwrite a value: everything after the first `=` from a random place up to the line end
            guard let equals = bytes[int(bytes.count)...].firstIndex(of: UInt8(ascii: "=")) else { return }
            let at = equals + 1
            let end = bytes[at...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.endIndex
            let fragment = Array((" " + Self.fragments[int(Self.fragments.count)]).utf8)
            bytes.replaceSubrange(at..<end, with: fragment)
        }
    }
}

/// Inputs that abort the process inside TOMLKit's bundled toml++ 3.4.0 (failed
/// `TOML_ASSERT_ASSUME` preconditions; exit 134 in a debug build). The loader does not guard
/// against them yet (see `KnownLoaderBugTests`), so the fuzzer sets these inputs aside instead of
/// dying on them. Both checks deliberately over-approximate.
enum KnownTOMLCrash {
    static func hits(_ source: [UInt8]) -> Bool {
        hitsHeaderAssertion(source) || hitsArrayValueAssertion(source, skippingComments: true)
            || hitsArrayValueAssertion(source, skippingComments: false)
    }

    private static func isBlank(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 }

    /// `parse_key()`: a table header whose first character after `[` or `[[` is neither a
    /// bare-key character nor a quote (`[!a]`, `[[=`, `[[[a]]]`, `[` at the end of a line);
    /// upstream marzer/tomlplusplus#301.
    static func hitsHeaderAssertion(_ source: [UInt8]) -> Bool {
        var i = 0
        while i < source.count {
            // At the start of a line.
            while i < source.count, isBlank(source[i]) { i += 1 }
            if i < source.count, source[i] == UInt8(ascii: "[") {
                i += 1
                if i < source.count, source[i] == UInt8(ascii: "[") { i += 1 }
                while i < source.count, isBlank(source[i]) { i += 1 }
                guard i < source.count else { return true }
                let c = source[i]
                let isBare = (0x61...0x7A).contains(c) || (0x41...0x5A).contains(c) || (0x30...0x39).contains(c) || c == 0x5F || c == 0x2D
                if !(isBare || c == 0x22 || c == 0x27 || c == 0x5D) { return true }
            }
            while i < source.count, source[i] != 0x0A { i += 1 }
            i += 1
        }
        return false
    }

    /// `parse_value()`: an array element that starts with `}` (`x = [}]`, `x = [1, }]`).
    static func hitsArrayValueAssertion(_ source: [UInt8], skippingComments: Bool) -> Bool {
        var previous: UInt8 = 0
        var inComment = false
        for c in source {
            if inComment {
                if c == 0x0A { inComment = false }
                continue
            }
            if skippingComments && c == UInt8(ascii: "#") {
                inComment = true
                continue
            }
            if c == 0x20 || c == 0x09 || c == 0x0D || c == 0x0A { continue }
            if c == UInt8(ascii: "}") && (previous == UInt8(ascii: "[") || previous == UInt8(ascii: ",")) { return true }
            previous = c
        }
        return false
    }
}

@Suite("Configuration fuzzing")
struct ConfigFuzzTests {
    /// Mutations actually fed to the loader (inputs of `KnownTOMLCrash` do not count).
    static let iterations = ProcessInfo.processInfo.environment["CONFIG_FUZZ_ITERATIONS"].flatMap { Int($0) } ?? 3_000
    /// Set to false once the loader guards against the toml++ assertion.
    static let setAsideKnownTOMLCrash = false

    /// What parsing one mutated file came to.
    enum Outcome: Sendable {
        case accepted
        case refused
        /// Refused without issues, or with an issue positioned outside the file.
        case unpositioned(String)
    }

    /// CPU time of the calling thread: wall-clock time says little on a loaded machine.
    static func threadCPUSeconds() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    static func parse(_ source: String) -> Outcome {
        do {
            _ = try ConfigurationLoader.parse(
                source: source, file: "fuzz.toml", environment: ["PATH": "/usr/bin:/bin"], checks: FakeMachine.permissive)
            return .accepted
        } catch {
            let lineCount = source.split(separator: "\n", omittingEmptySubsequences: false).count
            let bad = error.issues.isEmpty
                || error.issues.contains { $0.position.line < 1 || $0.position.column < 1 || $0.position.line > lineCount + 1 }
            return bad ? .unpositioned(error.description) : .refused
        }
    }

    /// What one fuzzing run saw.
    struct FuzzRun: Sendable {
        var inputs: [String] = []
        var outcomes: [(Int, Outcome)] = []
        var setAside = 0
    }

    @Test func mutatedReferenceConfigsAreAcceptedOrRefusedWithPositionsNeverCrash() async throws {
        let reference = try String(contentsOfFile: RepositoryConfigs.referencePath, encoding: .utf8)
        // The unmutated file is valid: the mutations are what makes the files bad.
        #expect(Self.parse(reference).isAccepted)

        // Seconds of CPU-bound work: on a thread of its own, not on the cooperative pool that
        // the suites running beside this one need (and expectations are checked back here, in
        // the test's task).
        let run = await offPool { Self.fuzz(reference) }
        let (inputs, outcomes, setAside) = (run.inputs, run.outcomes, run.setAside)

        var accepted = 0
        var refused = 0
        var failures = 0
        for (index, outcome) in outcomes {
            switch outcome {
            case .accepted: accepted += 1
            case .refused: refused += 1
            case .unpositioned(let description):
                failures += 1
                if failures <= 5 {
                    Issue.record("mutation \(index): issues without a usable position:\n\(description)\n--- input ---\n\(inputs[index])")
                }
            }
        }
        #expect(failures == 0)
        #expect(outcomes.count == inputs.count)
        #expect(inputs.count >= 3_000)
        #expect(setAside < Self.iterations / 10)
        // Both outcomes occur, so the mutations neither all break nor all miss the file.
        #expect(refused > Self.iterations / 3)
        #expect(accepted > 10)
    }

    /// Generates the mutated inputs and parses each one (blocking, CPU-bound).
    static func fuzz(_ reference: String) -> FuzzRun {
        // The inputs, generated in sequence from one seed, so every run feeds the same files.
        let original = Array(reference.utf8)
        let seed = ProcessInfo.processInfo.environment["CONFIG_FUZZ_SEED"].flatMap { UInt64($0) } ?? 0x5741_5252_454E  // "WARREN"
        var mutator = ConfigMutator(seed: seed)
        let generationStart = ContinuousClock.now
        let generationCPU = threadCPUSeconds()
        var inputs: [String] = []
        var setAside = 0
        while inputs.count < iterations {
            let bytes = mutator.mutate(original)
            if setAsideKnownTOMLCrash && KnownTOMLCrash.hits(bytes) {
                setAside += 1
            } else {
                inputs.append(String(decoding: bytes, as: UTF8.self))
            }
        }
        let generation = ContinuousClock.now - generationStart
        let parseCPU = threadCPUSeconds()

        // One after the other: in parallel they would only compete with the timing-sensitive
        // tests that run alongside.
        let clock = ContinuousClock()
        let start = clock.now
        let outcomes = inputs.enumerated().map { ($0.offset, parse($0.element)) }
        let elapsed = clock.now - start
        let endCPU = threadCPUSeconds()
        let refused = outcomes.filter { if case .refused = $0.1 { true } else { false } }.count
        let accepted = outcomes.filter { $0.1.isAccepted }.count
        print("config fuzz: \(inputs.count) mutations generated in \(generation) (CPU \(parseCPU - generationCPU) s), parsed in \(elapsed) (CPU \(endCPU - parseCPU) s): \(accepted) accepted, \(refused) refused, \(setAside) set aside (known toml++ crashes)")
        return FuzzRun(inputs: inputs, outcomes: outcomes, setAside: setAside)
    }

    @Test func mutationsAreDeterministic() {
        let input = Array("[broker]\nurl = \"amqp://rabbit\"\n".utf8)
        var a = ConfigMutator(seed: 42)
        var b = ConfigMutator(seed: 42)
        for _ in 0..<50 {
            #expect(a.mutate(input) == b.mutate(input))
        }
    }
}

extension ConfigFuzzTests.Outcome {
    var isAccepted: Bool {
        if case .accepted = self { return true }
        return false
    }
}
