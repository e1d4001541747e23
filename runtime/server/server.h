/* server — moe-server's internals: the engine that owns the context and its
 * slots (engine.c), the HTTP front end (http.c, api.c) and text helpers
 * (text.c). Everything reaches the model through runtime/include/moe.h.
 *
 * Threads: one engine thread does every moe_* call on the context (decode,
 * KV sequence ops, sampling); libmicrohttpd runs one thread per connection,
 * and those only tokenize (the model is read-only), queue tasks and wait for
 * their results. One mutex (engine.lock) guards the queue, the slots, every
 * task's output fields and the counters.
 */
#ifndef MOE_RUNTIME_SERVER_SERVER_H
#define MOE_RUNTIME_SERVER_SERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/include/moe.h"

#define SRV_MAX_STOP 8 /* stop strings per request, as many as llama-server allows */

/* One generation request, shared by the HTTP thread that made it and the
 * engine: refs counts the two holders (under the engine lock); the last
 * srv_task_release frees it. */
typedef struct srv_task {
    int refs;
    /* input, fixed before srv_engine_submit */
    moe_token *prompt;
    int32_t n_prompt;
    moe_sampler_params sampling;
    int32_t max_tokens;           /* < 0: until the slot's context is full */
    bool ignore_eos;              /* never sample an end-of-generation token */
    char *stop[SRV_MAX_STOP];
    int n_stop;
    /* output, under the engine lock */
    char *text;                   /* generated text (stop string cut off), NUL-kept */
    size_t len, cap;
    size_t n_ready;               /* bytes of text that can be streamed */
    moe_token *tokens;            /* generated ids */
    int32_t n_tokens, cap_tokens;
    int32_t n_reused;             /* prompt tokens found in the slot's cache */
    bool done, cancelled;
    const char *finish_reason;    /* "stop" or "length" once done */
    char error[256];              /* non-empty: generation failed */
    pthread_cond_t changed;       /* signalled after every token and when done */
} srv_task;

/* A new task with refs = 1 (the caller's), owning a copy of n_prompt ids. */
srv_task *srv_task_new(const moe_token *prompt, int32_t n_prompt);

typedef struct srv_counters {
    int64_t requests, cancelled, prompt_tokens, prompt_reused, gen_tokens;
    int64_t decode_steps, batched_steps, batch_tokens, max_batch_seqs;
    double prompt_s, gen_s;     /* seconds spent in decodes holding prompt / only generation */
    int32_t processing, queued, kv_used, kv_size;
} srv_counters;

typedef struct srv_engine srv_engine;

/* The engine: n_slots sequences of ctx (which must have n_seq_max >= n_slots),
 * each allowed n_ctx(ctx) / n_slots positions; n_batch the most tokens one
 * decode takes. Borrows model and ctx. Starts its thread. */
moe_status srv_engine_start(moe_model *model, moe_context *ctx, int32_t n_slots, int32_t n_batch,
                            srv_engine **out, moe_err *err);
/* Stops the thread (tasks still running end with an error) and frees. NULL ok. */
void srv_engine_stop(srv_engine *e);
/* Positions a slot may fill: prompt plus generated tokens. */
int32_t srv_engine_slot_ctx(const srv_engine *e);
/* Queues t (the engine takes a reference). */
void srv_engine_submit(srv_engine *e, srv_task *t);
/* Waits until t has more than `from` bytes ready to send, or is done, or
 * timeout_ms passes. Returns whether t is done; *ready gets its n_ready. */
bool srv_engine_wait(srv_engine *e, srv_task *t, size_t from, int timeout_ms, size_t *ready);
/* Marks t cancelled: the engine frees its slot at the next step. */
void srv_engine_cancel(srv_engine *e, srv_task *t);
void srv_task_release(srv_engine *e, srv_task *t);
/* Locks / unlocks the engine so a caller may read a task's output fields. */
void srv_engine_lock(srv_engine *e);
void srv_engine_unlock(srv_engine *e);
/* A snapshot of the counters. */
void srv_engine_counters(srv_engine *e, srv_counters *out);
/* Tasks queued or running. */
int32_t srv_engine_busy(srv_engine *e);

/* ---- the OpenAI API (api.c) ---- */

