import Glibc

/// The control socket's file: what is at the path before warren binds, its mode after, and its
/// removal on stop. Plain system calls: NIO binds, but has no "is someone listening there?"
/// check, and its own clean-up removes any socket file, a live one included.
enum ControlSocketFile {
    /// What the path holds before binding.
    enum Existing: Equatable {
        case nothing
        /// A socket nobody listens on (a warren that did not stop cleanly): safe to remove.
        case staleSocket
    }

    /// Checks `path` before binding; throws when it must not be replaced.
    static func inspect(_ path: String) throws(ControlServer.BindError) -> Existing {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            let code = errno
            if code == ENOENT {
                // Is it the directory that is missing? Then binding cannot work either.
                let directory = Self.directory(of: path)
                var directoryInfo = stat()
                if stat(directory, &directoryInfo) != 0 {
                    throw ControlServer.BindError(
                        .directoryMissing, path: path, reason: "the directory \(directory) does not exist (\(describe(errno)))")
                }
                return .nothing
            }
            throw ControlServer.BindError(code == EACCES ? .permissionDenied : .cannotBind, path: path, reason: describe(code))
        }
        guard info.st_mode & S_IFMT == S_IFSOCK else {
            throw ControlServer.BindError(
                .notASocket, path: path, reason: "it exists and is not a socket: remove it, or set [control] socket to another path")
        }
        switch connectProbe(path) {
        case 0:
            throw ControlServer.BindError(
                .inUse, path: path,
                reason: "another warren is listening there: stop it, or give this one its own [control] socket (socket = \"\" turns it off)")
        case ECONNREFUSED:
            return .staleSocket
        case EAGAIN:
            // Its backlog is full: someone listens.
            throw ControlServer.BindError(.inUse, path: path, reason: "another process is listening there (its backlog is full)")
        case let code:
            throw ControlServer.BindError(code == EACCES ? .permissionDenied : .cannotBind, path: path, reason: describe(code))
        }
    }

    /// Removes a stale socket found by `inspect`.
    static func removeStale(_ path: String) throws(ControlServer.BindError) {
        guard unlink(path) == 0 || errno == ENOENT else {
            throw ControlServer.BindError(.cannotBind, path: path, reason: "cannot remove the stale socket: \(describe(errno))")
        }
    }

    /// Gives the bound socket its mode; returns its identity, so that `remove` takes away only
    /// this socket and never one a later warren bound at the same path.
    static func adopt(_ path: String, mode: mode_t) throws(ControlServer.BindError) -> Identity {
        guard chmod(path, mode) == 0 else {
            throw ControlServer.BindError(.cannotBind, path: path, reason: "chmod: \(describe(errno))")
        }
        var info = stat()
        guard lstat(path, &info) == 0 else {
            throw ControlServer.BindError(.cannotBind, path: path, reason: describe(errno))
        }
        return Identity(device: info.st_dev, inode: info.st_ino)
    }

    struct Identity: Sendable, Equatable {
        var device: dev_t
        var inode: ino_t
    }

    /// Removes the socket file if it is still the one `adopt` saw.
    static func remove(_ path: String, identity: Identity) {
        var info = stat()
        guard lstat(path, &info) == 0, Identity(device: info.st_dev, inode: info.st_ino) == identity else { return }
        unlink(path)
    }

    /// 0 when something accepts a connection at `path`, else the errno of the attempt.
    private static func connectProbe(_ path: String) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        return UnixSocketAddress.withAddress(path) { address, length in
            Glibc.connect(fd, address, length) == 0 ? 0 : errno
        } ?? ENAMETOOLONG
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    static func describe(_ code: Int32) -> String {
        String(cString: strerror(code))
    }
}

/// A `sockaddr_un` for a path, for the few plain system calls on unix sockets.
enum UnixSocketAddress {
    /// Calls `body` with the address, or returns nil when the path does not fit in `sun_path`.
    static func withAddress<T>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T? {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity, !bytes.contains(0) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.size)
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) }
        }
    }
}
