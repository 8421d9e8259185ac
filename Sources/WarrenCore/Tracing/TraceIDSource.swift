import Synchronization
import W3CTraceContext

/// Where trace and span ids come from: SplitMix64 over one process-wide counter, seeded once
/// from the system's generator. A delivery needs up to three 64-bit values (a new trace and its
/// span) plus one per handler run; the system generator costs a system call for each, this an
/// atomic add and a few multiplications, from any thread, with no lock.
///
/// SplitMix64 is a bijection of its counter, so no two ids of one process repeat before 2^64
/// draws, and each process starts at a random point. The ids identify, they do not protect: like
/// every fast generator it can be predicted from its output, which is all W3C asks of them
/// (unique, random-looking, and never all zero).
struct TraceIDSource: RandomNumberGenerator {
    private static let counter = Atomic<UInt64>(UInt64.random(in: .min ... .max))
    private static let gamma: UInt64 = 0x9E37_79B9_7F4A_7C15
    /// Counter steps one source takes at a time: a new trace and its span take three draws,
    /// which then cost one atomic add rather than three. Blocks of different sources never
    /// overlap, so the values stay those of one counter, each used once.
    private static let block: UInt64 = 3

    private var state: UInt64 = 0
    private var left: UInt64 = 0

    init() {}

    mutating func next() -> UInt64 {
        if left == 0 {
            state = Self.counter.wrappingAdd(Self.gamma &* Self.block, ordering: .relaxed).oldValue
            left = Self.block
        }
        state &+= Self.gamma
        left -= 1
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A random trace id, never all zero (an all-zero id is invalid).
    static func traceID(using generator: inout some RandomNumberGenerator) -> TraceID {
        while true {
            let high = generator.next()
            let low = generator.next()
            if high != 0 || low != 0 { return TraceHeaderValue.traceID(high: high, low: low) }
        }
    }

    /// A random span id, never all zero.
    static func spanID(using generator: inout some RandomNumberGenerator) -> SpanID {
        while true {
            let value = generator.next()
            if value != 0 { return TraceHeaderValue.spanID(value) }
        }
    }
}
