#ifndef WARREN_CRABBITMQ_SHIMS_H
#define WARREN_CRABBITMQ_SHIMS_H

#include <amqp.h>
#include <stdint.h>

/// Logs in with `amqp_login_with_properties`, which Swift cannot call because it is variadic.
/// The client-properties table carries the connection name and the capabilities Warren relies
/// on (consumer_cancel_notify, connection.blocked, publisher_confirms, basic.nack); librabbitmq
/// merges it with its own defaults. `sasl_external` selects EXTERNAL (client certificate) instead
/// of PLAIN, in which case `user` and `password` are ignored.
amqp_rpc_reply_t warren_amqp_login(amqp_connection_state_t conn, const char *vhost, int channel_max,
                                   int frame_max, int heartbeat, const char *connection_name,
                                   const char *product_version, int sasl_external, const char *user,
                                   const char *password);

/// A non-blocking, close-on-exec eventfd used to wake an I/O loop out of poll(). -errno on failure.
int warren_eventfd_create(void);
/// Adds 1 to the eventfd counter. A full counter (EAGAIN) still leaves the fd readable, so it is ignored.
void warren_eventfd_signal(int fd);
/// Resets the eventfd counter to zero.
void warren_eventfd_drain(int fd);

/// poll() on up to two fds for input (fd < 0 is ignored). Returns poll's result or -errno;
/// *ready_a / *ready_b are set when the fd is readable or in error/hang-up state.
int warren_poll2(int fd_a, int fd_b, int timeout_ms, int *ready_a, int *ready_b);

/// A close-on-exec epoll instance watching up to two fds for input (fd < 0 is left out), level
/// triggered: what `warren_poll2` does without registering both fds with the kernel again on
/// every call. Returns the epoll fd or -errno.
int warren_epoll2_open(int fd_a, int fd_b);
/// Waits on an instance from `warren_epoll2_open`. Returns epoll_wait's result or -errno;
/// *ready_a / *ready_b are set when that fd is readable or in error/hang-up state (epoll always
/// reports those).
int warren_epoll2_wait(int ep, int timeout_ms, int *ready_a, int *ready_b);

/// TCP keepalive and TCP_USER_TIMEOUT on a connected socket: the backstop for librabbitmq 0.11's
/// publish-hang bug (#780), where a send on a dead peer can block forever. Returns 0 or -errno.
/// TCP_CORK on (1) or off (0): while corked, the kernel holds small writes and sends them as full
/// segments when uncorked. 0 or -errno.
int warren_tcp_cork(int fd, int on);

/// An unnamed temporary file in `dir`, open for reading and writing, close-on-exec, mode 0600:
/// `open(dir, O_TMPFILE)`, or where the file system does not support that, `mkstemp` followed
/// at once by `unlink`. Either way the file has no name, so its space is returned when the last
/// descriptor closes, even after a crash. Returns the descriptor or -errno.
int warren_open_unnamed_tmpfile(const char *dir);

int warren_set_tcp_options(int fd, int keepalive_idle_s, int keepalive_interval_s, int keepalive_count,
                           unsigned int user_timeout_ms);

/// Why OpenSSL says a TLS session failed, from the calling thread's OpenSSL error queue.
/// librabbitmq 0.11 reports every TLS failure after the handshake as a bare
/// AMQP_STATUS_SSL_ERROR; the broker's alert (kept in the queue) is what tells the causes apart.
typedef enum {
  /// Nothing TLS-specific in the queue.
  WARREN_TLS_FAILURE_UNKNOWN = 0,
  /// TLS 1.3 `certificate_required`: the broker wants a client certificate and got none.
  WARREN_TLS_FAILURE_CERTIFICATE_REQUIRED = 1,
  /// `bad_certificate`, `unknown_ca`, `certificate_unknown`, `unsupported_certificate`, or a
  /// TLS 1.2 `handshake_failure`: the broker did not accept the client certificate (or, for TLS
  /// 1.2, got none).
  WARREN_TLS_FAILURE_CLIENT_CERTIFICATE_REFUSED = 2,
  /// `certificate_expired` / `certificate_revoked` about the client certificate.
  WARREN_TLS_FAILURE_CLIENT_CERTIFICATE_EXPIRED_OR_REVOKED = 3,
  /// Another OpenSSL error; its text is in the buffer.
  WARREN_TLS_FAILURE_OTHER = 4,
} warren_tls_failure;

/// Empties this thread's OpenSSL error queue, so that a later warren_tls_last_failure explains
/// only what happened in between.
void warren_tls_clear_errors(void);

/// Classifies the newest error in this thread's OpenSSL error queue and copies OpenSSL's reason
/// text (NUL-terminated, possibly empty) into `text`. Leaves the queue as it is.
warren_tls_failure warren_tls_last_failure(char *text, size_t text_length);

/// Sets the minimum protocol of a TLS socket's SSL_CTX to TLS 1.2. librabbitmq 0.11's
/// amqp_ssl_socket_set_ssl_versions only knows TLS <= 1.2 and may not touch the context's
/// minimum in a way that survives TLS 1.3 negotiation; this states it directly. Returns 0 or -1.
int warren_tls_require_tls12(amqp_socket_t *socket);

/// Names the calling thread for `top -H` and `ps -L` (prctl PR_SET_NAME: the first 15 bytes).
void warren_name_thread(const char *name);

/// The I/O loop the calling thread runs (an opaque identity of its command queue), or NULL:
/// per thread, set by the loop's thread while it runs.
const void *warren_current_loop(void);
void warren_set_current_loop(const void *loop);

#endif