typedef struct srv_api {
    moe_model *model;
    srv_engine *engine;
    const char *model_id;         /* what /v1/models lists and requests may name */
    const char *chat_template;    /* NULL: the model's */
    moe_sampler_params sampling;  /* defaults for fields a request leaves out */
    bool seed_random;             /* -s -1: each request without a seed gets a new one */
    int32_t n_predict;            /* max_tokens when a request gives none; -1: no limit */
    int64_t created;              /* start time, for "created" fields */
} srv_api;

/* What a completion request asks for, made from its JSON by srv_api_prepare. */
typedef struct srv_request {
    bool chat, stream, return_tokens;
    char id[40];                  /* "chatcmpl-..." / "cmpl-..." */
    srv_task *task;
} srv_request;

/* An HTTP status and a malloc'd body. */
typedef struct srv_reply {
    int status;
    char *body;
    const char *content_type;
} srv_reply;

/* The OpenAI error body {"error":{"message","type","code"}} for status. */
srv_reply srv_error_reply(int status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Parses a /v1/completions (chat false) or /v1/chat/completions body into
 * *req (its task ready to submit). On a bad request returns false with the
 * error in *reply. */
bool srv_api_prepare(const srv_api *api, bool chat, const char *body, size_t len,
                     srv_request *req, srv_reply *reply);
/* The non-streamed response of a finished task (under no lock: the task is
 * done, so its output no longer changes). */
srv_reply srv_api_final(const srv_api *api, const srv_request *req);
/* One server-sent event "data: {...}\n\n" carrying text[from, to) of the
 * task, with finish_reason and usage when last. malloc'd. */
char *srv_api_chunk(const srv_api *api, const srv_request *req, size_t from, size_t to,
                    bool first, bool last);
/* GET /v1/models, POST /tokenize, POST /detokenize, GET /metrics. */
srv_reply srv_api_models(const srv_api *api);
srv_reply srv_api_tokenize(const srv_api *api, const char *body, size_t len);
srv_reply srv_api_detokenize(const srv_api *api, const char *body, size_t len);
srv_reply srv_api_metrics(const srv_api *api);

/* ---- HTTP (http.c) ---- */

typedef struct srv_http_config {
    const char *host;       /* numeric address or name; 127.0.0.1 by default */
    int port;               /* 0: any free port */
    const char *api_key;    /* NULL: no key needed */
    size_t max_body;        /* larger request bodies get 413 */
    unsigned max_connections;
    bool verbose;           /* libmicrohttpd's own error log */
} srv_http_config;

typedef struct srv_http srv_http;

/* Listens and serves api from libmicrohttpd's threads. *port_out gets the
 * port bound. */
moe_status srv_http_start(srv_api *api, const srv_http_config *cfg, srv_http **out,
                          int *port_out, moe_err *err);
/* Stops accepting connections; requests on open ones get 503. */
void srv_http_quiesce(srv_http *h);
/* Requests received and not yet answered completely. */
int srv_http_in_flight(srv_http *h);
/* Closes every connection and frees. NULL ok. */
void srv_http_stop(srv_http *h);

/* ---- text (text.c) ---- */

/* A malloc'd, NUL-terminated copy of s (n bytes) that is valid UTF-8: each
 * maximal ill-formed subpart becomes U+FFFD (Python's "replace" and the
 * Unicode recommendation), so the same bytes always give the same text.
 * NUL bytes stay (JSON writes them as \u0000); *out_len gets the length. */
char *srv_utf8_clean(const char *s, size_t n, size_t *out_len);
/* n minus the length of a trailing sequence that is valid so far but
 * incomplete (0 to 3 bytes): the prefix that can be sent without splitting
 * a character. */
size_t srv_utf8_complete(const char *s, size_t n);
/* The length of the longest suffix of s (n bytes) that is a proper prefix of
 * one of the n_stop strings. */
size_t srv_stop_partial(const char *s, size_t n, char *const *stop, int n_stop);
/* The earliest position at or after `from` where a stop string starts,
 * or -1; stop strings are non-empty. */
ptrdiff_t srv_stop_find(const char *s, size_t n, size_t from, char *const *stop, int n_stop);
/* Compares two strings in time that depends only on their lengths. */
bool srv_secret_equal(const char *a, const char *b);

#endif
