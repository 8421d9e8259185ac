/*
 * bench-consume: the baseline consumer. Drains COUNT messages from QUEUE with basic.qos
 * PREFETCH and manual acks, then exits. Written for speed, so that it marks what librabbitmq 0.11
 * can do on this machine: one thread, frames read with amqp_simple_wait_frame and never assembled
 * into bodies (the body bytes are only counted), one ack per message (`each`) or one
 * multiple=true ack every K messages (`multiple K`; K must not exceed PREFETCH, or the broker
 * stops delivering before we ack).
 *
 *   bench-consume [-l FILE] URL QUEUE PREFETCH COUNT each|multiple [K]
 *
 * -l FILE: also record, per message, receive time minus the x-bench-sent-ns header (CLOCK_REALTIME
 * ns, set by bench-publish -t) as native int64s in FILE: the latency floor of a plain consumer.
 *
 * Prints `consumed=N seconds=S rate=R` (first delivery to last ack) on stdout. scripts/bench
 * times it from the broker's side instead, the same way as warren.
 */
#include "bench.h"

#include <unistd.h>

/* The x-bench-sent-ns header's value, or -1. */
static int64_t sent_ns(const amqp_basic_properties_t *props) {
    if (!(props->_flags & AMQP_BASIC_HEADERS_FLAG)) return -1;
    for (int i = 0; i < props->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &props->headers.entries[i];
        if (e->key.len != strlen(BENCH_SENT_HEADER) || memcmp(e->key.bytes, BENCH_SENT_HEADER, e->key.len) != 0)
            continue;
        if (e->value.kind == AMQP_FIELD_KIND_I64) return e->value.value.i64;
        if (e->value.kind == AMQP_FIELD_KIND_U64) return (int64_t)e->value.value.u64;
    }
    return -1;
}

int main(int argc, char **argv) {
    const char *latency_path = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "l:")) != -1) {
        if (opt == 'l') latency_path = optarg;
        else bench_die("usage: bench-consume [-l FILE] URL QUEUE PREFETCH COUNT each|multiple [K]");
    }
    argc -= optind;
    argv += optind;
    if (argc < 5) bench_die("usage: bench-consume [-l FILE] URL QUEUE PREFETCH COUNT each|multiple [K]");
    const char *url = argv[0], *queue = argv[1];
    int prefetch = atoi(argv[2]);
    long count = atol(argv[3]);
    int multiple = strcmp(argv[4], "multiple") == 0;
    if (!multiple && strcmp(argv[4], "each") != 0) bench_die("ack mode is each or multiple");
    long every = multiple ? (argc > 5 ? atol(argv[5]) : (prefetch / 2 > 0 ? prefetch / 2 : 1)) : 1;
    if (prefetch < 1 || prefetch > 65535 || count < 1 || every < 1 || every > prefetch)
        bench_die("need 1 <= PREFETCH <= 65535, COUNT >= 1, 1 <= K <= PREFETCH");

    int64_t *latencies = NULL;
    if (latency_path != NULL) {
        latencies = malloc(sizeof(int64_t) * (size_t)count);
        if (latencies == NULL) bench_die("out of memory");
    }
    long recorded = 0;

    amqp_connection_state_t conn = bench_connect(url);
    amqp_basic_qos(conn, 1, 0, (uint16_t)prefetch, 0);
    bench_check_reply(amqp_get_rpc_reply(conn), "basic.qos");
    amqp_basic_consume(conn, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    bench_check_reply(amqp_get_rpc_reply(conn), "basic.consume");

    long done = 0, unacked = 0;
    uint64_t tag = 0, body_size = 0, body_seen = 0;
    int in_message = 0;
    int64_t first_ns = 0;
    while (done < count) {
        amqp_frame_t frame;
        amqp_maybe_release_buffers(conn);
        bench_check(amqp_simple_wait_frame(conn, &frame), "waiting for a frame");
        bench_check_frame(&frame);
        int complete = 0;
        if (frame.frame_type == AMQP_FRAME_METHOD && frame.payload.method.id == AMQP_BASIC_DELIVER_METHOD) {
            tag = ((amqp_basic_deliver_t *)frame.payload.method.decoded)->delivery_tag;
            in_message = 1;
            if (first_ns == 0) first_ns = bench_now_ns(CLOCK_MONOTONIC);
        } else if (frame.frame_type == AMQP_FRAME_HEADER && in_message) {
            if (latencies != NULL) {
                int64_t sent = sent_ns(frame.payload.properties.decoded);
                if (sent > 0) latencies[recorded++] = bench_now_ns(CLOCK_REALTIME) - sent;
            }
            body_size = frame.payload.properties.body_size;
            body_seen = 0;
            complete = body_size == 0;
        } else if (frame.frame_type == AMQP_FRAME_BODY && in_message) {
            body_seen += frame.payload.body_fragment.len;
            complete = body_seen >= body_size;
        }
        if (!complete) continue;
        in_message = 0;
        done++;
        unacked++;
        if (!multiple) {
            bench_check(amqp_basic_ack(conn, 1, tag, 0), "basic.ack");
            unacked = 0;
        } else if (unacked >= every || done == count) {
            bench_check(amqp_basic_ack(conn, 1, tag, 1), "basic.ack multiple");
            unacked = 0;
        }
    }
    double seconds = (double)(bench_now_ns(CLOCK_MONOTONIC) - first_ns) / 1e9;
    bench_close(conn);

    if (latencies != NULL) {
        FILE *f = fopen(latency_path, "wb");
        if (f == NULL || fwrite(latencies, sizeof(int64_t), (size_t)recorded, f) != (size_t)recorded || fclose(f) != 0)
            bench_die("cannot write %s", latency_path);
    }
    printf("consumed=%ld seconds=%.3f rate=%.0f\n", done, seconds, (double)done / seconds);
    return 0;
}
