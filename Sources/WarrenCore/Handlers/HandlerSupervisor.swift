/// Runs the background work (pipe workers, dedup purges...) of every handler set a
/// configuration generation builds: the first one at start, and the handlers each reload adds.
/// It lives in the generation's task group, so everything it started ends with the generation;
/// a handler replaced by a reload ends earlier, when it is retired (HandlerRegistry.retire).
final class HandlerSupervisor: Sendable {
    private let arrivals: AsyncStream<HandlerRegistry>
    private let continuation: AsyncStream<HandlerRegistry>.Continuation

    init() {
        (arrivals, continuation) = AsyncStream.makeStream(of: HandlerRegistry.self)
    }

    /// Starts `handlers`' background work.
    func start(_ handlers: HandlerRegistry) {
        continuation.yield(handlers)
    }

    /// Runs what `start` hands over until cancelled (an AsyncStream ends its iteration when the
    /// iterating task is cancelled; the handler tasks are cancelled with it).
    func run() async {
        await withTaskGroup(of: Void.self) { running in
            for await handlers in arrivals {
                running.addTask { await handlers.run() }
            }
        }
    }
}
