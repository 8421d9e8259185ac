internal import CRabbitMQ

/// Facts about the linked librabbitmq.
public enum LibRabbitMQ {
    /// `amqp_version()`, e.g. "0.11.0".
    public static var version: String {
        amqp_version().map { String(cString: $0) } ?? "unknown"
    }
}
