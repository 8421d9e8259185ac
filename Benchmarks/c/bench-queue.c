/*
 * bench-queue: queue chores for scripts/bench, and the stopwatch that times every consumer the
 * same way, from the broker's side (warren, the C baseline, amqp-consume and FastStream alike).
 *
 *   bench-queue declare URL QUEUE...        transient classic queues (no arguments)
 *   bench-queue delete URL QUEUE...
 *   bench-queue purge URL QUEUE...          prints the number of messages purged
 *   bench-queue wait-consumers [-t SECS] URL N QUEUE...   until every queue has >= N consumers
 *   bench-queue watch [-p PID] [-n N] [-i MS] [-t SECS] URL QUEUE...
 *
 * watch polls the ready-message count of the queues (passive queue.declare, every MS
 * milliseconds, default 2) and prints one JSON object when it reaches zero: when the count first
 * fell below N (or below its first reading), the count then, when it reached zero (CLOCK_MONOTONIC
 * seconds, the clock of Python's time.monotonic), and, with -p, the process's CPU seconds (user +
 * sys, and waited-for children) at both moments plus VmHWM, VmRSS and Threads at the end. The rate
 * is count_at_start / (end - start): process start-up and connection set-up are not part of it.
 * With the count at zero, up to PREFETCH deliveries may still be unacknowledged in the consumer:
 * the same for every consumer timed this way. Exits 2 with "stalled" when the count has not moved
 * for SECS seconds (default 60), or with "exited" when PID is gone while messages remain.
 */
#include "bench.h"

#include <unistd.h>

typedef struct proc_sample {
    double cpu, children_cpu;
    long hwm_kib, rss_kib, threads;
} proc_sample;

static proc_sample sample(int pid) {
    proc_sample s = {-1, -1, -1, -1, -1};
    if (pid <= 0) return s;
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return s;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may contain spaces */
    if (p == NULL) return s;
    unsigned long utime, stime;
    long cutime, cstime;
    /* fields 3..17: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %ld %ld", &utime, &stime, &cutime, &cstime) != 4)
        return s;
    double hz = (double)sysconf(_SC_CLK_TCK);
    s.cpu = (double)(utime + stime) / hz;
    s.children_cpu = (double)(cutime + cstime) / hz;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (f == NULL) return s;
    while (fgets(buf, sizeof buf, f) != NULL) {
        if (strncmp(buf, "VmHWM:", 6) == 0) s.hwm_kib = atol(buf + 6);
        else if (strncmp(buf, "VmRSS:", 6) == 0) s.rss_kib = atol(buf + 6);
        else if (strncmp(buf, "Threads:", 8) == 0) s.threads = atol(buf + 8);
    }
    fclose(f);
    return s;
}

/* Whether pid still runs (a zombie does not). */
static int alive(int pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    return p != NULL && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

static double now_s(void) { return (double)bench_now_ns(CLOCK_MONOTONIC) / 1e9; }

/* Passive declare of every queue: the sum of ready messages, and the fewest consumers of any. */
static long poll_queues(amqp_connection_state_t conn, char **queues, int n, long *min_consumers) {
    long total = 0, fewest = -1;
    for (int i = 0; i < n; i++) {
        amqp_queue_declare_ok_t *ok =
            amqp_queue_declare(conn, 1, amqp_cstring_bytes(queues[i]), 1, 0, 0, 0, amqp_empty_table);
        bench_check_reply(amqp_get_rpc_reply(conn), queues[i]);
        total += ok->message_count;
        if (fewest < 0 || (long)ok->consumer_count < fewest) fewest = ok->consumer_count;
    }
    amqp_maybe_release_buffers(conn);
    if (min_consumers != NULL) *min_consumers = fewest;
    return total;
}

static void sleep_ms(double ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - (double)(long)(ms / 1000) * 1000) * 1e6)};
    nanosleep(&ts, NULL);
}

