import Foundation

/// Durations and sizes as the configuration writes them: `"250ms"`, `"5s"`, `"1m30s"`, `"1h"`;
/// `"64KiB"`, `"16MiB"`. A bare number is refused: a unit-less `30` is ambiguous.
enum DurationText {
    private static let units: [(suffix: String, milliseconds: Double)] = [
        ("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000),
    ]

    /// `nil` when the text is not a non-negative duration with units.
    static func parse(_ text: String) -> Duration? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty, !trimmed.hasPrefix("-") else { return nil }
        var rest = Substring(trimmed)
        var total = 0.0
        while !rest.isEmpty {
            let number = rest.prefix { $0.isNumber || $0 == "." }
            guard !number.isEmpty, let value = Double(number) else { return nil }
            rest = rest.dropFirst(number.count)
            let unitText = rest.prefix { $0.isLetter }
            // "ms" before "m": match the whole run of letters exactly.
            guard let unit = units.first(where: { $0.suffix == unitText }) else { return nil }
            rest = rest.dropFirst(unitText.count)
            total += value * unit.milliseconds
        }
        guard total.isFinite, total < 1e15 else { return nil }
        return .microseconds(Int64((total * 1000).rounded()))
    }
}

enum SizeText {
    private static let units: [(suffix: String, bytes: Double)] = [
        ("B", 1), ("KiB", 1024), ("MiB", 1024 * 1024), ("GiB", 1024 * 1024 * 1024),
        ("KB", 1000), ("MB", 1_000_000), ("GB", 1_000_000_000),
    ]

    static func parse(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let number = trimmed.prefix { $0.isNumber || $0 == "." }
        let unitText = trimmed.dropFirst(number.count).trimmingCharacters(in: .whitespaces)
        guard !number.isEmpty, let value = Double(number), let unit = units.first(where: { $0.suffix == unitText }) else {
            return nil
        }
        let bytes = value * unit.bytes
        guard bytes.isFinite, bytes < 1e15 else { return nil }
        return Int(bytes.rounded())
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    /// The shortest exact form: `1s`, `2m`, `1500ms`, `1h`. Used in retry queue names.
    public var configText: String {
        let ms = milliseconds
        for (suffix, unit) in [("d", Int64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] where ms % unit == 0 && ms >= unit {
            return "\(ms / unit)\(suffix)"
        }
        return "\(ms)ms"
    }
}
