/* engine — moe-server's continuous batching; see server.h.
 *
 * Each step builds one batch: the last sampled token of every generating slot,
 * then prompt tokens of slots still reading their prompt, up to n_batch. One
 * moe_decode evaluates it; each slot whose row came out samples its next
 * token. A queued task takes the free slot whose cached tokens share the
 * longest prefix with its prompt; the rest of that slot's sequence is removed
 * from the cache (moe_kv_seq_rm) and only the new suffix is evaluated.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "formats/base/log.h"
#include "runtime/server/server.h"
#include "formats/base/clock.h"

typedef struct srv_slot {
    int32_t seq;
    srv_task *task;       /* NULL: free */
    moe_token *cache;     /* ids whose K/V the sequence holds, n_cache of them */
    int32_t n_cache;
    int32_t i_prompt;     /* next prompt token to evaluate */
    moe_sampler *sampler;
    moe_token next;       /* sampled, evaluated at the next step */
    int32_t row;          /* this step's logits row, -1: none */
    uint64_t last_used;
} srv_slot;

typedef struct srv_queue_node {
    srv_task *task;
    struct srv_queue_node *next;
} srv_queue_node;

struct srv_engine {
    moe_model *model;
    moe_context *ctx;
    int32_t n_slots, n_batch, slot_ctx;
    int64_t n_vocab;
    srv_slot *slots;
    srv_queue_node *head, *tail;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    bool started, stopping;
    uint64_t clock;
    srv_counters c;
    /* batch arrays, n_batch each */
    moe_token *b_token;
    int32_t *b_pos, *b_seq;
    int8_t *b_logits;
    char *piece;
    int32_t piece_cap;
    moe_token *eog;       /* the end-of-generation ids, n_eog; masked for ignore_eos */
    int32_t n_eog;
    float *masked;        /* n_vocab logits with the eog ones at -inf */
};

srv_task *srv_task_new(const moe_token *prompt, int32_t n_prompt) {
    srv_task *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->prompt = malloc((size_t)(n_prompt > 0 ? n_prompt : 1) * sizeof *prompt);
    if (!t->prompt) {
        free(t);
        return NULL;
    }
    memcpy(t->prompt, prompt, (size_t)n_prompt * sizeof *prompt);
    t->n_prompt = n_prompt;
    t->refs = 1;
    t->max_tokens = -1;
    pthread_cond_init(&t->changed, NULL);
    return t;
}

static void task_free(srv_task *t) {
    for (int i = 0; i < t->n_stop; i++)
        free(t->stop[i]);
    free(t->prompt);
    free(t->text);
    free(t->tokens);
    pthread_cond_destroy(&t->changed);
    free(t);
}

/* Under the lock. */
static void task_unref(srv_task *t) {
    if (--t->refs == 0)
        task_free(t);
}

void srv_task_release(srv_engine *e, srv_task *t) {
    if (!t)
        return;
    pthread_mutex_lock(&e->lock);
    task_unref(t);
    pthread_mutex_unlock(&e->lock);
}

void srv_engine_lock(srv_engine *e) { pthread_mutex_lock(&e->lock); }
void srv_engine_unlock(srv_engine *e) { pthread_mutex_unlock(&e->lock); }
int32_t srv_engine_slot_ctx(const srv_engine *e) { return e->slot_ctx; }

void srv_engine_submit(srv_engine *e, srv_task *t) {
    srv_queue_node *n = malloc(sizeof *n);
    pthread_mutex_lock(&e->lock);
    if (!n || e->stopping) {
        snprintf(t->error, sizeof t->error, n ? "the server is stopping" : "out of memory");
        t->done = true;
        pthread_mutex_unlock(&e->lock);
        free(n);
        return;
    }
    t->refs++;
    n->task = t;
    n->next = NULL;
    if (e->tail)
        e->tail->next = n;
    else
        e->head = n;
    e->tail = n;
    e->c.queued++;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->lock);
}

