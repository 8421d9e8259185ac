import Foundation
import TestSupport
import Testing

@testable import WarrenCore

@Suite("Plugin library checks")
struct PluginProbeTests {
    @Test func aLibraryBuiltAgainstThisHeaderIsAccepted() async throws {
        #expect(PluginProbe.problem(loading: try await ExamplePlugins.compile(ExamplePlugins.minimalSource())) == nil)
    }

    @Test func anotherABIVersionIsRefusedWithBothVersionsNamed() async throws {
        let problem = PluginProbe.problem(loading: try await ExamplePlugins.compile(ExamplePlugins.minimalSource(abi: "7u")))
        #expect(problem?.contains("ABI version 7") == true)
        #expect(problem?.contains("speaks versions 1 to 3") == true)
    }

    /// A version only appends fields a plugin of an older version never reads.
    @Test func aLibraryOfTheOldestVersionIsStillAccepted() async throws {
        #expect(PluginProbe.problem(loading: try await ExamplePlugins.compile(ExamplePlugins.minimalSource(abi: "1u"))) == nil)
    }

    @Test func aLibraryWithoutTheEntryPointIsRefused() async throws {
        let problem = PluginProbe.problem(loading: try await ExamplePlugins.compile("int something_else(void) { return 1; }"))
        #expect(problem?.contains("does not export warren_plugin_v1") == true)
    }

    @Test func aTableWithoutAFunctionIsRefused() async throws {
        let source = ExamplePlugins.minimalSource().replacingOccurrences(of: "init, handle, destroy", with: "init, 0, destroy")
        #expect(PluginProbe.problem(loading: try await ExamplePlugins.compile(source))?.contains("lacks init, handle or destroy") == true)
    }

    @Test func aFileThatIsNotALibraryIsRefused() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("not-a-library-\(UUID().uuidString).so").path
        try "hello".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(PluginProbe.problem(loading: path)?.contains("cannot be loaded") == true)
        #expect(PluginProbe.problem(loading: "/nonexistent/libx.so")?.contains("does not exist") == true)
    }

    /// Unloading a Swift library leaves the Swift runtime pointing into unmapped conformance
    /// records: the next dynamic cast anywhere crashes. A check must therefore leave it loaded.
    @Test func checkingASwiftPluginLeavesItLoaded() throws {
        let library = try ExamplePlugins.library(.swift)
        #expect(PluginProbe.problem(loading: library) == nil)
        #expect(dlopen(library, RTLD_NOW | RTLD_NOLOAD) != nil)
        let value: Any = [1: "x"]
        #expect(!(value is any Error), "a conformance lookup after the check still works")
    }
}
