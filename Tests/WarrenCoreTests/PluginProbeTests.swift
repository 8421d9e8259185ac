import Foundation
import Testing

@testable import WarrenCore

@Suite("Plugin library checks")
struct PluginProbeTests {
    static let header = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Sources/WarrenPlugin/include").path

    /// Compiles `source` into a shared library in a temporary directory.
    static func build(_ source: String) throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-plugin-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let c = directory.appendingPathComponent("plugin.c").path
        let library = directory.appendingPathComponent("libplugin.so").path
        try source.write(toFile: c, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["cc", "-shared", "-fPIC", "-I", header, "-o", library, c]
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw CocoaError(.fileWriteUnknown) }
        return library
    }

    static func plugin(abi: String) -> String {
        """
        #include "warren_plugin.h"
        static int init(const char *c, void **s) { (void)c; *s = 0; return 0; }
        static void handle(void *s, const warren_message *m, warren_result *r) { (void)s; (void)m; r->verdict = WARREN_VERDICT_ACK; }
        static void destroy(void *s) { (void)s; }
        static const warren_plugin_v1_t table = { \(abi), init, handle, destroy };
        const warren_plugin_v1_t *warren_plugin_v1(void) { return &table; }
        """
    }

    @Test func aLibraryBuiltAgainstThisHeaderIsAccepted() throws {
        #expect(PluginProbe.problem(loading: try Self.build(Self.plugin(abi: "WARREN_PLUGIN_ABI_VERSION"))) == nil)
    }

    @Test func anotherABIVersionIsRefusedWithBothVersionsNamed() throws {
        let problem = PluginProbe.problem(loading: try Self.build(Self.plugin(abi: "7u")))
        #expect(problem?.contains("ABI version 7") == true)
        #expect(problem?.contains("speaks version 1") == true)
    }

    @Test func aLibraryWithoutTheEntryPointIsRefused() throws {
        let problem = PluginProbe.problem(loading: try Self.build("int something_else(void) { return 1; }"))
        #expect(problem?.contains("does not export warren_plugin_v1") == true)
    }

    @Test func aFileThatIsNotALibraryIsRefused() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("not-a-library-\(UUID().uuidString).so").path
        try "hello".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(PluginProbe.problem(loading: path)?.contains("cannot be loaded") == true)
        #expect(PluginProbe.problem(loading: "/nonexistent/libx.so")?.contains("does not exist") == true)
    }
}
