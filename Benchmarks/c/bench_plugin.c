/*
 * bench_plugin: the handler plugin that scripts/bench loads into warren (docs/handlers.md, "plugin"), compiled
 * with `cc -shared -fPIC -O2 -I Sources/WarrenPlugin/include`. Two modes, from the entry's
 * `config`:
 *
 *   config = { mode = "noop" }   acks at once: the cost of the plugin path itself.
 *   config = { mode = "latency", path = "/tmp/x.lat", capacity = 100000 }
 *       records, per message, the time handle() was entered minus the x-bench-sent-ns header
 *       (CLOCK_REALTIME ns, set by bench-publish -t): publish-to-handler latency. Samples are
 *       native int64s in a file mapped MAP_SHARED, so they reach the page cache as they are
 *       written and the harness reads them whether or not destroy ever runs; the first 8 bytes
 *       hold the number of samples. Cost per message: one clock_gettime, a memmem over the
 *       headers JSON and an atomic increment.
 */
#define _GNU_SOURCE /* memmem */
#include "warren_plugin.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

typedef struct bench_state {
    int latency;
    int64_t *samples; /* samples[0] is the count (updated atomically), samples[1...] the values */
    size_t capacity;
    size_t mapped_bytes;
} bench_state;

/* "key":"value" or "key":number in a flat JSON object, copied into out. Enough for the
 * config that scripts/bench writes (no nesting; simple escapes such as the \/ that warren's
 * JSONEncoder writes in paths). */
static int json_value(const char *json, const char *key, char *out, size_t size) {
    char needle[64];
    snprintf(needle, sizeof needle, "\"%s\":", key);
    const char *p = strstr(json, needle);
    if (p == NULL) return 0;
    p += strlen(needle);
    int quoted = *p == '"';
    if (quoted) p++;
    size_t k = 0;
    while (*p != '\0' && k + 1 < size && (quoted ? *p != '"' : (*p != ',' && *p != '}'))) {
        if (quoted && *p == '\\' && p[1] != '\0') p++; /* \/ \" \\ */
        out[k++] = *p++;
    }
    out[k] = '\0';
    return 1;
}

static int bench_init(const char *config_json, void **state) {
    bench_state *s = calloc(1, sizeof *s);
    if (s == NULL) return 1;
    char mode[32] = "noop", path[4096] = "", capacity[32] = "1000000";
    json_value(config_json, "mode", mode, sizeof mode);
    json_value(config_json, "path", path, sizeof path);
    json_value(config_json, "capacity", capacity, sizeof capacity);
    if (strcmp(mode, "latency") == 0) {
        s->latency = 1;
        s->capacity = (size_t)atol(capacity);
        s->mapped_bytes = (s->capacity + 1) * sizeof(int64_t);
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || ftruncate(fd, (off_t)s->mapped_bytes) != 0) {
            fprintf(stderr, "bench_plugin: cannot create %s\n", path);
            free(s);
            return 1;
        }
        s->samples = mmap(NULL, s->mapped_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (s->samples == MAP_FAILED) {
            free(s);
            return 1;
        }
    } else if (strcmp(mode, "noop") != 0) {
        fprintf(stderr, "bench_plugin: unknown mode %s\n", mode);
        free(s);
        return 1;
    }
    *state = s;
    return 0;
}

static void bench_handle(void *state, const warren_message *message, warren_result *result) {
    bench_state *s = state;
    result->verdict = WARREN_VERDICT_ACK;
    if (!s->latency) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    static const char needle[] = "\"x-bench-sent-ns\":";
    const char *p = memmem(message->headers_json.data, message->headers_json.len, needle, sizeof needle - 1);
    if (p == NULL) return;
    const char *end = (const char *)message->headers_json.data + message->headers_json.len;
    p += sizeof needle - 1;
    int64_t sent = 0;
    while (p < end && *p >= '0' && *p <= '9') sent = sent * 10 + (*p++ - '0');
    size_t index = (size_t)atomic_fetch_add((_Atomic int64_t *)&s->samples[0], 1);
    if (index < s->capacity) s->samples[index + 1] = now - sent;
}

static void bench_destroy(void *state) {
    bench_state *s = state;
    if (s->samples != NULL) munmap(s->samples, s->mapped_bytes);
    free(s);
}

static const warren_plugin_v1_t table = {
    .abi_version = WARREN_PLUGIN_ABI_VERSION,
    .init = bench_init,
    .handle = bench_handle,
    .destroy = bench_destroy,
};

const warren_plugin_v1_t *warren_plugin_v1(void) { return &table; }
