import Foundation
internal import WarrenPlugin

/// A plugin shared library, loaded and checked: it exports `warren_plugin_v1`, whose table speaks
/// this warren's ABI version and has every function. `warren check` (through `PluginProbe`) and
/// the plugin handler load libraries only through here, so both refuse the same libraries with
/// the same words.
///
/// A library is never unloaded (no `dlclose`). Unloading a Swift library leaves the Swift
/// runtime pointing into its unmapped conformance and metadata sections, so the next dynamic cast
/// anywhere in warren crashes; a C library may have started threads or registered callbacks. A
/// library stays mapped for the life of the process, and loading the same path again (the check
/// at start-up, then the handler) returns the same mapping without running its constructors twice.
struct PluginLibrary: @unchecked Sendable {
    // @unchecked Sendable: the fields are immutable; the function pointers point into a library
    // that stays mapped for the life of the process (it is never unloaded).

    static let entryPoint = "warren_plugin_v1"

    struct LoadError: Error, CustomStringConvertible {
        var description: String
    }

    /// The path as configured, for messages.
    let path: String
    /// The table's functions, checked non-NULL once here instead of on every call.
    let initialize: @convention(c) (UnsafePointer<CChar>?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32
    let handle: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<warren_message>?, UnsafeMutablePointer<warren_result>?) -> Void
    let destroy: @convention(c) (UnsafeMutableRawPointer?) -> Void

    /// Loads `path` with `RTLD_NOW | RTLD_LOCAL`: every symbol is resolved now (a missing one is a
    /// start-up error, not a crash on the first message) and none leaks into other plugins.
    static func open(_ path: String) throws(LoadError) -> PluginLibrary {
        guard FileManager.default.fileExists(atPath: path) else {
            throw LoadError(description: "\(path) does not exist")
        }
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown error"
            throw LoadError(description: "\(path) cannot be loaded: \(reason)")
        }
        guard let symbol = dlsym(handle, entryPoint) else {
            throw LoadError(description: "\(path) does not export \(entryPoint); is it a Warren plugin?")
        }
        let entry = unsafeBitCast(symbol, to: warren_plugin_v1_fn.self)
        guard let table = entry() else {
            throw LoadError(description: "\(path): \(entryPoint)() returned no plugin table")
        }
        // Only the version may be read before it is known to match: a table of another ABI
        // version may have another layout.
        let version = table.pointee.abi_version
        guard (WARREN_PLUGIN_ABI_VERSION_OLDEST...WARREN_PLUGIN_ABI_VERSION).contains(version) else {
            throw LoadError(description: """
                \(path) was built for plugin ABI version \(version), but this warren speaks versions \
                \(WARREN_PLUGIN_ABI_VERSION_OLDEST) to \(WARREN_PLUGIN_ABI_VERSION); rebuild it against this warren's warren_plugin.h
                """)
        }
        guard let initialize = table.pointee.`init`, let handleFunction = table.pointee.handle, let destroy = table.pointee.destroy else {
            throw LoadError(description: "\(path): the plugin table of \(entryPoint)() lacks init, handle or destroy")
        }
        return PluginLibrary(path: path, initialize: initialize, handle: handleFunction, destroy: destroy)
    }
}
