import Logging
import Subprocess

/// A worker's stderr: each line becomes one warning in warren's log (capped, so a worker that
/// dumps a huge blob cannot flood it), and the last bytes are kept for the failure of the
/// requests in flight when the worker dies (a Python traceback, typically), as SPEC §4's
/// `x-warren-stderr-tail`.
struct PipeStderr {
    let handler: String
    let index: Int
    let pid: Int32
    let logger: Logger

    /// Longest line logged; the rest of a longer line is dropped (the entry says so).
    static let maxLineBytes = 4096
    /// How much of the end of stderr a failure carries.
    static let tailBytes = 2048

    /// Reads stderr to its end (or until the process has gone, or the task is cancelled) and
    /// returns its last `tailBytes` bytes.
    func drain(_ errors: SubprocessOutputSequence) async -> String {
        var lines = LineBuffer(limit: Self.maxLineBytes, mode: .truncating)
        var tail: [UInt8] = []
        do {
            for try await chunk in errors {
                chunk.withUnsafeBytes { bytes in
                    tail.append(contentsOf: bytes.suffix(Self.tailBytes))
                    if tail.count > Self.tailBytes { tail.removeFirst(tail.count - Self.tailBytes) }
                    for line in lines.append(bytes) { log(line) }
                }
            }
        } catch {
            // The stream ended with an error: what was read is all there is.
        }
        if let last = lines.finish() { log(last) }
        return String(decoding: tail, as: UTF8.self)
    }

    private func log(_ line: LineBuffer.Line) {
        guard !line.bytes.isEmpty || line.truncated else { return }
        var metadata: Logger.Metadata = [
            LogKeys.handler: "\(handler)", LogKeys.worker: "\(index)", LogKeys.pid: "\(pid)",
            "line": "\(String(decoding: line.bytes, as: UTF8.self))",
        ]
        if line.truncated { metadata["truncated"] = "true" }
        logger.warning("pipe worker stderr", metadata: metadata)
    }
}