bool srv_engine_wait(srv_engine *e, srv_task *t, size_t from, int timeout_ms, size_t *ready) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    ts.tv_sec += timeout_ms / 1000 + ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&e->lock);
    while (!t->done && t->n_ready <= from)
        if (pthread_cond_timedwait(&t->changed, &e->lock, &ts) == ETIMEDOUT)
            break;
    bool done = t->done;
    *ready = t->n_ready;
    pthread_mutex_unlock(&e->lock);
    return done;
}

void srv_engine_cancel(srv_engine *e, srv_task *t) {
    pthread_mutex_lock(&e->lock);
    if (!t->done)
        t->cancelled = true;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->lock);
}

void srv_engine_counters(srv_engine *e, srv_counters *out) {
    pthread_mutex_lock(&e->lock);
    *out = e->c;
    pthread_mutex_unlock(&e->lock);
}

int32_t srv_engine_busy(srv_engine *e) {
    pthread_mutex_lock(&e->lock);
    int32_t n = e->c.queued + e->c.processing;
    pthread_mutex_unlock(&e->lock);
    return n;
}

/* ---- slots (engine thread, under the lock) ------------------------------------------- */

/* Ends the slot's task (error NULL: normally, with reason) and frees the slot;
 * its cache stays for a later prompt with the same prefix. */
static void slot_finish(srv_engine *e, srv_slot *s, const char *reason, const char *error) {
    srv_task *t = s->task;
    if (error)
        snprintf(t->error, sizeof t->error, "%s", error);
    t->finish_reason = reason;
    t->n_ready = t->len;
    t->done = true;
    if (t->cancelled)
        e->c.cancelled++;
    else
        e->c.requests++;
    pthread_cond_broadcast(&t->changed);
    task_unref(t);
    moe_sampler_free(s->sampler);
    s->sampler = NULL;
    s->task = NULL;
    s->row = -1;
    e->c.processing--;
}

static int32_t common_prefix(const moe_token *a, int32_t na, const moe_token *b, int32_t nb) {
    int32_t i = 0;
    while (i < na && i < nb && a[i] == b[i])
        i++;
    return i;
}

/* The free slot sharing the longest prefix with prompt; ties go to the one
 * unused longest, keeping recent prefixes around. -1 when none is free. */
static int32_t pick_slot(const srv_engine *e, const srv_task *t, int32_t *prefix) {
    int32_t best = -1, best_len = -1;
    for (int32_t i = 0; i < e->n_slots; i++) {
        const srv_slot *s = &e->slots[i];
        if (s->task)
            continue;
        int32_t len = common_prefix(s->cache, s->n_cache, t->prompt, t->n_prompt);
        if (len > best_len || (len == best_len && s->last_used < e->slots[best].last_used))
            best = i, best_len = len;
    }
    *prefix = best_len;
    return best;
}

/* Gives queued tasks free slots. A cancelled queued task just ends. */
static void assign_tasks(srv_engine *e) {
    while (e->head) {
        srv_task *t = e->head->task;
        int32_t prefix = 0, i = t->cancelled ? -2 : pick_slot(e, t, &prefix);
        if (i == -1)
            return;
        srv_queue_node *n = e->head;
        e->head = n->next;
        if (!e->head)
            e->tail = NULL;
        free(n);
        e->c.queued--;
        if (i == -2) {
            t->done = true;
            e->c.cancelled++;
            pthread_cond_broadcast(&t->changed);
            task_unref(t);
            continue;
        }
        srv_slot *s = &e->slots[i];
        s->task = t;
        s->last_used = ++e->clock;
        e->c.processing++;
        /* at least the last prompt token is evaluated again: its logits are
         * the first sample's */
        if (prefix >= t->n_prompt)
            prefix = t->n_prompt - 1;
        moe_kv_seq_rm(e->ctx, s->seq, prefix, -1);
        s->n_cache = prefix;
        s->i_prompt = prefix;
        t->n_reused = prefix;
        e->c.prompt_reused += prefix;
        s->sampler = moe_sampler_create(&t->sampling);
        if (!s->sampler) {
            slot_finish(e, s, "stop", "cannot create the sampler");
            continue;
        }
        for (int32_t k = 0; k < t->n_prompt; k++)
            moe_sampler_accept(s->sampler, t->prompt[k]); /* the repeat penalty sees it */
    }
}

