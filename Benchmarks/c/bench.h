/*
 * bench.h: what the C benchmark tools share (scripts/bench compiles each .c in this folder with
 * `cc -O2 -I Benchmarks/c X.c -lrabbitmq`). Header-only so that every tool stays one command to
 * build. These tools are the "physical limit" baselines that Warren is compared against: plain,
 * single-threaded librabbitmq 0.11 written for speed (no heartbeats, frames read raw without
 * assembling bodies into malloc'd buffers, no logging on the hot path).
 */
#ifndef WARREN_BENCH_H
#define WARREN_BENCH_H

#define _GNU_SOURCE
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The header that carries the publish time (CLOCK_REALTIME, ns) for latency measurements. The
 * message timestamp property has one-second resolution, too coarse for milliseconds. */
#define BENCH_SENT_HEADER "x-bench-sent-ns"

static inline void bench_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static inline int64_t bench_now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void bench_check(int status, const char *context) {
    if (status < 0) bench_die("%s: %s", context, amqp_error_string2(status));
}

static inline void bench_check_reply(amqp_rpc_reply_t reply, const char *context) {
    switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        bench_die("%s: %s", context, amqp_error_string2(reply.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = reply.reply.decoded;
            bench_die("%s: channel closed %u %.*s", context, m->reply_code, (int)m->reply_text.len,
                      (const char *)m->reply_text.bytes);
        } else if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = reply.reply.decoded;
            bench_die("%s: connection closed %u %.*s", context, m->reply_code, (int)m->reply_text.len,
                      (const char *)m->reply_text.bytes);
        }
        bench_die("%s: server exception, method 0x%08x", context, reply.reply.id);
        break;
    default:
        bench_die("%s: no reply", context);
    }
}

/* Connects and logs in to an amqp:// URL, opens channel 1. Heartbeats are off: every tool runs
 * for seconds on localhost, and 0.11's heartbeat path is the one with the infinite-wait bug
 * (rabbitmq-c issue #780, fixed in 0.14: a publish past 2x the heartbeat waits for input forever). */
static inline amqp_connection_state_t bench_connect(const char *url) {
    struct amqp_connection_info info;
    char *copy = strdup(url);
    if (copy == NULL) bench_die("out of memory");
    amqp_default_connection_info(&info);
    bench_check(amqp_parse_url(copy, &info), "parsing the URL");
    if (info.ssl) bench_die("amqps:// is not supported by the benchmark tools");
    /* amqp_parse_url reads "amqp://host/" as the vhost "", Warren (and RabbitMQ's URI spec) as "/". */
    if (info.vhost == NULL || info.vhost[0] == '\0') info.vhost = "/";
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *socket = amqp_tcp_socket_new(conn);
    if (socket == NULL) bench_die("cannot create a TCP socket");
    bench_check(amqp_socket_open(socket, info.host, info.port), "connecting");
    bench_check_reply(amqp_login(conn, info.vhost, 0, AMQP_DEFAULT_FRAME_SIZE, 0, AMQP_SASL_METHOD_PLAIN,
                                 info.user, info.password),
                      "logging in");
    amqp_channel_open(conn, 1);
    bench_check_reply(amqp_get_rpc_reply(conn), "opening channel 1");
    free(copy);
    return conn;
}

static inline void bench_close(amqp_connection_state_t conn) {
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
}

/* Fails on a frame that means the channel or the connection is gone. */
static inline void bench_check_frame(const amqp_frame_t *frame) {
    if (frame->frame_type != AMQP_FRAME_METHOD) return;
    amqp_method_number_t id = frame->payload.method.id;
    if (id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_t *m = frame->payload.method.decoded;
        bench_die("channel closed by the broker: %u %.*s", m->reply_code, (int)m->reply_text.len,
                  (const char *)m->reply_text.bytes);
    }
    if (id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_t *m = frame->payload.method.decoded;
        bench_die("connection closed by the broker: %u %.*s", m->reply_code, (int)m->reply_text.len,
                  (const char *)m->reply_text.bytes);
    }
}

#endif
