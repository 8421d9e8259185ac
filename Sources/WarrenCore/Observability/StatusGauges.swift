import Metrics
import Synchronization

/// Keeps the state series in step with `EngineStatus`: `warren_consumers{queue}`,
/// `warren_queue_paused{queue}`, `warren_circuit_open{queue}`,
/// `warren_connection_up{role}`, `warren_connection_blocked{role}` and
/// `warren_reconnects_total{role}`. They are derived from the one status the engine reports, so
/// `/readyz`, systemd's `STATUS=` and the gauges can never disagree.
public final class StatusGauges: Sendable {
    private struct RoleSeries: Sendable {
        let up: Gauge
        let blocked: Gauge
        let reconnects: Counter
    }

    private struct QueueSeries: Sendable {
        let consumers: Gauge
        let paused: Gauge
        let circuitOpen: Gauge
    }

    private struct State: Sendable {
        /// Every queue seen so far: a queue a reload removed reads 0 instead of keeping its last value.
        var consumers: [String: QueueSeries] = [:]
        /// `EngineStatus.Connection.reconnects` already counted, per role.
        var reconnectsSeen: [EngineStatus.Role: Int] = [:]
    }

    private let factory: any MetricsFactory
    private let roles: [EngineStatus.Role: RoleSeries]
    private let state = Mutex(State())

    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        self.factory = factory
        var roles: [EngineStatus.Role: RoleSeries] = [:]
        for role in EngineStatus.Role.allCases {
            let dimensions = [("role", role.rawValue)]
            roles[role] = RoleSeries(
                up: Gauge(label: WarrenMetrics.connectionUp, dimensions: dimensions, factory: factory),
                blocked: Gauge(label: WarrenMetrics.connectionBlocked, dimensions: dimensions, factory: factory),
                reconnects: Counter(label: WarrenMetrics.reconnects, dimensions: dimensions, factory: factory))
        }
        self.roles = roles
    }

    /// Follows `status` from now on (the observer runs under the status lock: it only stores
    /// numbers).
    public func follow(_ status: EngineStatus) {
        status.observe { [self] snapshot in apply(snapshot) }
    }

    /// Sets every series from one snapshot.
    public func apply(_ snapshot: EngineStatus.Snapshot) {
        state.withLock { state in
            for queue in Set(state.consumers.keys).union(snapshot.consuming.keys) {
                let dimensions = [("queue", queue)]
                let series = state.consumers[queue] ?? QueueSeries(
                    consumers: Gauge(label: WarrenMetrics.consumers, dimensions: dimensions, factory: factory),
                    paused: Gauge(label: WarrenMetrics.queuePaused, dimensions: dimensions, factory: factory),
                    circuitOpen: Gauge(label: WarrenMetrics.circuitOpen, dimensions: dimensions, factory: factory))
                state.consumers[queue] = series
                series.consumers.record(snapshot.consuming[queue] == true ? 1 : 0)
                series.paused.record(snapshot.paused.contains(queue) ? 1 : 0)
                series.circuitOpen.record(snapshot.circuitOpen.contains(queue) ? 1 : 0)
            }
            for (role, series) in roles {
                let connection = snapshot.connections[role] ?? EngineStatus.Connection()
                series.up.record(connection.up ? 1 : 0)
                series.blocked.record(connection.blocked ? 1 : 0)
                let seen = state.reconnectsSeen[role] ?? 0
                if connection.reconnects > seen {
                    series.reconnects.increment(by: connection.reconnects - seen)
                }
                state.reconnectsSeen[role] = connection.reconnects
            }
        }
    }
}
