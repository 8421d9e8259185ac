import Testing

/// Fault injection against a real broker and the real `warren run` binary, against the
/// guarantees of docs/delivery.md: each scenario publishes numbered persistent messages, injects
/// one family of faults and proves that every message was processed or parked, that the queues
/// end empty with nothing unacked, and prints one `FAULT scenario=...` summary line for the lead's table.
///
/// Serialized: the broker scenarios share one extra RabbitMQ node (`FaultNode`), and parallel
/// scenarios would blur each other's recovery times on a machine with two cores.
@Suite("fault injection", .serialized, .requiresBroker, .timeLimit(.minutes(5)))
struct FaultInjectionTests {}
