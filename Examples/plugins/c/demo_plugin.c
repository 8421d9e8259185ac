/*
 * A Warren handler plugin in C (README, "plugin"), built by SwiftPM as libWarrenDemoPluginC.so and
 * exercised by the test suite. Outside SwiftPM:
 *
 *     cc -shared -fPIC -O2 -I Sources/WarrenPlugin/include -o libdemo.so Examples/plugins/c/demo_plugin.c
 *
 * Configuration ([handlers.NAME] config = { ... }, passed to init as JSON):
 *     prefix = "text"     put in front of every reply (default "")
 *     fail_init = true    init fails, so warren refuses to start (for tests)
 *     summary_file = "/path"  destroy appends "messages=<count>" to this file
 *
 * Per message it counts, and answers the RPC reply "<prefix><BODY IN UPPER CASE>". Headers drive
 * the rest, so tests can reach every verdict:
 *     x-demo-verdict   ack (default) | reject | requeue | retry | error | bogus (an unknown value)
 *     x-demo-delay-ms  the retry delay
 *     x-demo-sleep-ms  block this long first (a slow call: timeouts, concurrency)
 *     x-demo-reply     "thread": reply with the calling thread's name;
 *                      "stats": reply with the message count and the most calls seen at once;
 *                      "view": reply with every field of the message view, one per line
 */
#define _GNU_SOURCE /* pthread_getname_np */
#include "warren_plugin.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct demo_state {
    char *prefix;
    char *summary_file; /* NULL: none */
    atomic_ulong messages;
    atomic_int running;
    atomic_int most_running;
} demo_state;

/* The reply must outlive handle until the next call on the same thread: one heap buffer per
 * thread, freed by the key's destructor when the thread ends. */
static pthread_key_t reply_key;
static pthread_once_t reply_key_once = PTHREAD_ONCE_INIT;

static void make_reply_key(void) { pthread_key_create(&reply_key, free); }

static uint8_t *reply_buffer(size_t size) {
    free(pthread_getspecific(reply_key));
    uint8_t *buffer = malloc(size > 0 ? size : 1);
    pthread_setspecific(reply_key, buffer);
    return buffer;
}

/* The value of "key" in a flat JSON object, string or number, copied into out. Enough for the
 * shapes Warren produces (no spaces; simple escapes such as \/ only); a real plugin uses a JSON
 * parser. */
static int json_value(const uint8_t *json, size_t len, const char *key, char *out, size_t size) {
    char needle[128];
    snprintf(needle, sizeof needle, "\"%s\":", key);
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++) {
        if (memcmp(json + i, needle, n) != 0) continue;
        size_t j = i + n, k = 0;
        int quoted = j < len && json[j] == '"';
        if (quoted) j++;
        while (j < len && k + 1 < size) {
            char c = (char)json[j];
            if (quoted ? c == '"' : (c == ',' || c == '}')) break;
            if (quoted && c == '\\' && j + 1 < len) c = (char)json[++j]; /* \/ \" \\ */
            out[k++] = c;
            j++;
        }
        out[k] = '\0';
        return 1;
    }
    return 0;
}

static int demo_init(const char *config_json, void **state) {
    pthread_once(&reply_key_once, make_reply_key);
    const uint8_t *json = (const uint8_t *)config_json;
    size_t len = strlen(config_json);
    char value[256];
    if (json_value(json, len, "fail_init", value, sizeof value) && strcmp(value, "true") == 0) return 2;
    demo_state *s = calloc(1, sizeof *s);
    if (s == NULL) return 1;
    s->prefix = strdup(json_value(json, len, "prefix", value, sizeof value) ? value : "");
    if (json_value(json, len, "summary_file", value, sizeof value)) s->summary_file = strdup(value);
    *state = s;
    return 0;
}

static void sleep_ms(long ms) {
    if (ms <= 0) return;
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {}
}

static void reply_text(warren_result *result, const char *text) {
    size_t len = strlen(text);
    uint8_t *out = reply_buffer(len);
    memcpy(out, text, len);
    result->reply = (warren_bytes){out, len};
}

