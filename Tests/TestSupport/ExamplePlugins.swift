import Foundation

/// The example plugins of Examples/plugins/, which `swift build --build-tests` builds as shared
/// libraries into the build products directory, and plugins compiled from C source at test time.
public enum ExamplePlugins {
    public enum Language: String, Sendable, CaseIterable, CustomStringConvertible {
        case c = "WarrenDemoPluginC"
        case swift = "WarrenDemoPluginSwift"

        public var description: String { self == .c ? "C" : "Swift" }
    }

    public struct Missing: Error, CustomStringConvertible {
        public var description: String
    }

    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// `lib<product>.so` next to the running test binary (the products directory SwiftPM built it
    /// into, whatever the triple or configuration), else under the package's `.build/debug`.
    public static func library(_ language: Language) throws -> String {
        let name = "lib\(language.rawValue).so"
        let binary = URL(fileURLWithPath: CommandLine.arguments[0], relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
        let candidates = [
            binary.deletingLastPathComponent().appendingPathComponent(name).path,
            repositoryRoot.appendingPathComponent(".build/debug/\(name)").path,
        ]
        guard let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
            throw Missing(description: "\(name) not found in \(candidates); run `swift build --build-tests` first")
        }
        return found
    }

    /// Compiles C `source` against warren_plugin.h into a shared library in a new temporary
    /// directory, with the system's `cc` (off the cooperative pool).
    public static func compile(_ source: String) async throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-plugin-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let file = directory.appendingPathComponent("plugin.c").path
        let library = directory.appendingPathComponent("libplugin.so").path
        try source.write(toFile: file, atomically: true, encoding: .utf8)
        let header = repositoryRoot.appendingPathComponent("Sources/WarrenPlugin/include").path
        let cc = try await runToCompletion("/usr/bin/env", ["cc", "-shared", "-fPIC", "-I", header, "-o", library, file])
        guard cc.status == 0 else { throw Missing(description: "cc failed on \(file): \(cc.stderrText)") }
        return library
    }

    /// A minimal plugin that acks everything, whose table claims ABI version `abi` (a C
    /// expression).
    public static func minimalSource(abi: String = "WARREN_PLUGIN_ABI_VERSION") -> String {
        """
        #include "warren_plugin.h"
        static int init(const char *c, void **s) { (void)c; *s = 0; return 0; }
        static void handle(void *s, const warren_message *m, warren_result *r) { (void)s; (void)m; r->verdict = WARREN_VERDICT_ACK; }
        static void destroy(void *s) { (void)s; }
        static const warren_plugin_v1_t table = { \(abi), init, handle, destroy };
        const warren_plugin_v1_t *warren_plugin_v1(void) { return &table; }
        """
    }
}