/* Adds token tok of seq s at pos to the batch. */
static void batch_add(srv_engine *e, int32_t *n, srv_slot *s, moe_token tok, bool logits) {
    e->b_token[*n] = tok;
    e->b_pos[*n] = s->n_cache;
    e->b_seq[*n] = s->seq;
    e->b_logits[*n] = logits;
    if (logits)
        s->row = *n;
    s->cache[s->n_cache++] = tok;
    (*n)++;
}

/* The next batch: a token per generating slot, then prompt chunks. Returns
 * its size; *n_prompt counts its prompt tokens, *n_seqs its sequences. */
static int32_t build_batch(srv_engine *e, int32_t *n_prompt, int32_t *n_seqs) {
    int32_t n = 0;
    *n_prompt = 0;
    *n_seqs = 0;
    for (int32_t i = 0; i < e->n_slots; i++) {
        srv_slot *s = &e->slots[i];
        s->row = -1;
        if (s->task && s->i_prompt == s->task->n_prompt && n < e->n_batch) {
            batch_add(e, &n, s, s->next, true);
            (*n_seqs)++;
        }
    }
    for (int32_t i = 0; i < e->n_slots && n < e->n_batch; i++) {
        srv_slot *s = &e->slots[i];
        if (!s->task || s->i_prompt == s->task->n_prompt)
            continue;
        const srv_task *t = s->task;
        int32_t k = t->n_prompt - s->i_prompt;
        if (k > e->n_batch - n)
            k = e->n_batch - n;
        for (int32_t j = 0; j < k; j++, s->i_prompt++)
            batch_add(e, &n, s, t->prompt[s->i_prompt], s->i_prompt == t->n_prompt - 1);
        *n_prompt += k;
        (*n_seqs)++;
    }
    return n;
}

/* Appends the text of tok to the slot's task and decides whether it ends. */
static void emit_token(srv_engine *e, srv_slot *s, moe_token tok) {
    srv_task *t = s->task;
    if (moe_token_is_eog(e->model, tok)) {
        slot_finish(e, s, "stop", NULL);
        return;
    }
    if (t->n_tokens == t->cap_tokens) {
        int32_t cap = t->cap_tokens ? 2 * t->cap_tokens : 64;
        moe_token *nt = realloc(t->tokens, (size_t)cap * sizeof *nt);
        if (!nt) {
            slot_finish(e, s, "stop", "out of memory");
            return;
        }
        t->tokens = nt, t->cap_tokens = cap;
    }
    t->tokens[t->n_tokens++] = tok;
    int32_t n = moe_token_to_piece(e->model, tok, e->piece, e->piece_cap, false);
    if (n < 0) {
        char *np = realloc(e->piece, (size_t)-n);
        if (np)
            e->piece = np, e->piece_cap = -n;
        n = np ? moe_token_to_piece(e->model, tok, e->piece, e->piece_cap, false) : -1;
    }
    if (n >= 0 && t->len + (size_t)n + 1 > t->cap) {
        size_t cap = 2 * (t->len + (size_t)n + 64);
        char *nt = realloc(t->text, cap);
        if (nt)
            t->text = nt, t->cap = cap;
        else
            n = -1;
    }
    if (n < 0) {
        slot_finish(e, s, "stop", "out of memory");
        return;
    }
    const size_t before = t->len;
    memcpy(t->text + t->len, e->piece, (size_t)n);
    t->len += (size_t)n;
    t->text[t->len] = '\0';
    e->c.gen_tokens++;
    size_t from = before > 64 ? before - 64 : 0; /* a stop string may span pieces */
    ptrdiff_t at = srv_stop_find(t->text, t->len, from, t->stop, t->n_stop);
    if (at >= 0) {
        t->len = (size_t)at;
        t->text[t->len] = '\0';
        slot_finish(e, s, "stop", NULL);
        return;
    }
    size_t ready = t->len - srv_stop_partial(t->text, t->len, t->stop, t->n_stop);
    ready = srv_utf8_complete(t->text, ready);
    if (ready > t->n_ready)
        t->n_ready = ready;
    pthread_cond_broadcast(&t->changed);
    if ((t->max_tokens >= 0 && t->n_tokens >= t->max_tokens) || s->n_cache >= e->slot_ctx)
        slot_finish(e, s, "length", NULL);
    else
        s->next = tok;
}

