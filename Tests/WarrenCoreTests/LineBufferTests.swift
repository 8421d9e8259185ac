import Testing

@testable import WarrenCore

@Suite("Splitting a byte stream into lines")
struct LineBufferTests {
    static func text(_ lines: [LineBuffer.Line]) -> [String] { lines.map { String(decoding: $0.bytes, as: UTF8.self) } }

    @Test func linesAreFoundWhateverTheChunkBoundaries() {
        let stream = Array("first\nsecond line\r\n\nfourth\n".utf8)
        for size in 1...stream.count {
            var buffer = LineBuffer(limit: 100, mode: .failing)
            var lines: [LineBuffer.Line] = []
            var offset = 0
            while offset < stream.count {
                lines += buffer.append(stream[offset..<min(offset + size, stream.count)])
                offset += size
            }
            #expect(Self.text(lines) == ["first", "second line", "", "fourth"], "chunk size \(size)")
            #expect(buffer.finish() == nil)
        }
    }

    @Test func theLastLineWithoutANewlineComesAtTheEnd() {
        var buffer = LineBuffer(limit: 100, mode: .truncating)
        #expect(Self.text(buffer.append(Array("a\nb".utf8))) == ["a"])
        #expect(buffer.finish().map { String(decoding: $0.bytes, as: UTF8.self) } == "b")
    }

    @Test func truncatingModeKeepsTheHeadOfALongLineAndGoesOn() {
        var buffer = LineBuffer(limit: 4, mode: .truncating)
        let lines = buffer.append(Array("abcdefgh".utf8)) + buffer.append(Array("ij\nok\n".utf8))
        #expect(lines == [LineBuffer.Line(bytes: Array("abcd".utf8), truncated: true), LineBuffer.Line(bytes: Array("ok".utf8))])
    }

    @Test func failingModeStopsAtTheFirstOverlongLine() {
        var buffer = LineBuffer(limit: 4, mode: .failing)
        #expect(Self.text(buffer.append(Array("ok\ntoo long\nafter\n".utf8))) == ["ok"])
        #expect(buffer.overflowed)
        #expect(buffer.append(Array("more\n".utf8)).isEmpty)
        #expect(buffer.finish() == nil)
    }

    @Test func aLineExactlyAtTheLimitIsAccepted() {
        var buffer = LineBuffer(limit: 4, mode: .failing)
        #expect(Self.text(buffer.append(Array("abcd\n".utf8))) == ["abcd"])
        #expect(!buffer.overflowed)
    }
}
