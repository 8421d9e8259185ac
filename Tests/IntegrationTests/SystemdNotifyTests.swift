import AMQP
import Foundation
import Glibc
import Testing

/// SPEC §6 under systemd (`Type=notify`, `WatchdogSec=`), with the real binary and a
/// `NOTIFY_SOCKET` the test owns: `READY=1` once consumers are up, `WATCHDOG=1` while warren
/// makes progress, paused while its consumer connection is black-holed (it looks alive but
/// receives nothing) and resumed once warren notices and reconnects (an outage is not a reason
/// for systemd to restart it), and `STOPPING=1` on SIGTERM.
@Suite("systemd notifications from warren run", .requiresBroker, .timeLimit(.minutes(1)))
struct SystemdNotifyTests {
    /// Pings every 500 ms (half of WATCHDOG_USEC); heartbeat 4 s: a silent connection counts as
    /// black-holed after 4 × 1.5 + 1 = 7 s, librabbitmq declares it dead after 8 s.
    static let watchdogUSec = 1_000_000
    static let heartbeatSeconds = 4

    @Test func readyFollowsTheConsumersAndTheWatchdogStopsWhileTheConsumerConnectionIsBlackHoled() async throws {
        let queue = TestBroker.uniqueName("notify")
        let proxy = try LoopbackProxy(upstreamHost: TestBroker.endpoint.host, upstreamPort: TestBroker.endpoint.port)
        defer { proxy.stop() }
        let listener = try NotifyListener()
        defer { listener.stop() }
        let endpoint = TestBroker.endpoint
        let config = try WarrenProcess.ConfigFile("""
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
            """)
        defer { config.remove() }
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
        let gap = await listener.wait(timeout: .seconds(25)) { datagrams -> (start: ContinuousClock.Instant, end: ContinuousClock.Instant)? in
            let pings = datagrams.filter { $0.lines.contains("WATCHDOG=1") }.map(\.at)
            for (before, after) in zip(pings, pings.dropFirst()) where after - before >= .seconds(2) && before >= frozenAt - .seconds(1) {
                return (before, after)
            }
            return nil
        }
        let pause = try #require(gap, "the watchdog never paused (or never resumed) after the freeze; log:\n\(warren.output)")
        #expect(pause.start - frozenAt > .seconds(2), "the watchdog paused before the connection could be judged silent")
        #expect(pause.start - frozenAt < .seconds(Self.heartbeatSeconds * 2 + 1), "the watchdog kept pinging a black-holed connection")
        #expect(warren.output.contains("watchdog paused"))
        #expect(await listener.wait(timeout: .seconds(10)) { $0.first { $0.at > frozenAt && $0.text.contains("reconnecting") } } != nil)

        // Connectivity back, then a graceful stop: STOPPING=1.
        proxy.thaw()
        let stopAt = ContinuousClock.now
        warren.signal(SIGTERM)
        #expect(await listener.wait(for: "STOPPING=1", since: stopAt, timeout: .seconds(10)) != nil)
        #expect(await warren.waitForExit(timeout: .seconds(20)) == 0)
        try? await TestBroker.deleteQueue(queue)
    }
}
