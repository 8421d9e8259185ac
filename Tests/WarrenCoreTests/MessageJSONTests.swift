import Foundation
import TestSupport
import Testing

@testable import WarrenCore

/// `MessageJSON`'s serializer against `JSONEncoder` (the reference it replaces on the hot path):
/// byte for byte the same text for the same value, with sorted keys.
@Suite struct MessageJSONTests {
    static func reference(_ value: MessageJSON.Value) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(value))
    }

    static let awkwardStrings = [
        "", "plain", "quote \" and backslash \\", "slash / stays", "tab\tnew\nline\rret", "\u{08}\u{0C}\u{00}\u{1F}\u{7F}",
        "é ü 日本 🐇", "\u{2028}\u{2029}", "{\"json\": [1, 2]}",
    ]

    static func randomValue(_ rng: inout SplitMix64, depth: Int = 0) -> MessageJSON.Value {
        let pick = Int(rng.next() % (depth > 2 ? 6 : 8))
        switch pick {
        case 0: return .null
        case 1: return .bool(rng.next() % 2 == 0)
        case 2: return .int(Int64(bitPattern: rng.next()) >> Int64(rng.next() % 60))
        case 3: return .uint(rng.next() >> (rng.next() % 60))
        case 4:
            let doubles: [Double] = [0, -0.0, 1, 3.0, -2.5, 0.1, 1e20, 1e-7, 123456789.125, Double(Int64(rng.next() % 1000)) / 8]
            return .double(doubles[Int(rng.next() % UInt64(doubles.count))])
        case 5: return .string(awkwardStrings[Int(rng.next() % UInt64(awkwardStrings.count))])
        case 6: return .array((0..<Int(rng.next() % 4)).map { _ in randomValue(&rng, depth: depth + 1) })
        default:
            var object: [String: MessageJSON.Value] = [:]
            for _ in 0..<Int(rng.next() % 5) {
                object[awkwardStrings[Int(rng.next() % UInt64(awkwardStrings.count))] + "\(rng.next() % 10)"] = randomValue(&rng, depth: depth + 1)
            }
            return .object(object)
        }
    }

    @Test func writesWhatJSONEncoderWritesForEveryKindOfValue() throws {
        var rng = SplitMix64(seed: 0x4a53_4f4e)
        for _ in 0..<2000 {
            let value = Self.randomValue(&rng)
            let ours = try MessageJSON.encode(value, sortedKeys: true)
            let theirs = try Self.reference(value)
            #expect(ours == theirs, "\(String(decoding: ours, as: UTF8.self)) != \(String(decoding: theirs, as: UTF8.self))")
            if ours != theirs { break }
        }
    }

    @Test func unsortedOutputParsesToTheSameObject() throws {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<200 {
            let value = MessageJSON.Value.object(["a": Self.randomValue(&rng), "b": Self.randomValue(&rng), "c": .string("x/y")])
            let unsorted = try MessageJSON.encode(value, sortedKeys: false)
            let parsed = try JSONSerialization.jsonObject(with: Data(unsorted)) as? NSDictionary
            let expected = try JSONSerialization.jsonObject(with: Data(try Self.reference(value))) as? NSDictionary
            #expect(parsed == expected)
        }
    }

    @Test func nonFiniteNumbersAreRefusedAndHeadersFallBackToAnEmptyObject() {
        #expect(throws: MessageJSON.NonFiniteNumber.self) { try MessageJSON.encode(.double(.nan), sortedKeys: false) }
        #expect(throws: MessageJSON.NonFiniteNumber.self) { try MessageJSON.encode(.array([.double(.infinity)]), sortedKeys: true) }
        #expect(MessageJSON.headersJSON(["x": .double(.nan)]) == Array("{}".utf8))
    }
}
