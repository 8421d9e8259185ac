import TestSupport
import Testing

@testable import WarrenCore

/// `"queues[2].prefetch"` -> `[.key("queues"), .index(2), .key("prefetch")]`. Only for keys without
/// `.`, `[` or `]` in them; tests of such keys spell the path out.
private func path(_ dotted: String) -> [ConfigPathComponent] {
    var components: [ConfigPathComponent] = []
    for segment in dotted.split(separator: ".") {
        let pieces = segment.split(separator: "[", omittingEmptySubsequences: false)
        if let name = pieces.first, !name.isEmpty { components.append(.key(String(name))) }
        for piece in pieces.dropFirst() {
            if let n = Int(piece.dropLast()) { components.append(.index(n)) }
        }
    }
    return components
}

extension SourceLocator {
    /// The key position at a dotted path, as `"LINE:COL"`.
    fileprivate func key(_ dotted: String) -> String? { position(of: path(dotted))?.description }
    /// The value position at a dotted path, as `"LINE:COL"`.
    fileprivate func value(_ dotted: String) -> String? { valuePosition(of: path(dotted))?.description }
}

@Suite("SourceLocator")
struct SourceLocatorTests {
    @Test func locatesAKeyAndItsValueInATable() {
        let locator = SourceLocator(source: """
            [broker]
            heartbeat = "30s"
            """)
        #expect(locator.key("broker") == "1:1")
        #expect(locator.key("broker.heartbeat") == "2:1")
        #expect(locator.value("broker.heartbeat") == "2:13")
        #expect(locator.value("broker") == nil)
        #expect(SourcePosition(line: 2, column: 13).description == "2:13")
    }

    @Test func countsRepeatedArrayOfTablesHeadersFromZero() {
        let locator = SourceLocator(source: """
            [[queues]]
            name = "a"

            [[queues]]
            name = "b"

              [[queues]]
              name = "c"
              prefetch = 50
            """)
        #expect(locator.key("queues") == "1:3")
        #expect(locator.key("queues[0]") == "1:1")
        #expect(locator.key("queues[1]") == "4:1")
        #expect(locator.key("queues[1].name") == "5:1")
        #expect(locator.key("queues[2]") == "7:3")
        #expect(locator.key("queues[2].name") == "8:3")
        #expect(locator.key("queues[2].prefetch") == "9:3")
        #expect(locator.value("queues[2].prefetch") == "9:14")
        #expect(locator.key("queues[3]") == nil)
        #expect(locator.key("queues[0].prefetch") == nil)
    }

    @Test func putsASubTableUnderTheLatestArrayElement() {
        let locator = SourceLocator(source: """
            [[queues]]
            name = "a"
            [[queues]]
            name = "b"
            [[queues]]
            name = "c"
            [queues.retry]
            max_attempts = 5
            backoff = "exponential"
            [[queues]]
            name = "d"
            [queues.retry]
            max_attempts = 2
            """)
        #expect(locator.key("queues[2].retry") == "7:1")
        #expect(locator.key("queues[2].retry.max_attempts") == "8:1")
        #expect(locator.key("queues[2].retry.backoff") == "9:1")
        #expect(locator.value("queues[2].retry.backoff") == "9:11")
        #expect(locator.key("queues[3]") == "10:1")
        #expect(locator.key("queues[3].retry.max_attempts") == "13:1")
        #expect(locator.key("queues[1].retry") == nil)
    }

    @Test func countsNestedArraysOfTablesPerParentElement() {
        let locator = SourceLocator(source: """
            [[queues]]
            [[queues.bindings]]
            exchange = "a"
            [[queues.bindings]]
            exchange = "b"
            [[queues]]
            [[queues.bindings]]
            exchange = "c"
            """)
        #expect(locator.key("queues[0].bindings") == "2:10")
        #expect(locator.key("queues[0].bindings[1]") == "4:1")
        #expect(locator.key("queues[0].bindings[1].exchange") == "5:1")
        #expect(locator.key("queues[1].bindings") == "7:10")
        #expect(locator.key("queues[1].bindings[0]") == "7:1")
        #expect(locator.key("queues[1].bindings[0].exchange") == "8:1")
        #expect(locator.key("queues[1].bindings[1]") == nil)
    }

