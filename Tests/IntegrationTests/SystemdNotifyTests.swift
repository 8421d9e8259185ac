import AMQP
import Foundation
import Glibc
import Testing
import WarrenCore

/// systemd notify and the watchdog (docs/operations.md, "Notify and watchdog") under systemd (`Type=notify`, `WatchdogSec=`), with the real binary and a
/// `NOTIFY_SOCKET` the test owns: `READY=1` once consumers are up, `WATCHDOG=1` while warren
/// makes progress, paused while its consumer connection is black-holed (it looks alive but
/// receives nothing) and resumed once warren notices and reconnects (an outage is not a reason
/// for systemd to restart it), and `STOPPING=1` on SIGTERM.
@Suite("systemd notifications from warren run", .requiresBroker, .timeLimit(.minutes(1)))
struct SystemdNotifyTests {
    /// Pings every 500 ms (half of WATCHDOG_USEC). Heartbeat 6 s: the broker speaks at least
    /// every 3 s, a silent connection counts as black-holed 6 × 1.5 + 1 = 10 s after it was last
    /// heard, and librabbitmq declares it dead at 12 s: the watchdog pauses for about 2 s, starting
    /// 7 to 10 s after the freeze.
    static let watchdogUSec = 1_000_000
    static let heartbeatSeconds = 6

    @Test func readyFollowsTheConsumersAndTheWatchdogStopsWhileTheConsumerConnectionIsBlackHoled() async throws {
        let queue = TestBroker.uniqueName("notify")
        let proxy = try LoopbackProxy(upstreamHost: TestBroker.endpoint.host, upstreamPort: TestBroker.endpoint.port)
        defer { proxy.stop() }
        let listener = try NotifyListener()
        defer { listener.stop() }
        let endpoint = TestBroker.endpoint
        let source = """
            [broker]
            urls = ["amqp://\(endpoint.user):\(endpoint.password)@127.0.0.1:\(proxy.port)/"]
            connection_name = "warren-notify-tests"
            heartbeat = "\(Self.heartbeatSeconds)s"
            connect_timeout = "2s"
            reconnect_initial_delay = "200ms"
            reconnect_max_delay = "1s"

            [[queues]]
            name = "\(queue)"
            durable = false
            handler = "sink"

            [handlers.sink]
            kind = "noop"
            """
        let config = try WarrenProcess.ConfigFile(source)
        defer { config.remove() }
        let plan = TopologyPlan(try ConfigurationLoader.parse(source: source, file: config.path))
        let warren = try RunningWarren(
            config: config.path, environment: ["NOTIFY_SOCKET": listener.name, "WATCHDOG_USEC": "\(Self.watchdogUSec)"])

        // READY=1 only once the consumer is registered with the broker.
        let ready = try #require(await listener.wait(for: "READY=1", timeout: .seconds(30)), "no READY=1; log:\n\(warren.output)")
        #expect(ready.lines.contains("STATUS=consuming 1/1 queues"))
        let check = try await TestBroker.connect()
        let declared = try await check.declareQueue(QueueDeclaration(name: queue, durable: false, passive: true))
        #expect(declared.consumerCount == 1)
        await check.close()
        let firstStatus = try #require(listener.datagrams.first)
        #expect(firstStatus.at <= ready.at && !firstStatus.lines.contains("READY=1"), "READY=1 came before any other state")

        // WATCHDOG=1 keeps arriving, every half WATCHDOG_USEC.
        let steady = await listener.wait(timeout: .seconds(5)) { datagrams in
            let pings = datagrams.filter { $0.lines.contains("WATCHDOG=1") && $0.at > ready.at }
            return pings.count >= 4 ? pings : nil
        }
        #expect(steady != nil, "fewer than 4 watchdog pings in 5 s")

        // Black-hole every connection: the watchdog pauses once the consumer connection has been
        // silent for 1.5 heartbeats, then resumes when the heartbeat timeout ends the connection
        // and warren is reconnecting.
        let frozenAt = ContinuousClock.now
        proxy.freeze()
        let expected = (frozenAt + .seconds(6))...(frozenAt + .seconds(11))
        let gap = await listener.wait(timeout: .seconds(25)) { datagrams -> ContinuousClock.Instant? in
            let pings = datagrams.filter { $0.lines.contains("WATCHDOG=1") }.map(\.at)
            // Load can delay a ping now and then; the pause is the gap that starts in the window.
            for (before, after) in zip(pings, pings.dropFirst()) where after - before >= .milliseconds(1500) && expected.contains(before) {
                return before
            }
            return nil
        }
        #expect(gap != nil, "no watchdog pause of 1.5 s or more 6 to 11 s after the freeze, or no ping after it; log:\n\(warren.output)")
        #expect(warren.output.contains("has heard nothing from the broker"), "the pause was not for the silent connection")
        #expect(await listener.wait(timeout: .seconds(30)) { $0.first { $0.at > frozenAt && $0.text.contains("reconnecting") } } != nil)

        // Connectivity back, then a graceful stop: STOPPING=1.
        proxy.thaw()
        let stopAt = ContinuousClock.now
        warren.signal(SIGTERM)
        #expect(await listener.wait(for: "STOPPING=1", since: stopAt, timeout: .seconds(10)) != nil)
        #expect(await warren.waitForExit(timeout: .seconds(20)) == 0)
        for name in plan.queues.map(\.declaration.name) { try? await TestBroker.deleteQueue(name) }
    }
}
