/*
 * warren_plugin.h: the C ABI of Warren's in-process handler plugins (docs/handlers.md, "plugin").
 *
 * A plugin is a shared library that exports
 *
 *     const warren_plugin_v1_t *warren_plugin_v1(void);
 *
 * returning a table whose abi_version is the WARREN_PLUGIN_ABI_VERSION it was built against
 * (Warren loads every version from WARREN_PLUGIN_ABI_VERSION_OLDEST up to its own: a version
 * only appends fields at the end of the structs, which older plugins never read). Warren loads it with
 * dlopen(RTLD_NOW | RTLD_LOCAL), calls init once per [handlers.NAME] entry at start-up with the
 * entry's `config` table as a JSON object (a non-zero return stops warren with exit status 78),
 * handle for each message, and destroy at shutdown.
 *
 * Threads: handle runs on a blocking thread pool of the entry's own, never on an I/O thread or
 * Swift's cooperative pool, possibly on several threads at once for one state. The pool has as
 * many threads as the largest `concurrency` among the queues that use the entry.
 *
 * Timeouts: a C call cannot be interrupted. When the handler timeout passes, warren stops
 * waiting, treats the run as a timeout failure (the queue's policy retries or parks the message)
 * and logs a warning; the call keeps its thread until handle returns, and its result is dropped.
 * A plugin that may block should bound its own waits below the timeout.
 *
 * Lifetime: destroy is called once, at shutdown, when no handle call is running; if a call that
 * overran its timeout is still running then, destroy is not called at all. Warren never unloads
 * the library (unloading a Swift library breaks the Swift runtime), so replacing the file takes
 * a restart.
 *
 * The message view passed to handle is valid only during the call: copy what you keep.
 */
#ifndef WARREN_PLUGIN_H
#define WARREN_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 2: warren_message.stream_offset.
 * 3: warren_message.traceparent and tracestate. */
#define WARREN_PLUGIN_ABI_VERSION 3u
#define WARREN_PLUGIN_ABI_VERSION_OLDEST 1u

/* A byte string that is not NUL-terminated; data may be NULL when len is 0. */
typedef struct warren_bytes {
    const uint8_t *data;
    size_t len;
} warren_bytes;

typedef struct warren_message {
    warren_bytes body;
    warren_bytes queue;
    warren_bytes exchange;
    warren_bytes routing_key;
    int redelivered;            /* 0 or 1 */
    uint32_t attempt;           /* 1 for the first delivery */
    warren_bytes message_id;    /* empty when absent */
    warren_bytes correlation_id;
    warren_bytes reply_to;
    warren_bytes content_type;
    warren_bytes type;
    int64_t timestamp;          /* seconds since the epoch; -1 when absent */
    warren_bytes headers_json;  /* the headers as a JSON object; an entry JSON cannot carry
                                   (a key or long string that is not UTF-8) is left out:
                                   see docs/message-bytes.md */
    /* Since ABI version 2. */
    int64_t stream_offset;      /* the message's offset in a stream queue; -1 for other queues */
    /* Since ABI version 3: the W3C trace context of this handler run (docs/tracing.md). */
    warren_bytes traceparent;   /* "00-<trace id>-<span id>-<flags>": never empty */
    warren_bytes tracestate;    /* as the message carried it; empty when absent or invalid */
} warren_message;

typedef enum warren_verdict {
    WARREN_VERDICT_ACK = 0,     /* success */
    WARREN_VERDICT_REJECT = 1,  /* permanent failure: dead-letter with reason "rejected" */
    WARREN_VERDICT_REQUEUE = 2, /* put back now */
    WARREN_VERDICT_RETRY = 3,   /* retry later, after delay_ms (0 = the queue's ladder) */
    WARREN_VERDICT_ERROR = 4    /* failure: the queue's ack policy decides */
} warren_verdict;

/* Filled in by handle. Warren zero-fills it before every call, so a plugin that sets nothing
 * acks, and a plugin built before a field was appended here still works (the field stays zero).
 *
 * error (optional, NUL-terminated) and reply.data must stay valid until the next call of handle
 * on the same thread (a thread-local buffer works), or be static: Warren copies both out before
 * that thread runs anything else. */
typedef struct warren_result {
    warren_verdict verdict;
    uint64_t delay_ms;          /* WARREN_VERDICT_RETRY only; rounded up to a retry ladder step */
    const char *error;          /* why: logged, and x-warren-error on a dead-lettered copy */
    /* The RPC reply, published to the message's reply_to with its correlation_id (and confirmed)
     * before the message is acked. Used with WARREN_VERDICT_ACK only; data NULL = no reply (the
     * default), data non-NULL with len 0 = an empty reply. */
    warren_bytes reply;
} warren_result;

typedef struct warren_plugin_v1_t {
    uint32_t abi_version; /* WARREN_PLUGIN_ABI_VERSION */
    /* 0 on success; on failure, *state is ignored and Warren refuses to start. */
    int (*init)(const char *config_json, void **state);
    /* Must fill *result; must be thread-safe for one state. */
    void (*handle)(void *state, const warren_message *message, warren_result *result);
    void (*destroy)(void *state);
} warren_plugin_v1_t;

typedef const warren_plugin_v1_t *(*warren_plugin_v1_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* WARREN_PLUGIN_H */
