import Foundation

/// A temporary directory for one test (its scripts, workers and output files), removed when the
/// test's suite instance goes away.
public final class ScratchDirectory: Sendable {
    public let path: String

    public init(_ purpose: String) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("warren-\(purpose)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Writes `contents` to `name` inside the directory; returns its path.
    public func file(_ name: String, _ contents: String) throws -> String {
        let file = "\(path)/\(name)"
        try contents.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    /// An executable `#!/bin/sh` script of `body`, under a fresh name; returns its path.
    public func script(_ body: String) throws -> String {
        let file = "\(path)/\(UUID().uuidString).sh"
        try writeExecutable("#!/bin/sh\n\(body)\n", to: file)
        return file
    }
}