/* Samples every slot that has a row in the last decode. */
static void sample_rows(srv_engine *e) {
    for (int32_t i = 0; i < e->n_slots; i++) {
        srv_slot *s = &e->slots[i];
        if (!s->task || s->row < 0)
            continue;
        if (s->task->cancelled) {
            slot_finish(e, s, "stop", NULL);
            continue;
        }
        const float *logits = moe_get_logits_ith(e->ctx, s->row);
        if (!logits) {
            slot_finish(e, s, "stop", "no logits for a decoded token");
            continue;
        }
        if (s->task->ignore_eos) {
            memcpy(e->masked, logits, (size_t)e->n_vocab * sizeof *logits);
            for (int32_t k = 0; k < e->n_eog; k++)
                e->masked[e->eog[k]] = -INFINITY;
            logits = e->masked;
        }
        moe_token tok = moe_sampler_sample(s->sampler, logits, e->n_vocab);
        moe_sampler_accept(s->sampler, tok);
        if (s->task->max_tokens == 0) {
            slot_finish(e, s, "length", NULL);
            continue;
        }
        emit_token(e, s, tok);
    }
}

static void drop_cancelled(srv_engine *e) {
    for (int32_t i = 0; i < e->n_slots; i++)
        if (e->slots[i].task && e->slots[i].task->cancelled)
            slot_finish(e, &e->slots[i], "stop", NULL);
}

/* A failed decode ends every task in it; their sequences are cleared since
 * the cache may hold part of the batch. */
static void fail_batch(srv_engine *e, const char *msg) {
    for (int32_t i = 0; i < e->n_slots; i++) {
        srv_slot *s = &e->slots[i];
        if (!s->task)
            continue;
        moe_kv_seq_rm(e->ctx, s->seq, -1, -1);
        s->n_cache = 0;
        slot_finish(e, s, "stop", msg);
    }
}

