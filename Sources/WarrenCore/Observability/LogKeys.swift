/// Metadata keys of Warren's log events, in one place (docs/operations.md, "Logs").
public enum LogKeys {
    public static let queue = "queue"
    public static let handler = "handler"
    public static let messageID = "message_id"
    public static let deliveryTag = "delivery_tag"
    public static let attempt = "attempt"
    public static let outcome = "outcome"
    public static let durationMS = "duration_ms"
    public static let error = "error"
    public static let reason = "reason"
    /// A delivery's W3C trace id (32 hex digits) and the span of its handler run (16), or the
    /// delivery's own span when several handlers run (docs/tracing.md).
    public static let traceID = "trace_id"
    public static let spanID = "span_id"
    /// A handler's child process.
    public static let pid = "pid"
    /// A `pipe` worker's instance index (0 ..< instances).
    public static let worker = "worker"
    /// The control socket's path (`[control] socket`).
    public static let socket = "socket"
    /// What an operator can do about a warning.
    public static let fix = "fix"
}
