import Testing

@testable import AMQP

/// The connection's lifecycle on the I/O loop: blocked and unblocked, closing on request, the
/// first failure kept.
@Suite struct ConnectionLifecycleTests {
    @Test func aBlockedConnectionPublishesNothingUntilUnblockedAndReportsEachChangeOnce() {
        var connection = ConnectionLifecycle()
        #expect(connection.mayPublish)
        #expect(connection.brokerBlocked(reason: "low on memory") == [.reportBlocked(reason: "low on memory")])
        #expect(!connection.mayPublish)
        #expect(connection.brokerBlocked(reason: "again") == [], "already blocked")
        #expect(connection.brokerUnblocked() == [.reportUnblocked])
        #expect(connection.brokerUnblocked() == [], "not blocked any more")
        #expect(connection.mayPublish)
    }

    @Test func aCloseRequestClosesOnceAndKeepsABlockedConnectionFromPublishing() {
        var connection = ConnectionLifecycle()
        _ = connection.brokerBlocked(reason: "disk")
        #expect(connection.closeRequested() == [.closeGracefully])
        #expect(connection.isClosing && !connection.mayPublish, "the broker still does not read")
        #expect(connection.closeRequested() == [], "a second close request")
        #expect(connection.brokerUnblocked() == [], "closing: not reported")
        connection.closed(AMQPError(.closedByClient, "closed"))
        #expect(!connection.isAlive && connection.failure?.code == .closedByClient)
    }

    @Test func theFirstFailureIsKeptAndAFailedConnectionIgnoresEverythingElse() {
        var connection = ConnectionLifecycle()
        connection.failed(AMQPError(.connectionClosed, "the broker closed the connection"))
        connection.failed(AMQPError(.connectionLost, "reading failed"))
        #expect(connection.failure?.code == .connectionClosed)
        #expect(connection.closeRequested() == [])
        #expect(connection.brokerBlocked(reason: "x") == [])
        #expect(!connection.mayPublish && !connection.isAlive)
    }
}
