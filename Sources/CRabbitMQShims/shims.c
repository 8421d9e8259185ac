#define _GNU_SOURCE
#include "CRabbitMQShims.h"

#include <amqp_ssl_socket.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

static amqp_table_entry_t boolean_entry(const char *key) {
  amqp_table_entry_t entry;
  memset(&entry, 0, sizeof(entry));
  entry.key = amqp_cstring_bytes(key);
  entry.value.kind = AMQP_FIELD_KIND_BOOLEAN;
  entry.value.value.boolean = 1;
  return entry;
}

static amqp_table_entry_t string_entry(const char *key, const char *value) {
  amqp_table_entry_t entry;
  memset(&entry, 0, sizeof(entry));
  entry.key = amqp_cstring_bytes(key);
  entry.value.kind = AMQP_FIELD_KIND_UTF8;
  entry.value.value.bytes = amqp_cstring_bytes(value);
  return entry;
}

amqp_rpc_reply_t warren_amqp_login(amqp_connection_state_t conn, const char *vhost, int channel_max,
                                   int frame_max, int heartbeat, const char *connection_name,
                                   const char *product_version, int sasl_external, const char *user,
                                   const char *password) {
  amqp_table_entry_t capabilities[4];
  capabilities[0] = boolean_entry("consumer_cancel_notify");
  capabilities[1] = boolean_entry("connection.blocked");
  capabilities[2] = boolean_entry("publisher_confirms");
  capabilities[3] = boolean_entry("basic.nack");

  amqp_table_entry_t properties[3];
  memset(&properties[0], 0, sizeof(properties[0]));
  properties[0].key = amqp_cstring_bytes("capabilities");
  properties[0].value.kind = AMQP_FIELD_KIND_TABLE;
  properties[0].value.value.table.num_entries = 4;
  properties[0].value.value.table.entries = capabilities;
  properties[1] = string_entry("connection_name", connection_name);
  properties[2] = string_entry("warren_version", product_version);

  amqp_table_t table;
  table.num_entries = 3;
  table.entries = properties;

  if (sasl_external) {
    return amqp_login_with_properties(conn, vhost, channel_max, frame_max, heartbeat, &table,
                                      AMQP_SASL_METHOD_EXTERNAL, user);
  }
  return amqp_login_with_properties(conn, vhost, channel_max, frame_max, heartbeat, &table,
                                    AMQP_SASL_METHOD_PLAIN, user, password);
}

int warren_eventfd_create(void) {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

void warren_eventfd_signal(int fd) {
  uint64_t one = 1;
  ssize_t written;
  do {
    written = write(fd, &one, sizeof(one));
  } while (written < 0 && errno == EINTR);
}

void warren_eventfd_drain(int fd) {
  uint64_t value;
  ssize_t got;
  do {
    got = read(fd, &value, sizeof(value));
  } while (got < 0 && errno == EINTR);
}

int warren_poll2(int fd_a, int fd_b, int timeout_ms, int *ready_a, int *ready_b) {
  struct pollfd fds[2];
  memset(fds, 0, sizeof(fds));
  fds[0].fd = fd_a;
  fds[0].events = POLLIN;
  fds[1].fd = fd_b;
  fds[1].events = POLLIN;
  int rc = poll(fds, 2, timeout_ms);
  if (rc < 0) {
    *ready_a = 0;
    *ready_b = 0;
    return -errno;
  }
  const short mask = POLLIN | POLLERR | POLLHUP | POLLNVAL;
  *ready_a = (fd_a >= 0 && (fds[0].revents & mask)) ? 1 : 0;
  *ready_b = (fd_b >= 0 && (fds[1].revents & mask)) ? 1 : 0;
  return rc;
}

int warren_epoll2_open(int fd_a, int fd_b) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return -errno;
  const int fds[2] = {fd_a, fd_b};
  for (uint32_t i = 0; i < 2; i++) {
    if (fds[i] < 0) continue;
    struct epoll_event event;
    memset(&event, 0, sizeof(event));
    event.events = EPOLLIN;
    event.data.u32 = i;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &event) != 0) {
      int error = errno;
      close(ep);
      return -error;
    }
  }
  return ep;
}

int warren_epoll2_wait(int ep, int timeout_ms, int *ready_a, int *ready_b) {
  struct epoll_event events[2];
  *ready_a = 0;
  *ready_b = 0;
  int rc = epoll_wait(ep, events, 2, timeout_ms);
  if (rc < 0) return -errno;
  for (int i = 0; i < rc; i++) {
    if (events[i].data.u32 == 0) {
      *ready_a = 1;
    } else {
      *ready_b = 1;
    }
  }
  return rc;
}

int warren_set_tcp_options(int fd, int keepalive_idle_s, int keepalive_interval_s, int keepalive_count,
                           unsigned int user_timeout_ms) {
  int on = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) != 0) return -errno;
  if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &keepalive_idle_s, sizeof(keepalive_idle_s)) != 0)
    return -errno;
  if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &keepalive_interval_s, sizeof(keepalive_interval_s)) != 0)
    return -errno;
  if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &keepalive_count, sizeof(keepalive_count)) != 0)
    return -errno;
  if (setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof(user_timeout_ms)) != 0)
    return -errno;
  return 0;
}

int warren_tcp_cork(int fd, int on) {
  if (setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof(on)) != 0) return -errno;
  return 0;
}

void warren_tls_clear_errors(void) { ERR_clear_error(); }

warren_tls_failure warren_tls_last_failure(char *text, size_t text_length) {
  if (text_length > 0) text[0] = '\0';
  unsigned long error = ERR_peek_last_error();
  if (error == 0) return WARREN_TLS_FAILURE_UNKNOWN;
  const char *reason = ERR_reason_error_string(error);
  if (reason != NULL && text_length > 0) {
    strncpy(text, reason, text_length - 1);
    text[text_length - 1] = '\0';
  }
  if (ERR_GET_LIB(error) != ERR_LIB_SSL) return WARREN_TLS_FAILURE_OTHER;
  switch (ERR_GET_REASON(error)) {
  case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    return WARREN_TLS_FAILURE_CERTIFICATE_REQUIRED;
  case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
  case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
  case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
  case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
  case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
    return WARREN_TLS_FAILURE_CLIENT_CERTIFICATE_REFUSED;
  case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
  case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    return WARREN_TLS_FAILURE_CLIENT_CERTIFICATE_EXPIRED_OR_REVOKED;
  default:
    return WARREN_TLS_FAILURE_OTHER;
  }
}

int warren_tls_require_tls12(amqp_socket_t *socket) {
  SSL_CTX *context = (SSL_CTX *)amqp_ssl_socket_get_context(socket);
  if (context == NULL) return -1;
  return SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION) == 1 ? 0 : -1;
}

void warren_name_thread(const char *name) { prctl(PR_SET_NAME, name, 0, 0, 0); }

static _Thread_local const void *current_loop;

const void *warren_current_loop(void) { return current_loop; }

void warren_set_current_loop(const void *loop) { current_loop = loop; }

int warren_open_unnamed_tmpfile(const char *dir) {
  int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) return fd;
  if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) return -errno;
  char path[PATH_MAX];
  int n = snprintf(path, sizeof path, "%s/warren-spool-XXXXXX", dir);
  if (n < 0 || (size_t)n >= sizeof path) return -ENAMETOOLONG;
  fd = mkostemp(path, O_CLOEXEC);
  if (fd < 0) return -errno;
  if (unlink(path) != 0) {
    int saved = errno;
    close(fd);
    return -saved;
  }
  return fd;
}
