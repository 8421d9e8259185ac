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

/// TCP keepalive and TCP_USER_TIMEOUT on a connected socket: the backstop for librabbitmq 0.11's
/// publish-hang bug (#780), where a send on a dead peer can block forever. Returns 0 or -errno.
int warren_set_tcp_options(int fd, int keepalive_idle_s, int keepalive_interval_s, int keepalive_count,
                           unsigned int user_timeout_ms);

#endif
