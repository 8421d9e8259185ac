/// `[control]`: where `warren ctl` finds the running warren.
extension ConfigurationDecoding {
    /// The longest path a unix socket address holds: `sun_path` is 108 bytes with the final NUL.
    static let maxSocketPathBytes = 107

    func decodeControl(_ table: TableReader) -> ControlConfiguration {
        defer { table.finish() }
        var control = ControlConfiguration()
        guard let socket = table.string("socket") else { return control }
        control.socketConfigured = true
        let path = table.at("socket")
        if socket.isEmpty {
            control.socket = nil
        } else if !socket.hasPrefix("/") {
            d.report(path, "expected an absolute path (starting with /) or \"\" to turn the control socket off, got \"\(socket)\"")
        } else if socket.utf8.count > Self.maxSocketPathBytes {
            d.report(
                path,
                "a unix socket path holds at most \(Self.maxSocketPathBytes) bytes, this one has \(socket.utf8.count): choose a shorter path")
        } else if socket.utf8.contains(0) {
            d.report(path, "the path contains a NUL byte")
        } else {
            control.socket = socket
        }
        return control
    }
}
