import Testing

@testable import WarrenCore

/// What a reload changes: the diff between two configurations (docs/configuration.md, "Reload").
@Suite struct ReloadPlanTests {
    static let base = """
        [broker]
        url = "amqp://guest:guest@127.0.0.1:5672/"

        [handlers.a]
        kind = "noop"

        [handlers.hook]
        kind = "http"
        url = "http://127.0.0.1:8080/hook"

        """

    static func config(_ body: String, broker: String = base) throws -> Configuration {
        try ConfigurationLoader.parse(source: broker + body, file: "reload.toml")
    }

    static func changes(_ old: String, _ new: String) throws -> ReloadPlan.Changes? {
        guard case .queues(let changes) = ReloadPlan(from: try config(old), to: try config(new)).scope else { return nil }
        return changes
    }

    static func queue(_ name: String, handler: String = "a", extra: String = "") -> String {
        "[[queues]]\nname = \"\(name)\"\nhandler = \"\(handler)\"\n\(extra)\n"
    }

    @Test func theSameFileChangesNothing() throws {
        let file = Self.queue("q1") + Self.queue("q2")
        #expect(try Self.changes(file, file)?.isEmpty == true)
    }

    @Test func queuesAreAddedRemovedAndChangedByName() throws {
        let changes = try #require(try Self.changes(
            Self.queue("kept") + Self.queue("gone") + Self.queue("edited"),
            Self.queue("kept") + Self.queue("edited", extra: "prefetch = 50") + Self.queue("new")))
        #expect(changes.added == ["new"])
        #expect(changes.removed == ["gone"])
        #expect(changes.changed == ["edited"])
        #expect(changes.rebuiltHandlers.isEmpty && changes.retiredHandlers.isEmpty)
        #expect(changes.starting == ["new", "edited"])
    }

    @Test func aChangedHandlerIsRebuiltAndRestartsOnlyTheQueuesThatUseIt() throws {
        let old = Self.queue("q1") + Self.queue("q2", handler: "hook")
        let new = old + "[handlers.hook.headers]\nX-Token = \"t\"\n"
        let changes = try #require(try Self.changes(old, new))
        #expect(changes.rebuiltHandlers == ["hook"])
        #expect(changes.retiredHandlers == ["hook"])
        #expect(changes.changed == ["q2"])
    }

    /// The HTTP pool is sized from the concurrency of the queues that use it.
    @Test func aPoolSizeDerivedFromQueuesRebuildsTheHandler() throws {
        let changes = try #require(try Self.changes(
            Self.queue("q1", handler: "hook", extra: "concurrency = 4"), Self.queue("q1", handler: "hook", extra: "concurrency = 8")))
        #expect(changes.rebuiltHandlers == ["hook"])
        #expect(changes.changed == ["q1"])
    }

    @Test func removedBindingsOfAChangedQueueAreListedForUnbinding() throws {
        let binding = { (key: String) in "[[queues.bindings]]\nexchange = \"amq.topic\"\nrouting_key = \"\(key)\"\n" }
        let changes = try #require(try Self.changes(
            Self.queue("q1") + binding("a.#") + binding("b.#"), Self.queue("q1") + binding("b.#")))
        #expect(changes.changed == ["q1"])
        #expect(changes.droppedBindings["q1"]?.map(\.routingKey) == ["a.#"])
    }

    @Test func connectionSettingsRestartEverything() throws {
        let file = Self.queue("q1")
        let other = Self.base.replacingOccurrences(of: "[broker]\n", with: "[broker]\nheartbeat = \"10s\"\n")
        #expect(ReloadPlan(from: try Self.config(file), to: try Self.config(file, broker: other)).scope == .restart("[broker] changed"))
        let publisher = file + "[publisher]\nconfirm_timeout = \"2s\"\n"
        #expect(ReloadPlan(from: try Self.config(file), to: try Self.config(publisher)).scope == .restart("[publisher] changed"))
        let dedup = Self.queue("q1", extra: "dedup = true")
        #expect(ReloadPlan(from: try Self.config(file), to: try Self.config(dedup)).scope == .restart("[dedup] changed"))
    }

    @Test func logAndMetricsChangesAreReportedAsNeedingARestart() throws {
        let file = Self.queue("q1")
        let changes = try #require(try Self.changes(
            file, "[log]\nlevel = \"debug\"\n[metrics]\nlisten = \"127.0.0.1:9999\"\n[control]\nsocket = \"/tmp/other.sock\"\n"
                + "[tracing]\nendpoint = \"http://127.0.0.1:4318\"\n" + file))
        #expect(changes.needsRestart == ["[log]", "[metrics]", "[control]", "[tracing]"])
        #expect(changes.isEmpty)
    }
}
