import AMQP
import Glibc

/// `WARREN_HEADERS` within a byte budget. The headers come from the message, so without a cap a
/// producer could make `posix_spawn` fail with E2BIG (Linux refuses one string over 128 KiB,
/// and an environment plus arguments over a quarter of the stack limit) and every run of the
/// message fail the same way.
///
/// When the JSON object does not fit, it is cut at entry boundaries: header entries are taken in
/// key order and an entry that would not fit is left out whole, so the value is always a valid
/// JSON object and every header in it is complete. `WARREN_HEADERS_OMITTED` tells the program
/// how many entries were left out.
enum HeadersVariable {
    /// The most `WARREN_HEADERS` may hold, in bytes (half of Linux's per-string limit).
    static let maxBytes = 64 << 10
    /// The most the whole environment (every `NAME=value` string and its NUL) may take: half of
    /// `ARG_MAX`, at most 512 KiB, so the arguments keep the other half.
    static let maxEnvironmentBytes: Int = {
        let argMax = sysconf(Int32(_SC_ARG_MAX))
        let half = argMax > 0 ? argMax / 2 : 64 << 10
        return min(512 << 10, max(half, 16 << 10))
    }()

    /// The headers as one JSON object of at most `limit` bytes (`{}` when nothing fits), and
    /// how many entries were left out.
    /// `lossy` is set when an entry could not be written as JSON at all (a binary key or value).
    static func json(_ table: FieldTable?, limit: Int, lossy: inout Bool) -> (json: [UInt8], omitted: Int) {
        let full = MessageJSON.headersJSON(table, lossy: &lossy)
        if full.count <= limit { return (full, 0) }
        var ignored = false
        guard case .object(let object) = MessageJSON.headers(table, lossy: &ignored) else { return (Array("{}".utf8), 0) }
        var json: [UInt8] = [UInt8(ascii: "{")]
        var omitted = 0
        for key in object.keys.sorted() {
            guard let value = object[key],
                let entry = try? MessageJSON.encode(.object([key: value]), sortedKeys: true), entry.count > 2
            else {
                omitted += 1
                continue
            }
            // `{"key":value}` without its braces, after a comma unless it is the first.
            let fragment = entry[1..<(entry.count - 1)]
            let separator = json.count > 1 ? 1 : 0
            guard json.count + separator + fragment.count + 1 <= limit else {
                omitted += 1
                continue
            }
            if separator == 1 { json.append(UInt8(ascii: ",")) }
            json.append(contentsOf: fragment)
        }
        json.append(UInt8(ascii: "}"))
        return (json, omitted)
    }
}

extension HeadersVariable {
    static func json(_ table: FieldTable?, limit: Int) -> (json: [UInt8], omitted: Int) {
        var lossy = false
        return json(table, limit: limit, lossy: &lossy)
    }
}
