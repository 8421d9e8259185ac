import Testing

@testable import WarrenCore

@Suite("inherit_env parsing") struct InheritEnvParsingTests {
    static func kind(_ settings: String, kind: String = "exec") throws -> HandlerKind? {
        let c = try ConfigFixture.parse("""
            [broker]
            url = "amqp://guest:guest@rabbit/"

            [handlers.h]
            kind = "\(kind)"
            command = ["/bin/cat"]
            \(settings)
            """)
        return c.handler(named: "h")?.kind
    }

    @Test func absentMeansTheStandardList() throws {
        #expect(try Self.kind("") == .exec(command: ["/bin/cat"], environment: [:], workingDirectory: nil, inheritEnvironment: .standard))
        #expect(InheritedEnvironment.standard == .only(["PATH", "HOME", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL"]))
    }

    @Test func trueInheritsEverythingAndFalseNothing() throws {
        #expect(try Self.kind("inherit_env = true") == .exec(command: ["/bin/cat"], environment: [:], workingDirectory: nil, inheritEnvironment: .all))
        #expect(try Self.kind("inherit_env = false") == .exec(command: ["/bin/cat"], environment: [:], workingDirectory: nil, inheritEnvironment: .only([])))
    }

    @Test func aListOfNamesAndPrefixesIsKeptForPipeHandlersToo() throws {
        let kind = try Self.kind(#"inherit_env = ["PATH", "PYTHON*", "http_proxy"]"#, kind: "pipe")
        #expect(kind == .pipe(
            command: ["/bin/cat"], environment: [:], workingDirectory: nil, instances: 1, maxInFlightPerInstance: 1,
            inheritEnvironment: .only(["PATH", "PYTHON*", "http_proxy"])))
    }

    @Test func theFilterKeepsExactNamesAndPrefixes() {
        let warren = ["PATH": "/bin", "PYTHONPATH": "/opt", "PYTHON": "3", "PY": "x", "AMQP_PASSWORD": "s"]
        #expect(InheritedEnvironment.only(["PATH", "PYTHON*"]).filter(warren) == ["PATH": "/bin", "PYTHONPATH": "/opt", "PYTHON": "3"])
        #expect(InheritedEnvironment.only([]).filter(warren).isEmpty)
        #expect(InheritedEnvironment.all.filter(warren) == warren)
    }
}