static void *engine_main(void *arg) {
    srv_engine *e = arg;
    pthread_mutex_lock(&e->lock);
    while (!e->stopping) {
        drop_cancelled(e);
        assign_tasks(e);
        int32_t n_prompt, n_seqs, n = build_batch(e, &n_prompt, &n_seqs);
        if (n == 0) {
            pthread_cond_wait(&e->wake, &e->lock);
            continue;
        }
        pthread_mutex_unlock(&e->lock);
        moe_batch b = {.n_tokens = n, .token = e->b_token, .pos = e->b_pos, .seq_id = e->b_seq,
                       .logits = e->b_logits};
        moe_err err = {0};
        double t0 = moe_now_s();
        moe_status st = moe_decode(e->ctx, &b, &err);
        double dt = moe_now_s() - t0;
        int32_t kv_used = moe_kv_n_used(e->ctx);
        pthread_mutex_lock(&e->lock);
        e->c.decode_steps++;
        e->c.batched_steps += n_seqs > 1;
        e->c.batch_tokens += n;
        if (n_seqs > e->c.max_batch_seqs)
            e->c.max_batch_seqs = n_seqs;
        /* a step holding prompt tokens counts as prompt time, as llama-server
         * splits it */
        *(n_prompt ? &e->c.prompt_s : &e->c.gen_s) += dt;
        e->c.prompt_tokens += n_prompt;
        e->c.kv_used = kv_used;
        if (st != MOE_OK) {
            MOE_WARN("decode failed: %s", err.msg);
            fail_batch(e, err.msg);
            continue;
        }
        sample_rows(e);
    }
    fail_batch(e, "the server is stopping");
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

moe_status srv_engine_start(moe_model *model, moe_context *ctx, int32_t n_slots, int32_t n_batch,
                            srv_engine **out, moe_err *err) {
    *out = NULL;
    srv_engine *e = calloc(1, sizeof *e);
    MOE_FAIL_IF(!e, err, MOE_ERR_NOMEM, "out of memory");
    e->model = model;
    e->ctx = ctx;
    e->n_slots = n_slots;
    e->n_batch = n_batch;
    e->n_vocab = moe_model_n_vocab(model);
    e->slot_ctx = moe_context_n_ctx(ctx) / n_slots;
    e->c.kv_size = moe_context_n_ctx(ctx);
    e->slots = calloc((size_t)n_slots, sizeof *e->slots);
    e->b_token = malloc((size_t)n_batch * sizeof *e->b_token);
    e->b_pos = malloc((size_t)n_batch * sizeof *e->b_pos);
    e->b_seq = malloc((size_t)n_batch * sizeof *e->b_seq);
    e->b_logits = malloc((size_t)n_batch);
    e->piece_cap = 256;
    e->piece = malloc((size_t)e->piece_cap);
    e->eog = malloc((size_t)e->n_vocab * sizeof *e->eog);
    e->masked = malloc((size_t)e->n_vocab * sizeof *e->masked);
    for (moe_token t = 0; e->eog && t < e->n_vocab; t++)
        if (moe_token_is_eog(model, t))
            e->eog[e->n_eog++] = t;
    bool ok = e->slots && e->b_token && e->b_pos && e->b_seq && e->b_logits && e->piece &&
              e->eog && e->masked;
    for (int32_t i = 0; ok && i < n_slots; i++) {
        e->slots[i].seq = i;
        e->slots[i].row = -1;
        e->slots[i].cache = malloc((size_t)(e->slot_ctx + 1) * sizeof(moe_token));
        ok = e->slots[i].cache != NULL;
    }
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->wake, NULL);
    e->started = ok && pthread_create(&e->thread, NULL, engine_main, e) == 0;
    if (!e->started) {
        srv_engine_stop(e);
        return moe_fail(err, MOE_ERR_NOMEM, "cannot start the engine");
    }
    *out = e;
    return MOE_OK;
}

void srv_engine_stop(srv_engine *e) {
    if (!e)
        return;
    if (e->started) {
        pthread_mutex_lock(&e->lock);
        e->stopping = true;
        pthread_cond_signal(&e->wake);
        pthread_mutex_unlock(&e->lock);
        pthread_join(e->thread, NULL);
    }
    while (e->head) { /* queued tasks end with an error */
        srv_queue_node *n = e->head;
        e->head = n->next;
        snprintf(n->task->error, sizeof n->task->error, "the server is stopping");
        n->task->done = true;
        pthread_cond_broadcast(&n->task->changed);
        task_unref(n->task);
        free(n);
    }
    for (int32_t i = 0; e->slots && i < e->n_slots; i++)
        free(e->slots[i].cache);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->wake);
    free(e->slots);
    free(e->b_token);
    free(e->b_pos);
    free(e->b_seq);
    free(e->b_logits);
    free(e->piece);
    free(e->eog);
    free(e->masked);
    free(e);
}
