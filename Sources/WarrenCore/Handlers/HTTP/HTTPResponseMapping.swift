import Foundation

/// How a webhook's answer becomes a handler outcome (docs/handlers.md, "http"). Kept pure (status, the
/// `Retry-After` text, the collected body, a clock reading in; an outcome out) so that every
/// status class is unit-tested without a server.
///
/// | status | outcome |
/// |---|---|
/// | 2xx | success; the body (at most 1 MiB) is the RPC reply |
/// | 429, 503 with a valid `Retry-After` | verdict retry with that delay |
/// | 408, 429, 5xx | failure (`HTTP 503`, with `httpStatus`) |
/// | other 4xx | verdict reject (`HTTP 404`) |
/// | 3xx | failure (`HTTP 301`): redirects are not followed, see `HTTPClientHolder` |
/// | anything else (1xx that ends a request, > 599) | failure |
enum HTTPResponseMapping {
    /// The largest response body kept as an RPC reply (the same bound as an exec handler's stdout).
    static let maxReplyBytes = 1 << 20

    /// What was read of the response body.
    enum Body: Sendable, Equatable {
        /// The message has no `reply_to`: the body was not kept.
        case unwanted
        /// The whole body, at most `maxReplyBytes`.
        case complete([UInt8])
        /// The body was longer than `maxReplyBytes`; reading stopped there.
        case tooLarge
    }

    static func outcome(status: Int, retryAfter: String?, body: Body, now: Date = Date()) -> HandlerOutcome {
        let text = "HTTP \(status)"
        switch status {
        case 200...299:
            switch body {
            case .unwanted:
                return .success(.none)
            case .complete(let bytes):
                return .success(HandlerOutput(reply: bytes))
            case .tooLarge:
                // A truncated reply would be a wrong answer; failing keeps the request for a retry.
                return .failure(HandlerFailure("response body exceeds 1 MiB", httpStatus: status))
            }
        case 429, 503:
            if let retryAfter, let delay = Self.retryDelay(retryAfter, now: now) {
                return .verdict(.retry(delay: delay), error: text, output: .none, details: HandlerFailure(text, httpStatus: status))
            }
            return .failure(HandlerFailure(text, httpStatus: status))
        case 408, 500...599:
            return .failure(HandlerFailure(text, httpStatus: status))
        case 400...499:
            return .verdict(.reject, error: text, output: .none, details: HandlerFailure(text, httpStatus: status))
        default:
            return .failure(HandlerFailure(text, httpStatus: status))
        }
    }

    /// Longer requested delays are cut to this; the engine caps them further at the queue's
    /// `max_delay`, so nothing is lost by the cut, and no arithmetic can overflow.
    static let longestRetryDelay = RetryPolicy.longestMaxDelay

    /// The delay a `Retry-After` value asks for (RFC 9110 §10.2.3): delta-seconds (`120`) or an
    /// HTTP-date, which is read relative to `now` (a date in the past means "now", 0 s). `nil`
    /// when the value is neither: the response is then an ordinary failure.
    static func retryDelay(_ value: String, now: Date) -> Duration? {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { return nil }
        if trimmed.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) {
            // More digits than fit an Int64 are still "very long", not invalid.
            let seconds = Int64(trimmed) ?? Int64.max
            return min(.seconds(seconds), longestRetryDelay)
        }
        guard let date = HTTPDate.parse(trimmed) else { return nil }
        // Whole seconds, rounded up: an HTTP-date has no finer resolution.
        let longest = Double(longestRetryDelay.components.seconds)
        return .seconds(Int64(min(max(0, date.timeIntervalSince(now)), longest).rounded(.up)))
    }
}

/// HTTP-date parsing (RFC 9110 §5.6.7): recipients must accept the preferred IMF-fixdate and the
/// two obsolete forms (RFC 850 and asctime).
enum HTTPDate {
    private static let formats = [
        "EEE, dd MMM yyyy HH:mm:ss zzz",  // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        "EEEE, dd-MMM-yy HH:mm:ss zzz",  // RFC 850:     Sunday, 06-Nov-94 08:49:37 GMT
        "EEE MMM d HH:mm:ss yyyy",  // asctime:     Sun Nov  6 08:49:37 1994
    ]

    static func parse(_ text: String) -> Date? {
        // asctime pads the day with a space ("Nov  6"); collapse runs of spaces for the formatter.
        let normalized = text.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        // A formatter per call: this runs only for 429/503 answers that carry a date, and
        // DateFormatter is not safe to share across threads.
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        for format in formats {
            formatter.dateFormat = format
            if let date = formatter.date(from: normalized) { return date }
        }
        return nil
    }
}
