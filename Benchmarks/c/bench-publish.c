/*
 * bench-publish: the baseline publisher. Publishes COUNT transient messages of SIZE bytes to
 * the default exchange with routing key QUEUE, in confirm mode with at most WINDOW unconfirmed
 * publishes, then waits for the last confirm. Written for speed: one thread, confirms read raw
 * (a multiple=true ack settles every sequence number up to its tag), input drained without
 * blocking every 64 publishes so that confirms keep flowing, and blocking reads only when the
 * window is full.
 *
 *   bench-publish [-m] [-t] [-r RATE] URL QUEUE COUNT SIZE WINDOW
 *
 * -m  mandatory publishes (what `warren publish` does); returns are counted.
 * -t  put the publish time (CLOCK_REALTIME ns, int64) in the x-bench-sent-ns header.
 * -r  pace at RATE messages per second on an absolute schedule (no drift, no catch-up bursts
 *     beyond what a late wake-up forces).
 *
 * Prints `published=N confirmed=N nacked=N returned=N seconds=S rate=R` (first publish to last
 * confirm) on stdout and exits 1 unless every publish was confirmed.
 */
#include "bench.h"

#include <unistd.h>

typedef struct tracker {
    uint8_t *settled; /* ring indexed by sequence number & mask */
    uint64_t mask;
    uint64_t low;     /* lowest unsettled sequence number */
    uint64_t next;    /* sequence number of the next publish */
    long confirmed, nacked, returned;
} tracker;

static void settle(tracker *t, uint64_t tag, int multiple, int nack) {
    uint64_t from = multiple ? t->low : tag;
    for (uint64_t s = from; s <= tag && s < t->next; s++) {
        if (s < t->low || t->settled[s & t->mask]) continue;
        t->settled[s & t->mask] = 1;
        if (nack) t->nacked++;
        else t->confirmed++;
    }
    while (t->low < t->next && t->settled[t->low & t->mask]) t->settled[t->low++ & t->mask] = 0;
}

static void handle(tracker *t, const amqp_frame_t *frame) {
    bench_check_frame(frame);
    if (frame->frame_type != AMQP_FRAME_METHOD) return; /* a return's header and body: skipped */
    switch (frame->payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        amqp_basic_ack_t *ack = frame->payload.method.decoded;
        settle(t, ack->delivery_tag, ack->multiple, 0);
        break;
    }
    case AMQP_BASIC_NACK_METHOD: {
        amqp_basic_nack_t *nack = frame->payload.method.decoded;
        settle(t, nack->delivery_tag, nack->multiple, 1);
        break;
    }
    case AMQP_BASIC_RETURN_METHOD:
        t->returned++;
        break;
    }
}

static void drain(amqp_connection_state_t conn, tracker *t) {
    struct timeval zero = {0, 0};
    for (;;) {
        amqp_frame_t frame;
        amqp_maybe_release_buffers(conn);
        int status = amqp_simple_wait_frame_noblock(conn, &frame, &zero);
        if (status == AMQP_STATUS_TIMEOUT) return;
        bench_check(status, "reading confirms");
        handle(t, &frame);
    }
}

static void wait_one(amqp_connection_state_t conn, tracker *t) {
    amqp_frame_t frame;
    amqp_maybe_release_buffers(conn);
    bench_check(amqp_simple_wait_frame(conn, &frame), "waiting for confirms");
    handle(t, &frame);
}

int main(int argc, char **argv) {
    int mandatory = 0, stamp = 0;
    double rate = 0;
    int opt;
    while ((opt = getopt(argc, argv, "mtr:")) != -1) {
        switch (opt) {
        case 'm': mandatory = 1; break;
        case 't': stamp = 1; break;
        case 'r': rate = atof(optarg); break;
        default: bench_die("usage: bench-publish [-m] [-t] [-r RATE] URL QUEUE COUNT SIZE WINDOW");
        }
    }
    argc -= optind;
    argv += optind;
    if (argc < 5) bench_die("usage: bench-publish [-m] [-t] [-r RATE] URL QUEUE COUNT SIZE WINDOW");
    const char *url = argv[0], *queue = argv[1];
    long count = atol(argv[2]), size = atol(argv[3]), window = atol(argv[4]);
    if (count < 1 || size < 0 || window < 1) bench_die("need COUNT >= 1, SIZE >= 0, WINDOW >= 1");

    tracker t = {0};
    uint64_t ring = 1;
    while (ring < (uint64_t)window * 2) ring <<= 1;
    t.settled = calloc(ring, 1);
    if (t.settled == NULL) bench_die("out of memory");
    t.mask = ring - 1;
    t.low = t.next = 1;

    char *body = malloc((size_t)size + 1);
    if (body == NULL) bench_die("out of memory");
    memset(body, 'x', (size_t)size);
    amqp_bytes_t body_bytes = {(size_t)size, body};

    amqp_connection_state_t conn = bench_connect(url);
    amqp_confirm_select(conn, 1);
    bench_check_reply(amqp_get_rpc_reply(conn), "confirm.select");

    amqp_table_entry_t header;
    header.key = amqp_cstring_bytes(BENCH_SENT_HEADER);
    header.value.kind = AMQP_FIELD_KIND_I64;
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof props);
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.delivery_mode = 1; /* transient */
    if (stamp) {
        props._flags |= AMQP_BASIC_HEADERS_FLAG;
        props.headers.num_entries = 1;
        props.headers.entries = &header;
    }
    amqp_bytes_t exchange = amqp_empty_bytes, routing_key = amqp_cstring_bytes(queue);

    int64_t started = bench_now_ns(CLOCK_MONOTONIC);
    double interval_ns = rate > 0 ? 1e9 / rate : 0;
    for (long i = 0; i < count; i++) {
        if (rate > 0) {
            int64_t due = started + (int64_t)(interval_ns * (double)i);
            if (bench_now_ns(CLOCK_MONOTONIC) < due) {
                drain(conn, &t);
                struct timespec ts = {due / 1000000000, due % 1000000000};
                while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {}
            }
        }
        while ((long)(t.next - t.low) >= window) wait_one(conn, &t);
        if ((i & 63) == 0) drain(conn, &t);
        if (stamp) header.value.value.i64 = bench_now_ns(CLOCK_REALTIME);
        bench_check(amqp_basic_publish(conn, 1, exchange, routing_key, mandatory, 0, &props, body_bytes), "basic.publish");
        t.next++;
    }
    while (t.low < t.next) wait_one(conn, &t);
    double seconds = (double)(bench_now_ns(CLOCK_MONOTONIC) - started) / 1e9;
    bench_close(conn);

    printf("published=%ld confirmed=%ld nacked=%ld returned=%ld seconds=%.3f rate=%.0f\n", count, t.confirmed,
           t.nacked, t.returned, seconds, (double)count / seconds);
    return t.confirmed == count && t.returned == 0 ? 0 : 1;
}
