import W3CTraceContext

/// Which traces get spans (docs/tracing.md, "Sampling"): the decision warren takes before it
/// creates any, so an unsampled delivery costs what propagation alone costs.
///
/// The OpenTelemetry samplers of `OTEL_TRACES_SAMPLER`: a root decision (always, never, or a
/// share of trace ids) and, for the `parentbased_*` ones, a sampled or unsampled parent followed
/// as it is. Without `[tracing]` every trace warren starts is flagged sampled (it records nothing;
/// the flag is what the next service sees), as `TraceSampler()` says.
public struct TraceSampler: Sendable, Hashable, CustomStringConvertible {
    /// The decision for a trace without a parent (and for every trace when `followsParent` is
    /// false).
    public enum Root: Sendable, Hashable {
        case always
        case never
        /// Sampled when the trace id's last 8 bytes, read as an unsigned number, are below
        /// `ratio × 2^64`: the same trace id gets the same answer in every process that uses
        /// this rule, so a trace is never cut in the middle by two warrens.
        case ratio(Double)
    }

    public var root: Root
    /// A `traceparent`'s sampled flag is followed (the `parentbased_*` samplers).
    public var followsParent: Bool

    public init(root: Root = .always, followsParent: Bool = true) {
        self.root = root
        self.followsParent = followsParent
    }

    /// `[tracing] sample_ratio`: parent-based, a ratio for the traces warren starts.
    public static func parentBased(ratio: Double) -> TraceSampler {
        TraceSampler(root: ratio >= 1 ? .always : ratio <= 0 ? .never : .ratio(ratio), followsParent: true)
    }

    /// Whether a trace warren starts (no parent) is sampled.
    public func samples(newTrace traceID: TraceID) -> Bool {
        switch root {
        case .always: return true
        case .never: return false
        case .ratio(let ratio):
            // The bound is computed in Double and clamped: ratio × 2^64 may round up to 2^64,
            // which no UInt64 holds.
            let bound = ratio * 18_446_744_073_709_551_616.0
            guard bound < 18_446_744_073_709_551_615.0 else { return true }
            guard bound > 0 else { return false }
            return Self.low64(traceID) < UInt64(bound)
        }
    }

    /// Whether the spans of a delivery in `trace` are recorded: a remote parent's flag when the
    /// sampler follows parents, else the root decision on the trace id.
    func samples(_ trace: MessageTrace) -> Bool {
        // A trace started here was flagged by this sampler when it was drawn.
        if !trace.isRemote || followsParent { return trace.flags.contains(.sampled) }
        return samples(newTrace: trace.traceID)
    }

    /// The sampler's `OTEL_TRACES_SAMPLER` name, with its ratio.
    public var description: String {
        let prefix = followsParent ? "parentbased_" : ""
        switch root {
        case .always: return prefix + "always_on"
        case .never: return prefix + "always_off"
        case .ratio(let ratio): return prefix + "traceidratio(\(ratio))"
        }
    }

    /// The trace id's last 8 bytes, big-endian.
    static func low64(_ traceID: TraceID) -> UInt64 {
        withUnsafeBytes(of: traceID.bytes) { raw in
            var value: UInt64 = 0
            for byte in raw.suffix(8) { value = value << 8 | UInt64(byte) }
            return value
        }
    }
}