    @Test func indexesInlineTablesInsideAnInlineArray() {
        let locator = SourceLocator(source: """
            [[queues]]
            name = "orders"
            bindings = [{ exchange = "orders", routing_key = "a" }, { exchange = "x" }]
            """)
        #expect(locator.key("queues[0].bindings") == "3:1")
        #expect(locator.value("queues[0].bindings") == "3:12")
        #expect(locator.key("queues[0].bindings[0]") == "3:13")
        #expect(locator.value("queues[0].bindings[0]") == "3:13")
        #expect(locator.key("queues[0].bindings[0].exchange") == "3:15")
        #expect(locator.value("queues[0].bindings[0].exchange") == "3:26")
        #expect(locator.key("queues[0].bindings[0].routing_key") == "3:36")
        #expect(locator.key("queues[0].bindings[1]") == "3:57")
        #expect(locator.key("queues[0].bindings[1].exchange") == "3:59")
        #expect(locator.key("queues[0].bindings[2]") == nil)
    }

    @Test func unquotesInlineTableKeysAndDecodesTheirEscapes() {
        let locator = SourceLocator(source: #"""
            [[queues]]
            name = "orders"
            arguments = { "x-max-length" = 100000, 'x-queue-type' = "quorum", "x\u002Dtab\"q" = 1 }
            """#)
        let arguments: [ConfigPathComponent] = [.key("queues"), .index(0), .key("arguments")]
        #expect(locator.key("queues[0].arguments") == "3:1")
        #expect(locator.value("queues[0].arguments") == "3:13")
        #expect(locator.position(of: arguments + [.key("x-max-length")])?.description == "3:15")
        #expect(locator.valuePosition(of: arguments + [.key("x-max-length")])?.description == "3:32")
        #expect(locator.position(of: arguments + [.key("x-queue-type")])?.description == "3:40")
        #expect(locator.position(of: arguments + [.key("x-tab\"q")])?.description == "3:67")
    }

    @Test func expandsDottedKeysUnderTheCurrentTable() {
        let locator = SourceLocator(source: """
            [t]
            a.b.c = 1
            "quoted.dot" . 'lit' = 2
            """)
        #expect(locator.key("t.a") == "2:1")
        #expect(locator.key("t.a.b") == "2:3")
        #expect(locator.key("t.a.b.c") == "2:5")
        #expect(locator.value("t.a.b.c") == "2:9")
        let quoted: [ConfigPathComponent] = [.key("t"), .key("quoted.dot")]
        #expect(locator.position(of: quoted)?.description == "3:1")
        #expect(locator.position(of: quoted + [.key("lit")])?.description == "3:16")
    }

    @Test func recordsEachHeaderComponentTheFirstTimeItIsSeen() {
        let locator = SourceLocator(source: """
            [handlers.billing]
            command = ["/usr/bin/bill"]

            [handlers."search-index"]
            url = "http://localhost:9200"
            [ handlers . 'lit key' ]
            """)
        #expect(locator.key("handlers") == "1:2")
        #expect(locator.key("handlers.billing") == "1:1")
        #expect(locator.key("handlers.billing.command[0]") == "2:12")
        #expect(locator.key("handlers.search-index") == "4:1")
        #expect(locator.key("handlers.search-index.url") == "5:1")
        #expect(locator.position(of: [.key("handlers"), .key("lit key")])?.description == "6:1")
    }

    @Test func followsRoutesAcrossLinesWithCommentsAndTrailingCommas() {
        let locator = SourceLocator(source: """
            [[queues]]
            name = "a"

            [[queues]]
            name = "events"
            routes = [
              { match = { type = "OrderCreated" }, handlers = ["audit", "search-index"] },
              # a comment between elements
              { match = { type = "Refund" }, handlers = [
                  "billing",   # why
                  "audit",
              ] },
            ]
            prefetch = 10
            """)
        #expect(locator.key("queues[1].routes") == "6:1")
        #expect(locator.value("queues[1].routes") == "6:10")
        #expect(locator.key("queues[1].routes[0]") == "7:3")
        #expect(locator.key("queues[1].routes[0].match") == "7:5")
        #expect(locator.value("queues[1].routes[0].match") == "7:13")
        #expect(locator.key("queues[1].routes[0].match.type") == "7:15")
        #expect(locator.value("queues[1].routes[0].match.type") == "7:22")
        #expect(locator.key("queues[1].routes[0].handlers") == "7:40")
        #expect(locator.value("queues[1].routes[0].handlers") == "7:51")
        #expect(locator.key("queues[1].routes[0].handlers[0]") == "7:52")
        #expect(locator.key("queues[1].routes[0].handlers[1]") == "7:61")
        #expect(locator.key("queues[1].routes[1]") == "9:3")
        #expect(locator.value("queues[1].routes[1].match.type") == "9:22")
        #expect(locator.key("queues[1].routes[1].handlers") == "9:34")
        #expect(locator.key("queues[1].routes[1].handlers[0]") == "10:7")
        #expect(locator.key("queues[1].routes[1].handlers[1]") == "11:7")
        #expect(locator.key("queues[1].routes[1].handlers[2]") == nil)
        #expect(locator.key("queues[1].routes[2]") == nil)
        #expect(locator.key("queues[1].prefetch") == "14:1")
    }

    @Test func indexesNestedArraysAndIgnoresATrailingComma() {
        let locator = SourceLocator(source: """
            matrix = [ [1, 2], [3, [4, 5]], ]
            after = true
            """)
        #expect(locator.key("matrix[0]") == "1:12")
        #expect(locator.key("matrix[0][1]") == "1:16")
        #expect(locator.key("matrix[1][1]") == "1:24")
        #expect(locator.key("matrix[1][1][1]") == "1:28")
        #expect(locator.key("matrix[2]") == nil)
        #expect(locator.key("after") == "2:1")
    }

    @Test func doesNotScanCommentsOrHashesInsideStrings() {
        let locator = SourceLocator(source: #"""
            # commented = 1
            a = 1 # b = 2
            name = "has # hash" # c = 3
            lit = 'it # is' # d = 4
            esc = "a \"quoted\" = x # not a comment"
            next = 5
            """#)
        #expect(locator.key("commented") == nil)
        #expect(locator.key("b") == nil)
        #expect(locator.key("c") == nil)
        #expect(locator.key("d") == nil)
        #expect(locator.key("name") == "3:1")
        #expect(locator.key("lit") == "4:1")
        #expect(locator.key("esc") == "5:1")
        #expect(locator.key("next") == "6:1")
    }

    @Test func skipsTheContentOfMultiLineStrings() {
        let locator = SourceLocator(source: #"""
            description = """
            fake = "not a key"
            [not.a.table]
            ends with quotes \""" still inside
            """
            after = 1
            literal = '''
            [[also.not]]
            it's fine ''
            '''
            last = "x"
            one_line = """inline "quotes" """
            five = """x"""""
            tail = """\
              continued \
              """
            end = 2
            """#)
        #expect(locator.value("description") == "1:15")
        #expect(locator.key("fake") == nil)
        #expect(locator.key("not") == nil)
        #expect(locator.key("after") == "6:1")
        #expect(locator.value("literal") == "7:11")
        #expect(locator.key("also") == nil)
        #expect(locator.key("last") == "11:1")
        #expect(locator.key("one_line") == "12:1")
        #expect(locator.key("five") == "13:1")
        #expect(locator.key("tail") == "14:1")
        #expect(locator.key("end") == "17:1")
    }

    @Test func givesTheSameColumnsWithCRLFLineEndings() {
        let lines = ["[broker]", "heartbeat = \"30s\"", "", "[[queues]]", "  prefetch = 10", "routes = [", "  'a',", "]"]
        let locator = SourceLocator(source: lines.joined(separator: "\r\n") + "\r\n")
        #expect(locator.key("broker.heartbeat") == "2:1")
        #expect(locator.value("broker.heartbeat") == "2:13")
        #expect(locator.key("queues[0]") == "4:1")
        #expect(locator.key("queues[0].prefetch") == "5:3")
        #expect(locator.key("queues[0].routes[0]") == "7:3")
    }

    @Test func acceptsBareKeysWithDashesUnderscoresAndDigits() {
        let locator = SourceLocator(source: "my-key_2 = 1\n1234 = 'numeric'\n\t-_- = 3\n")
        #expect(locator.key("my-key_2") == "1:1")
        #expect(locator.key("1234") == "2:1")
        #expect(locator.key("-_-") == "3:2")  // a tab is one column
    }

    @Test func skipsNumbersDatesAndBooleans() {
        let locator = SourceLocator(source: """
            int = +1_000
            float = -3.14e+2
            hex = 0xDEAD_beef
            inf = -inf
            date = 1979-05-27T07:32:00Z
            spaced = 1979-05-27 07:32:00.999-07:00
            local = 07:32:00
            bool = false
            arr = [1979-05-27 07:32:00, true, nan]
            next = 1
            """)
        #expect(locator.key("float") == "2:1")
        #expect(locator.value("spaced") == "6:10")
        #expect(locator.key("bool") == "8:1")
        #expect(locator.key("arr[0]") == "9:8")
        #expect(locator.key("arr[1]") == "9:29")
        #expect(locator.key("arr[2]") == "9:35")
        #expect(locator.key("next") == "10:1")
    }

    @Test func countsColumnsInUnicodeScalars() {
        let locator = SourceLocator(source: "\u{FEFF}t = { \"ключ\" = 1, b = 2 }\nx = { \"e\u{301}\" = 1, y = 2 }\n")
        #expect(locator.key("t") == "1:1")  // the byte-order mark is not a column
        #expect(locator.key("t.ключ") == "1:7")
        #expect(locator.key("t.b") == "1:19")
        #expect(locator.key("x.y") == "2:17")  // "é" written as e + U+0301 is two columns
    }

    @Test func findsNothingInAnEmptyDocument() {
        for source in ["", "\n\n", "# only a comment\n", "   \t\r\n"] {
            let locator = SourceLocator(source: source)
            #expect(locator.position(of: []) == nil)
            #expect(locator.key("broker") == nil)
            #expect(locator.nearestPosition(of: path("broker.heartbeat")) == SourcePosition(line: 1, column: 1))
        }
    }

    @Test func nearestPositionFallsBackToTheClosestRecordedAncestor() {
        let locator = SourceLocator(source: """
            [broker]
            host = "localhost"

            [[queues]]
            name = "a"
            [[queues]]
            name = "b"
            """)
        #expect(locator.nearestPosition(of: path("queues[1].prefetch")).description == "6:1")
        #expect(locator.nearestPosition(of: path("queues[1].name")).description == "7:1")
        #expect(locator.nearestPosition(of: path("queues[5].name")).description == "4:3")
        #expect(locator.nearestPosition(of: path("broker.tls.ca")).description == "1:1")
        #expect(locator.nearestPosition(of: path("nope.deeper")).description == "1:1")
        #expect(locator.nearestPosition(of: []).description == "1:1")
    }

    @Test func keepsTheFirstPositionOfADuplicatedKey() {
        let locator = SourceLocator(source: "a = 1\na = 2\n")
        #expect(locator.key("a") == "1:1")
        #expect(locator.value("a") == "1:5")
    }

    @Test func recoversFromAnUnterminatedStringOnTheNextLine() {
        let locator = SourceLocator(source: """
            a = "never closed
            b = 'also open
            c = 3
            """)
        #expect(locator.key("a") == "1:1")
        #expect(locator.key("b") == "2:1")
        #expect(locator.key("c") == "3:1")
    }

    @Test func resumesAtAHeaderAfterAnUnclosedInlineTable() {
        let locator = SourceLocator(source: """
            a = { b = 1
            [next]
            c = 2
            d = [1, 2
            e = 3
            """)
        #expect(locator.key("a.b") == "1:7")
        #expect(locator.key("next") == "2:1")
        #expect(locator.key("next.c") == "3:1")
        #expect(locator.key("next.d[1]") == "4:9")
        #expect(locator.key("next.e") == "5:1")
    }

    @Test func toleratesStructurallyBrokenInput() {
        let sources = [
            "[[", "[", "[a", "[[a]", "a =", "a = [", "a = {", "a = \"\"\"", "a = '''", "= 1", "]]]", "}}",
            "a = [1,,2,]", "a = {,}", "\"", "a.\"b", "a = \"\\u12\"", "a = \"\\", "a = [\"\"\"x", "[a.'b", "a = { b",
            String(repeating: "[", count: 100_000), String(repeating: "a = [", count: 20_000),
            String(repeating: "{", count: 100_000), "x = " + String(repeating: "{a=", count: 30_000),
            String(repeating: "\"\"\"", count: 10_001), String(repeating: "a.", count: 50_000),
        ]
        for source in sources {
            let locator = SourceLocator(source: source)
            _ = locator.nearestPosition(of: path("a.b"))
        }
        #expect(SourceLocator(source: "a =").key("a") == "1:1")
        #expect(SourceLocator(source: "a =").value("a") == nil)
        #expect(SourceLocator(source: "a = [1,,2,]").key("a[1]") == "1:9")
    }

    /// Speed is measured outside the tests (a timed assertion here would flake on a loaded
    /// machine); this checks that a 100 KB file is indexed to its last key.
    @Test func indexesA100KBConfigurationToItsLastKey() {
        var source = "[broker]\nurl = \"amqp://localhost\"\n"
        var blocks = 0
        while source.utf8.count < 100_000 {
            source += Self.queueBlock
            blocks += 1
        }
        let locator = SourceLocator(source: source)
        #expect(locator.key("queues[\(blocks - 1)].routes[1].handlers[1]") != nil)
    }

    @Test func survivesThousandsOfRandomlyMutatedConfigurations() async {
        // Seconds of CPU-bound scanning: on a thread of its own, not on the cooperative pool
        // that the suites running beside this one need.
        let (unpositioned, elapsed) = await offPool { Self.scanMutatedConfigurations() }
        #expect(unpositioned.isEmpty, "positions below 1:1: \(unpositioned.prefix(5))")
        #expect(elapsed < .seconds(30), "3,000 mutated scans took \(elapsed)")
    }

    /// Scans 3,000 mutations of the realistic configuration (blocking, CPU-bound); returns the
    /// nearest positions found below line 1 or column 1, and the time it took.
    static func scanMutatedConfigurations() -> (unpositioned: [String], elapsed: Duration) {
        var unpositioned: [String] = []
        var random = SplitMix64(seed: 0x5741_5252_454E)
        let original = Array(Self.realisticConfiguration.utf8)
        let specials = Array("[]{}\"'#=,.\\\n".utf8)
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<3_000 {
            var lines = original.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map(Array.init)
            for _ in 0...Int.random(in: 0...3, using: &random) {
                switch Int.random(in: 0..<6, using: &random) {
                case 0: lines.remove(at: Int.random(in: 0..<lines.count, using: &random))
                case 1:
                    let n = Int.random(in: 0..<lines.count, using: &random)
                    lines.insert(lines[n], at: Int.random(in: 0...lines.count, using: &random))
                default: break
                }
                if lines.isEmpty { lines = [[]] }
            }
            var bytes = Array(lines.joined(separator: [UInt8(ascii: "\n")]))
            for _ in 0..<Int.random(in: 1...4, using: &random) where !bytes.isEmpty {
                let at = Int.random(in: 0..<bytes.count, using: &random)
                switch Int.random(in: 0..<4, using: &random) {
                case 0: bytes[at] = UInt8.random(in: 0...255, using: &random)
                case 1: bytes[at] = specials[Int.random(in: 0..<specials.count, using: &random)]
                case 2: bytes.insert(specials[Int.random(in: 0..<specials.count, using: &random)], at: at)
                default: bytes.removeSubrange(at...)
                }
            }
            let locator = SourceLocator(source: String(decoding: bytes, as: UTF8.self))
            let nearest = locator.nearestPosition(of: path("queues[1].routes[0].match.type"))
            if nearest.line < 1 || nearest.column < 1 { unpositioned.append("\(nearest.line):\(nearest.column)") }
        }
        return (unpositioned, clock.now - start)
    }

    /// The realistic configuration's intact form is located exactly, so the fuzz test mutates
    /// something meaningful.
    @Test func locatesEveryQueueOfTheRealisticConfiguration() {
        let locator = SourceLocator(source: Self.realisticConfiguration)
        #expect(locator.key("broker.heartbeat") == "4:1")
        #expect(locator.key("queues[0].arguments.x-max-length") == "19:15")
        #expect(locator.key("queues[0].bindings[1].routing_key") == "22:26")
        #expect(locator.key("queues[0].retry.backoff") == "28:1")
        #expect(locator.key("queues[1]") == "31:1")
        #expect(locator.key("queues[1].routes[0].match.type") == "35:15")
        #expect(locator.key("queues[1].routes[1].handlers[1]") == "38:5")
        #expect(locator.key("handlers.search-index.url") == "53:1")
        #expect(locator.key("handlers.search-index.headers.x-api-key") == "55:13")
        #expect(locator.key("observability.log_format") == "61:1")
    }

    static let realisticConfiguration = #"""
        # Warren configuration for the orders service.
        [broker]
        url = "amqp://warren:secret@rabbitmq.internal:5672/orders"
        heartbeat = "30s"
        connection_timeout = "10s"
        tls = { ca = "/etc/warren/ca.pem", verify = true }

        [defaults]
        prefetch = 50
        ack_timeout = "5m"

        [[queues]]
        name = "orders.created"
        durable = true
        prefetch = 100
        description = """
        Orders as they are placed. # not a comment
        [not.a.table]"""
        arguments = { "x-max-length" = 100000, "x-queue-type" = 'quorum' }
        bindings = [
          { exchange = "orders", routing_key = "order.created" },
          { exchange = "legacy", routing_key = "orders.#" }, # trailing comment
        ]
        handler = "billing"

        [queues.retry]
        max_attempts = 5
        backoff = { initial = "1s", max = "5m", multiplier = 2.0 }
        dead_letter = "orders.dlq"

        [[queues]]
        name = "orders.events"
        prefetch = 20
        routes = [
          { match = { type = "OrderCreated" }, handlers = ["audit", "search-index"] },
          { match = { type = "OrderCancelled", "x-source" = 'shop' }, handlers = [
            "audit",
            "billing",
          ] },
        ]

        [handlers.billing]
        kind = "exec"
        command = ["/usr/local/bin/billing", "--stdin", '--format=json']
        timeout = "30s"
        env = { BILLING_DB = "postgres://db/billing", "LOG\tLEVEL" = "info" }

        [handlers.audit]
        kind = "http"
        url = "http://audit.internal/events"
        [handlers."search-index"]
        kind = "http"
        url = "http://search.internal:9200/_bulk"
        method = 'POST'
        headers = { "x-api-key" = "abc#123", accept = "application/json" }
        since = 1979-05-27 07:32:00Z
        weights = [ [1, 2], [3.5, -inf], ]

        [observability]
        log_level = "info"
        log_format = "json"
        metrics = { listen = "0.0.0.0:9090", path = "/metrics" }
        """#

    static let queueBlock = """

        [[queues]]
        name = "orders.created" # a queue
        prefetch = 100
        arguments = { "x-max-length" = 100000, "x-queue-type" = 'quorum' }
        bindings = [{ exchange = "orders", routing_key = "a" }, { exchange = "x" }]
        routes = [
          { match = { type = "OrderCreated" }, handlers = ["audit", "search-index"] },
          { match = { type = "Refund" }, handlers = ["billing", "audit"] },
        ]
        description = '''
        Free text [not.a.table] key = "no"
        '''

        """
}

/// A small deterministic generator (SplitMix64), so every run mutates the same way.