static int watch(int argc, char **argv) {
    int pid = 0, opt;
    long expect = -1;
    double interval_ms = 2, stall_s = 60;
    while ((opt = getopt(argc, argv, "p:n:i:t:")) != -1) {
        switch (opt) {
        case 'p': pid = atoi(optarg); break;
        case 'n': expect = atol(optarg); break;
        case 'i': interval_ms = atof(optarg); break;
        case 't': stall_s = atof(optarg); break;
        default: bench_die("usage: bench-queue watch [-p PID] [-n N] [-i MS] [-t SECS] URL QUEUE...");
        }
    }
    if (argc - optind < 2) bench_die("usage: bench-queue watch [-p PID] [-n N] [-i MS] [-t SECS] URL QUEUE...");
    amqp_connection_state_t conn = bench_connect(argv[optind]);
    char **queues = argv + optind + 1;
    int nq = argc - optind - 1;

    long initial = poll_queues(conn, queues, nq, NULL);
    double t0 = now_s();
    long threshold = expect >= 0 ? expect : initial;
    double start = -1, last_change = t0;
    long count_at_start = 0, last = initial;
    proc_sample at_start = sample(pid);
    if (initial < threshold || initial == 0) {
        start = t0;
        count_at_start = initial;
    }
    long total = initial;
    while (total > 0) {
        sleep_ms(interval_ms);
        total = poll_queues(conn, queues, nq, NULL);
        double t = now_s();
        if (start < 0 && total < threshold) {
            start = t;
            count_at_start = total;
            at_start = sample(pid);
        }
        if (total > 0 && pid > 0 && !alive(pid) && poll_queues(conn, queues, nq, NULL) > 0) {
            printf("{\"error\":\"exited\",\"remaining\":%ld,\"initial\":%ld}\n", total, initial);
            return 2;
        }
        if (total != last) {
            last = total;
            last_change = t;
        } else if (t - last_change > stall_s) {
            printf("{\"error\":\"stalled\",\"remaining\":%ld,\"initial\":%ld}\n", total, initial);
            return 2;
        }
    }
    double end = now_s();
    proc_sample at_end = sample(pid);
    /* A consumer that exits by itself (bench-consume) may be a zombie by now, without VmHWM. */
    if (at_end.hwm_kib < at_start.hwm_kib) at_end.hwm_kib = at_start.hwm_kib;
    bench_close(conn);
    printf("{\"initial\":%ld,\"start\":%.6f,\"count_at_start\":%ld,\"end\":%.6f,\"cpu_start\":%.2f,\"cpu_end\":%.2f,"
           "\"children_cpu_start\":%.2f,\"children_cpu_end\":%.2f,\"hwm_kib\":%ld,\"rss_kib\":%ld,\"threads\":%ld}\n",
           initial, start, count_at_start, end, at_start.cpu, at_end.cpu, at_start.children_cpu, at_end.children_cpu,
           at_end.hwm_kib, at_end.rss_kib, at_end.threads);
    return 0;
}

static int wait_consumers(int argc, char **argv) {
    double timeout_s = 60;
    int opt;
    while ((opt = getopt(argc, argv, "t:")) != -1) {
        if (opt == 't') timeout_s = atof(optarg);
        else bench_die("usage: bench-queue wait-consumers [-t SECS] URL N QUEUE...");
    }
    if (argc - optind < 3) bench_die("usage: bench-queue wait-consumers [-t SECS] URL N QUEUE...");
    amqp_connection_state_t conn = bench_connect(argv[optind]);
    long want = atol(argv[optind + 1]);
    double deadline = now_s() + timeout_s;
    for (;;) {
        long fewest;
        poll_queues(conn, argv + optind + 2, argc - optind - 2, &fewest);
        if (fewest >= want) break;
        if (now_s() > deadline) bench_die("timed out waiting for %ld consumers", want);
        sleep_ms(5);
    }
    bench_close(conn);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) bench_die("usage: bench-queue declare|delete|purge|wait-consumers|watch ...");
    const char *command = argv[1];
    if (strcmp(command, "watch") == 0) return watch(argc - 1, argv + 1);
    if (strcmp(command, "wait-consumers") == 0) return wait_consumers(argc - 1, argv + 1);
    if (argc < 4) bench_die("usage: bench-queue %s URL QUEUE...", command);
    amqp_connection_state_t conn = bench_connect(argv[2]);
    for (int i = 3; i < argc; i++) {
        amqp_bytes_t queue = amqp_cstring_bytes(argv[i]);
        if (strcmp(command, "declare") == 0) {
            amqp_queue_declare(conn, 1, queue, 0, 0, 0, 0, amqp_empty_table);
            bench_check_reply(amqp_get_rpc_reply(conn), argv[i]);
        } else if (strcmp(command, "delete") == 0) {
            amqp_queue_delete(conn, 1, queue, 0, 0);
            bench_check_reply(amqp_get_rpc_reply(conn), argv[i]);
        } else if (strcmp(command, "purge") == 0) {
            amqp_queue_purge_ok_t *ok = amqp_queue_purge(conn, 1, queue);
            bench_check_reply(amqp_get_rpc_reply(conn), argv[i]);
            printf("%u\n", ok->message_count);
        } else {
            bench_die("unknown command %s", command);
        }
    }
    bench_close(conn);
    return 0;
}
