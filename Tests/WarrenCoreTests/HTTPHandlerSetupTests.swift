import Logging
import Testing

@testable import WarrenCore

@Suite("HTTP handler set-up", .timeLimit(.minutes(1)))
struct HTTPHandlerSetupTests {
    static func configuration(_ queues: String) throws -> Configuration {
        try ConfigurationLoader.parse(source: """
            [broker]
            urls = ["amqp://guest:guest@127.0.0.1:5672/"]
            \(queues)
            [handlers.hook]
            kind = "http"
            url = "http://127.0.0.1:8080/hook"
            [handlers.other]
            kind = "noop"
            """, file: "http-setup.toml")
    }

    @Test func thePoolHoldsAConnectionPerConcurrentRunOfEveryQueueUsingTheHandler() throws {
        let configuration = try Self.configuration("""
            [[queues]]
            name = "a"
            concurrency = 3
            handler = "hook"
            [[queues]]
            name = "b"
            concurrency = 5
            routes = [{ match = { type = "T" }, handlers = ["hook", "other"] }, { match = { type = "U" }, handlers = ["hook"] }]
            [[queues]]
            name = "c"
            concurrency = 7
            handler = "other"
            """)
        #expect(HTTPHandler.poolSize(for: "hook", in: configuration) == 8, "3 + 5; queue b counts once however many routes name it")
        #expect(HTTPHandler.poolSize(for: "unused", in: configuration) == 1)
    }

    @Test func configuredHeadersAreCheckedAtStartUpWithoutQuotingTheirValues() throws {
        let secret = "Bearer s3cr3t\nInjected: yes"
        #expect(throws: HandlerRegistry.SetupError.self) {
            try HTTPHandler.validated(["Authorization": secret], handler: "hook")
        }
        do {
            _ = try HTTPHandler.validated(["Authorization": secret], handler: "hook")
        } catch {
            #expect(error.description.contains("Authorization"))
            #expect(!error.description.contains("s3cr3t"), "a header value may be a secret")
        }
        #expect(throws: HandlerRegistry.SetupError.self) { try HTTPHandler.validated(["Bad Name": "v"], handler: "hook") }
        #expect(throws: HandlerRegistry.SetupError.self) { try HTTPHandler.validated(["": "v"], handler: "hook") }
        let headers = try HTTPHandler.validated(["Authorization": "Bearer t", "X-Tab": "a\tb", "X-Utf8": "grüße"], handler: "hook")
        #expect(headers.first(name: "authorization") == "Bearer t")
        #expect(headers.first(name: "x-tab") == "a\tb")
    }

    @Test func messageDataWithControlCharactersBecomesAValidHeaderValue() {
        #expect(HTTPHandler.fieldValue("order.created") == "order.created")
        #expect(HTTPHandler.fieldValue("a\r\nInjected: 1") == "a  Injected: 1")
        #expect(HTTPHandler.fieldValue("nul\u{0}del\u{7F}tab\t") == "nul del tab\t")
        #expect(HTTPHandler.fieldValue("ünïcode") == "ünïcode")
    }

    @Test func anHTTPHandlerInTheConfigurationIsBuiltByTheRegistry() throws {
        let configuration = try Self.configuration("""
            [[queues]]
            name = "a"
            handler = "hook"
            """)
        let registry = try HandlerRegistry(configuration, logger: Logger(label: "test"))
        #expect(registry["hook"] is HTTPHandler)
    }
}
