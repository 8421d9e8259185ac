import ArgumentParser
import Testing
import WarrenCore

@testable import warren

@Suite struct ExitStatusTests {
    struct Unexpected: Error {}

    @Test func anErrorNothingHandledIsAnInternalError() {
        #expect(WarrenExit.ending(for: Unexpected()) == .internalError)
        #expect(WarrenExit.ending(for: TopologyError(problems: [])) == .internalError)
    }

    @Test(arguments: [WarrenExit.failure, WarrenExit.usage, WarrenExit.unavailable, WarrenExit.config, WarrenExit.software])
    func aChosenExitStatusIsKept(status: ExitCode) {
        #expect(WarrenExit.ending(for: status) == .asThrown)
    }

    @Test func usageErrorsAndHelpKeepTheParsersStatus() throws {
        #expect(WarrenExit.ending(for: ValidationError("--count must be at least 1")) == .asThrown)
        #expect(Warren.exitCode(for: ValidationError("x")) == WarrenExit.usage)
        #expect(WarrenExit.ending(for: CleanExit.helpRequest()) == .asThrown)
        let parseError = #expect(throws: (any Error).self) { _ = try Warren.parseAsRoot(["run", "--no-such-option"]) }
        let error = try #require(parseError)
        #expect(WarrenExit.ending(for: error) == .asThrown)
        #expect(Warren.exitCode(for: error) == WarrenExit.usage)
    }

    @Test func anEngineThatStopsByItselfExitsConfigOnlyForConfigurationOutcomes() {
        #expect(WarrenExit.status(after: .stopped) == nil)
        #expect(WarrenExit.status(after: .topologyRejected) == WarrenExit.config)
        #expect(WarrenExit.status(after: .handlersRejected("x")) == WarrenExit.config)
        #expect(WarrenExit.status(after: .dedupStoreUnavailable("x")) == WarrenExit.config)
    }
}