/* Everything the message view holds, one "name=value" line each. */
#define B(b) (int)(b).len, (b).data != NULL ? (const char *)(b).data : ""
#define VIEW_FORMAT "queue=%.*s\nexchange=%.*s\nrouting_key=%.*s\nredelivered=%d\nattempt=%u\nmessage_id=%.*s\n" \
    "correlation_id=%.*s\nreply_to=%.*s\ncontent_type=%.*s\ntype=%.*s\ntimestamp=%lld\nheaders=%.*s\nbody=%.*s"
#define VIEW_ARGS B(m->queue), B(m->exchange), B(m->routing_key), m->redelivered, m->attempt, B(m->message_id), \
    B(m->correlation_id), B(m->reply_to), B(m->content_type), B(m->type), (long long)m->timestamp, B(m->headers_json), B(m->body)

static void reply_view(const warren_message *m, warren_result *result) {
    int len = snprintf(NULL, 0, VIEW_FORMAT, VIEW_ARGS);
    uint8_t *out = reply_buffer((size_t)len + 1);
    snprintf((char *)out, (size_t)len + 1, VIEW_FORMAT, VIEW_ARGS);
    result->reply = (warren_bytes){out, (size_t)len};
}

static void demo_handle(void *state, const warren_message *m, warren_result *result) {
    demo_state *s = state;
    unsigned long count = atomic_fetch_add(&s->messages, 1) + 1;
    int now = atomic_fetch_add(&s->running, 1) + 1;
    for (int most = atomic_load(&s->most_running); now > most && !atomic_compare_exchange_weak(&s->most_running, &most, now);) {}

    const uint8_t *headers = m->headers_json.data;
    size_t hlen = m->headers_json.len;
    char value[64];
    if (json_value(headers, hlen, "x-demo-sleep-ms", value, sizeof value)) sleep_ms(atol(value));

    char verdict[32] = "ack";
    json_value(headers, hlen, "x-demo-verdict", verdict, sizeof verdict);
    char mode[32] = "";
    json_value(headers, hlen, "x-demo-reply", mode, sizeof mode);

    if (strcmp(verdict, "reject") == 0) {
        result->verdict = WARREN_VERDICT_REJECT;
        result->error = "rejected by the demo plugin";
    } else if (strcmp(verdict, "requeue") == 0) {
        result->verdict = WARREN_VERDICT_REQUEUE;
    } else if (strcmp(verdict, "retry") == 0) {
        result->verdict = WARREN_VERDICT_RETRY;
        if (json_value(headers, hlen, "x-demo-delay-ms", value, sizeof value)) result->delay_ms = strtoull(value, NULL, 10);
        result->error = "the demo plugin asks for a retry";
    } else if (strcmp(verdict, "error") == 0) {
        result->verdict = WARREN_VERDICT_ERROR;
        result->error = "the demo plugin failed";
    } else if (strcmp(verdict, "bogus") == 0) {
        result->verdict = (warren_verdict)42;
    } else if (strcmp(mode, "thread") == 0) {
        char name[32] = "";
        pthread_getname_np(pthread_self(), name, sizeof name);
        char text[64];
        snprintf(text, sizeof text, "thread=%s", name);
        reply_text(result, text);
    } else if (strcmp(mode, "view") == 0) {
        reply_view(m, result);
    } else if (strcmp(mode, "stats") == 0) {
        char text[64];
        snprintf(text, sizeof text, "messages=%lu most_running=%d", count, atomic_load(&s->most_running));
        reply_text(result, text);
    } else {
        size_t plen = strlen(s->prefix);
        uint8_t *out = reply_buffer(plen + m->body.len);
        memcpy(out, s->prefix, plen);
        for (size_t i = 0; i < m->body.len; i++) out[plen + i] = (uint8_t)toupper(m->body.data[i]);
        result->reply = (warren_bytes){out, plen + m->body.len};
    }
    atomic_fetch_sub(&s->running, 1);
}

static void demo_destroy(void *state) {
    demo_state *s = state;
    if (s->summary_file != NULL) {
        FILE *f = fopen(s->summary_file, "a");
        if (f != NULL) {
            fprintf(f, "messages=%lu\n", atomic_load(&s->messages));
            fclose(f);
        }
        free(s->summary_file);
    }
    free(s->prefix);
    free(s);
}

static const warren_plugin_v1_t table = {WARREN_PLUGIN_ABI_VERSION, demo_init, demo_handle, demo_destroy};

const warren_plugin_v1_t *warren_plugin_v1(void) { return &table; }
