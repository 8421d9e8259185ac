import Testing

@testable import AMQP

/// `BasicProperties` keeps value semantics over its shared copy-on-write box.
@Suite("basic properties")
struct BasicPropertiesTests {
    @Test func aCopyChangedAfterwardsLeavesTheOriginalAlone() {
        let original = BasicProperties(contentType: "text/plain", messageID: "m-1")
        var copy = original
        copy.messageID = "m-2"
        copy.headers = ["k": "v"]
        #expect(original.messageID == "m-1")
        #expect(original.headers == nil)
        #expect(copy.messageID == "m-2")
        #expect(copy.contentType == "text/plain")
        #expect(copy != original)
    }

    @Test func emptyPropertiesChangedOneByOneStayIndependent() {
        var first = BasicProperties()
        var second = BasicProperties()
        first.replyTo = "replies"
        second.priority = 3
        #expect(first == BasicProperties(replyTo: "replies"))
        #expect(second == BasicProperties(priority: 3))
        #expect(BasicProperties() == BasicProperties(), "every empty value is equal")
    }

    @Test func equalValuesHashAlikeWhateverBoxTheyLiveIn() {
        var built = BasicProperties(deliveryMode: 2)
        built.correlationID = "c"
        let direct = BasicProperties(deliveryMode: 2, correlationID: "c")
        #expect(built == direct)
        #expect(Set([built, direct]).count == 1)
    }
}
