import Testing

@testable import AMQP

@Suite("AMQPEndpoint")
struct AMQPEndpointTests {
    @Test func parsesAFullURLAndDecodesTheVhost() throws {
        let e = try AMQPEndpoint(url: "amqp://us%40er:p%3Ass@rabbit-1:5673/prod%2fone")
        #expect(e.host == "rabbit-1")
        #expect(e.port == 5673)
        #expect(e.user == "us@er")
        #expect(e.password == "p:ss")
        #expect(e.vhost == "prod/one")
        #expect(!e.useTLS)
    }

    @Test(arguments: ["amqp://h", "amqp://h/", "amqp://h:5672/%2f"])
    func noPathOrALoneSlashIsTheDefaultVhost(url: String) throws {
        #expect(try AMQPEndpoint(url: url).vhost == "/")
    }

    @Test func amqpsDefaultsToPort5671() throws {
        let e = try AMQPEndpoint(url: "amqps://h")
        #expect(e.useTLS)
        #expect(e.port == 5671)
    }

    @Test func theDescriptionNeverContainsThePassword() throws {
        let e = try AMQPEndpoint(url: "amqp://warren:s3cret@h:5672/prod")
        #expect(e.description == "amqp://warren:***@h:5672/prod")
        #expect(!AMQPEndpoint.redact("amqp://warren:s3cret@h:5672/prod").contains("s3cret"))
    }

    @Test(arguments: ["http://h", "amqp://", "amqp://h/a/b", "amqp://h:99999"])
    func rejectsWhatIsNotAnAMQPURL(url: String) {
        #expect(throws: AMQPError.self) { try AMQPEndpoint(url: url) }
    }

    @Test func errorsAboutABadURLDoNotLeakThePassword() {
        let error = #expect(throws: AMQPError.self) { try AMQPEndpoint(url: "amqp://u:s3cret@h/a/b") }
        #expect(error?.message.contains("s3cret") == false)
    }
}
