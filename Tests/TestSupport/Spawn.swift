import CSpawn
import Glibc

/// Runs `argv` (`argv[0]` an absolute path) to completion and returns its exit status (128 +
/// the signal if one ended it), or nil if it could not start; stdin is /dev/null, stdout and
/// stderr go to `outputPath` (or /dev/null). Blocking: call it through `offPool`.
///
/// It starts the child as warren starts a handler's (`warren_spawn`): only descriptors 0-2
/// reach it. The test process holds sockets without close-on-exec (SwiftNIO's listeners and
/// accepted connections, raw test clients); a child that inherited one, or a daemon it starts
/// (`rabbitmq-server -detached`, a cluster node), would keep that connection open after the
/// test closed it, and the peer would never see the close.
public func spawnAndWait(_ argv: [String], outputPath: String? = nil) -> Int32? {
    guard let executable = argv.first else { return nil }
    let input = open("/dev/null", O_RDONLY | O_CLOEXEC)
    let output = open(outputPath ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    defer {
        if input >= 0 { close(input) }
        if output >= 0 { close(output) }
    }
    guard input >= 0, output >= 0 else { return nil }
    let arguments = argv.map { strdup($0) } + [nil]
    defer { for pointer in arguments { free(pointer) } }
    var pid: pid_t = 0
    guard warren_spawn(&pid, executable, arguments, environ, nil, input, output, output) == 0 else { return nil }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
}
