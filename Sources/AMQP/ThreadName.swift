internal import CRabbitMQShims

/// Names the calling thread as `top -H` and `ps -L` show it (at most 15 bytes are kept).
/// Foundation's `Thread.name` does not reach the kernel on Linux.
public func nameCurrentThread(_ name: String) {
    warren_name_thread(name)
}
