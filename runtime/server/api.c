/* api — moe-server's OpenAI-compatible JSON: requests into tasks, tasks into
 * responses and server-sent events, and the small endpoints. See server.h. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/server/server.h"
#include "runtime/tools/model_cli.h"

static const char *error_type(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 503: return "unavailable_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

static srv_reply json_reply(int status, json_t *j) {
    srv_reply r = {.status = status, .content_type = "application/json"};
    r.body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!r.body) {
        r.status = 500;
        r.body = strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                        "\"code\":500}}");
    }
    return r;
}

srv_reply srv_error_reply(int status, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t len;
    char *clean = srv_utf8_clean(msg, strlen(msg), &len); /* it may quote the client's bytes */
    json_t *j = json_pack("{s:{s:s,s:s,s:i}}", "error", "message", clean ? clean : "error",
                          "type", error_type(status), "code", status);
    free(clean);
    return json_reply(status, j);
}

/* ---- request fields --------------------------------------------------------------------- */

/* A number field (absent: *out unchanged) in [lo, hi]. */
static bool get_number(json_t *o, const char *key, double lo, double hi, double *out,
                       srv_reply *r) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_number(v)) {
        *r = srv_error_reply(400, "'%s' must be a number", key);
        return false;
    }
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi)) {
        *r = srv_error_reply(400, "'%s' must be in [%g, %g], got %g", key, lo, hi, d);
        return false;
    }
    *out = d;
    return true;
}

static bool get_int(json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *out,
                    srv_reply *r) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_integer(v)) {
        *r = srv_error_reply(400, "'%s' must be an integer", key);
        return false;
    }
    json_int_t i = json_integer_value(v);
    if (i < lo || i > hi) {
        *r = srv_error_reply(400, "'%s' must be in [%" PRId64 ", %" PRId64 "], got %" PRId64,
                             key, lo, hi, (int64_t)i);
        return false;
    }
    *out = i;
    return true;
}

static bool get_bool(json_t *o, const char *key, bool *out, srv_reply *r) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_boolean(v)) {
        *r = srv_error_reply(400, "'%s' must be true or false", key);
        return false;
    }
    *out = json_is_true(v);
    return true;
}

static json_t *parse_object(const char *body, size_t len, srv_reply *r) {
    json_error_t je;
    json_t *j = json_loadb(body, len, 0, &je);
    if (!j) {
        *r = srv_error_reply(400, "invalid JSON at line %d, column %d: %s", je.line, je.column,
                             je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        *r = srv_error_reply(400, "the request body must be a JSON object");
        return NULL;
    }
    return j;
}

/* temperature, top_p, top_k, min_p, repeat_penalty, seed over the defaults. */
static bool get_sampling(const srv_api *api, json_t *o, moe_sampler_params *sp, srv_reply *r) {
    *sp = api->sampling;
    double temp = sp->temp, top_p = sp->top_p, min_p = sp->min_p, rp = sp->repeat_penalty;
    int64_t top_k = sp->top_k, seed = -1;
    if (!get_number(o, "temperature", 0, 100, &temp, r) ||
        !get_number(o, "top_p", 0, 1, &top_p, r) || !get_number(o, "min_p", 0, 1, &min_p, r) ||
        !get_number(o, "repeat_penalty", 0, 100, &rp, r) ||
        !get_int(o, "top_k", 0, INT32_MAX, &top_k, r) ||
        !get_int(o, "seed", -1, INT64_MAX, &seed, r))
        return false;
    if (top_p <= 0 || rp <= 0) {
        *r = srv_error_reply(400, "'%s' must be > 0", top_p <= 0 ? "top_p" : "repeat_penalty");
        return false;
    }
    sp->temp = (float)temp, sp->top_p = (float)top_p, sp->min_p = (float)min_p;
    sp->repeat_penalty = (float)rp, sp->top_k = (int32_t)top_k;
    if (seed >= 0) {
        sp->seed = (uint64_t)seed;
    } else if (api->seed_random) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        sp->seed = ((uint64_t)ts.tv_sec * 1000003u) ^ (uint64_t)ts.tv_nsec;
    }
    return true;
}

/* "stop": a string or an array of up to SRV_MAX_STOP non-empty strings. */
static bool get_stop(json_t *o, srv_task *t, srv_reply *r) {
    json_t *v = json_object_get(o, "stop");
    if (!v || json_is_null(v))
        return true;
    json_t *one = json_is_string(v) ? v : NULL;
    size_t n = one ? 1 : json_is_array(v) ? json_array_size(v) : SIZE_MAX;
    if (n > SRV_MAX_STOP) {
        *r = srv_error_reply(400, "'stop' must be a string or an array of at most %d strings",
                             SRV_MAX_STOP);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = one ? one : json_array_get(v, i);
        if (!json_is_string(s) || json_string_length(s) == 0) {
            *r = srv_error_reply(400, "'stop' strings must be non-empty strings");
            return false;
        }
        t->stop[t->n_stop] = strdup(json_string_value(s));
        if (!t->stop[t->n_stop]) {
            *r = srv_error_reply(500, "out of memory");
            return false;
        }
        t->n_stop++;
    }
    return true;
}

/* The text of a message's content: a string, or OpenAI's array of parts of
 * which the "text" ones are joined. NULL if it is neither; malloc'd. */
static char *content_text(json_t *c) {
    if (json_is_string(c))
        return strdup(json_string_value(c));
    if (!json_is_array(c))
        return NULL;
    size_t len = 0, i;
    json_t *part;
    json_array_foreach(c, i, part) {
        json_t *tx = json_object_get(part, "text");
        if (!json_is_string(tx))
            return NULL;
        len += json_string_length(tx);
    }
    char *out = malloc(len + 1), *p = out;
    if (!out)
        return NULL;
    json_array_foreach(c, i, part) {
        json_t *tx = json_object_get(part, "text");
        memcpy(p, json_string_value(tx), json_string_length(tx));
        p += json_string_length(tx);
    }
    *p = '\0';
    return out;
}

/* messages -> the prompt text through the chat template (malloc'd). */
static char *chat_prompt(const srv_api *api, json_t *o, srv_reply *r) {
    json_t *msgs = json_object_get(o, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        *r = srv_error_reply(400, "'messages' must be a non-empty array");
        return NULL;
    }
    size_t n = json_array_size(msgs);
    moe_chat_message *m = calloc(n, sizeof *m);
    char **texts = calloc(n, sizeof *texts);
    char *out = NULL;
    bool ok = m && texts;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *msg = json_array_get(msgs, i);
        json_t *role = json_object_get(msg, "role");
        texts[i] = content_text(json_object_get(msg, "content"));
        if (!json_is_string(role) || !texts[i]) {
            *r = srv_error_reply(400, "messages[%zu] needs a string 'role' and a string (or "
                                      "text parts) 'content'", i);
            ok = false;
            break;
        }
        m[i].role = json_string_value(role);
        m[i].content = texts[i];
    }
    if (ok) {
        moe_err err = {0};
        if (moe_chat_apply(api->model, api->chat_template, m, (int)n, true, &out, &err) !=
            MOE_OK)
            *r = srv_error_reply(500, "chat template: %s", err.msg);
    }
    if (!m || !texts)
        *r = srv_error_reply(500, "out of memory");
    for (size_t i = 0; texts && i < n; i++)
        free(texts[i]);
    free(texts);
    free(m);
    return out;
}

/* The prompt ids of a completion: "prompt" is a string, or an array holding
 * one string or token ids. *toks malloc'd. */
static bool completion_prompt(const srv_api *api, json_t *o, moe_token **toks, int32_t *n,
                              srv_reply *r) {
    json_t *p = json_object_get(o, "prompt");
    if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0)))
        p = json_array_get(p, 0);
    moe_err err = {0};
    if (json_is_string(p)) {
        if (moe_tokenize_prompt(api->model, json_string_value(p), json_string_length(p), toks, n,
                                &err) == MOE_OK)
            return true;
        *r = srv_error_reply(400, "prompt: %s", err.msg);
        return false;
    }
    size_t k = json_is_array(p) ? json_array_size(p) : 0;
    if (k == 0 || k > INT32_MAX / 2) {
        *r = srv_error_reply(400, "'prompt' must be a string, or an array of token ids");
        return false;
    }
    *toks = malloc(k * sizeof **toks);
    if (!*toks) {
        *r = srv_error_reply(500, "out of memory");
        return false;
    }
    for (size_t i = 0; i < k; i++) {
        json_t *v = json_array_get(p, i);
        json_int_t id = json_is_integer(v) ? json_integer_value(v) : -1;
        if (id < 0 || id >= moe_model_n_vocab(api->model)) {
            free(*toks);
            *toks = NULL;
            *r = srv_error_reply(400, "prompt[%zu] is not a token id of this model", i);
            return false;
        }
        (*toks)[i] = (moe_token)id;
    }
    *n = (int32_t)k;
    return true;
}

/* model, n, prompt/messages -> the task with its prompt. */
static bool make_task(const srv_api *api, bool chat, json_t *o, srv_request *req,
                      srv_reply *r) {
    json_t *model = json_object_get(o, "model");
    if (model && !json_is_null(model) &&
        (!json_is_string(model) || strcmp(json_string_value(model), api->model_id) != 0)) {
        *r = json_is_string(model)
                 ? srv_error_reply(404, "the model '%s' does not exist (this server has '%s')",
                                   json_string_value(model), api->model_id)
                 : srv_error_reply(400, "'model' must be a string");
        return false;
    }
    int64_t n_choices = 1;
    if (!get_int(o, "n", 1, 1, &n_choices, r))
        return false;
    moe_token *toks = NULL;
    int32_t n = 0;
    if (chat) {
        char *text = chat_prompt(api, o, r);
        if (!text)
            return false;
        moe_err err = {0};
        moe_status st = moe_tokenize_prompt(api->model, text, strlen(text), &toks, &n, &err);
        free(text);
        if (st != MOE_OK) {
            *r = srv_error_reply(400, "messages: %s", err.msg);
            return false;
        }
    } else if (!completion_prompt(api, o, &toks, &n, r)) {
        return false;
    }
    if (n == 0) {
        free(toks);
        *r = srv_error_reply(400, "the prompt is empty and the vocabulary adds no BOS");
        return false;
    }
    req->task = srv_task_new(toks, n);
    free(toks);
    if (!req->task) {
        *r = srv_error_reply(500, "out of memory");
        return false;
    }
    return true;
}

/* max_tokens (or max_completion_tokens, n_predict) against the slot's context. */
static bool get_max_tokens(const srv_api *api, json_t *o, srv_task *t, srv_reply *r) {
    const int32_t slot_ctx = srv_engine_slot_ctx(api->engine);
    int64_t max = -2;
    static const char *const keys[] = {"max_tokens", "max_completion_tokens", "n_predict"};
    for (int i = 0; i < 3; i++)
        if (!get_int(o, keys[i], i == 2 ? -1 : 0, INT32_MAX, &max, r))
            return false;
    if (max == -2)
        max = api->n_predict;
    if (t->n_prompt >= slot_ctx) {
        *r = srv_error_reply(400, "the prompt is %" PRId32 " tokens; a slot's context holds %" PRId32
                                  " (prompt + completion; -c / -np)", t->n_prompt, slot_ctx);
        return false;
    }
    if (max >= 0 && t->n_prompt + max > slot_ctx) {
        *r = srv_error_reply(400, "max_tokens %" PRId64 " + %" PRId32 " prompt tokens exceed a "
                                  "slot's context of %" PRId32 " (-c / -np)", max, t->n_prompt,
                             slot_ctx);
        return false;
    }
    t->max_tokens = (int32_t)max;
    return true;
}

bool srv_api_prepare(const srv_api *api, bool chat, const char *body, size_t len,
                     srv_request *req, srv_reply *r) {
    static unsigned long long counter;
    memset(req, 0, sizeof *req);
    req->chat = chat;
    json_t *o = parse_object(body, len, r);
    if (!o)
        return false;
    bool ok = get_bool(o, "stream", &req->stream, r) &&
              get_bool(o, "return_tokens", &req->return_tokens, r) &&
              make_task(api, chat, o, req, r) &&
              get_bool(o, "ignore_eos", &req->task->ignore_eos, r);
    ok = ok && get_max_tokens(api, o, req->task, r) && get_stop(o, req->task, r) &&
         get_sampling(api, o, &req->task->sampling, r);
    json_decref(o);
    if (!ok) {
        if (req->task)
            srv_task_release(api->engine, req->task);
        req->task = NULL;
        return false;
    }
    snprintf(req->id, sizeof req->id, "%s-%llx%llx", chat ? "chatcmpl" : "cmpl",
             (unsigned long long)api->created, __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED));
    return true;
}

/* ---- responses -------------------------------------------------------------------------- */

static json_t *usage_json(const srv_task *t) {
    return json_pack("{s:I,s:I,s:I,s:{s:I}}", "prompt_tokens", (json_int_t)t->n_prompt,
                     "completion_tokens", (json_int_t)t->n_tokens, "total_tokens",
                     (json_int_t)(t->n_prompt + t->n_tokens), "prompt_tokens_details",
                     "cached_tokens", (json_int_t)t->n_reused);
}

static json_t *text_json(const char *s, size_t n) {
    size_t len;
    char *clean = srv_utf8_clean(s, n, &len);
    json_t *j = clean ? json_stringn(clean, len) : NULL;
    free(clean);
    return j;
}

/* One choice: text / message (delta when streaming), finish_reason. */
static json_t *choice_json(const srv_request *req, const char *s, size_t n, bool stream,
                           bool first, const char *finish) {
    const srv_task *t = req->task;
    json_t *c = json_pack("{s:i,s:o}", "index", 0, "finish_reason",
                          finish ? json_string(finish) : json_null());
    if (!req->chat) {
        json_object_set_new(c, "text", text_json(s, n));
        json_object_set_new(c, "logprobs", json_null());
    } else {
        json_t *m = json_object();
        if (!stream || first)
            json_object_set_new(m, "role", json_string("assistant"));
        if (!stream || n || first)
            json_object_set_new(m, "content", text_json(s, n));
        json_object_set_new(c, stream ? "delta" : "message", m);
    }
    if (req->return_tokens && (!stream || finish)) {
        json_t *ids = json_array();
        for (int32_t i = 0; i < t->n_tokens; i++)
            json_array_append_new(ids, json_integer(t->tokens[i]));
        json_object_set_new(c, "tokens", ids);
    }
    return c;
}

static json_t *envelope(const srv_api *api, const srv_request *req, bool stream) {
    const char *object = req->chat ? (stream ? "chat.completion.chunk" : "chat.completion")
                                   : "text_completion";
    return json_pack("{s:s,s:s,s:I,s:s,s:s}", "id", req->id, "object", object, "created",
                     (json_int_t)time(NULL), "model", api->model_id, "system_fingerprint",
                     "moe-server");
}

srv_reply srv_api_final(const srv_api *api, const srv_request *req) {
    const srv_task *t = req->task;
    if (t->error[0])
        return srv_error_reply(500, "generation failed: %s", t->error);
    json_t *j = envelope(api, req, false);
    json_t *choices = json_array();
    json_array_append_new(choices, choice_json(req, t->text ? t->text : "", t->len, false, true,
                                               t->finish_reason ? t->finish_reason : "stop"));
    json_object_set_new(j, "choices", choices);
    json_object_set_new(j, "usage", usage_json(t));
    return json_reply(200, j);
}

char *srv_api_chunk(const srv_api *api, const srv_request *req, size_t from, size_t to,
                    bool first, bool last) {
    const srv_task *t = req->task;
    json_t *j;
    if (last && t->error[0]) {
        srv_reply r = srv_error_reply(500, "generation failed: %s", t->error);
        j = json_loads(r.body, 0, NULL);
        free(r.body);
    } else {
        j = envelope(api, req, true);
        json_t *choices = json_array();
        json_array_append_new(choices,
                              choice_json(req, t->text ? t->text + from : "", to - from, true,
                                          first, last ? (t->finish_reason ? t->finish_reason
                                                                          : "stop")
                                                      : NULL));
        json_object_set_new(j, "choices", choices);
        if (last)
            json_object_set_new(j, "usage", usage_json(t));
    }
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s)
        return NULL;
    size_t n = strlen(s);
    char *ev = malloc(n + 9);
    if (ev)
        snprintf(ev, n + 9, "data: %s\n\n", s);
    free(s);
    return ev;
}

/* ---- small endpoints ---------------------------------------------------------------------- */

srv_reply srv_api_models(const srv_api *api) {
    json_t *m = json_pack("{s:s,s:s,s:I,s:s,s:{s:I,s:I,s:s}}", "id", api->model_id, "object",
                          "model", "created", (json_int_t)api->created,
                          "owned_by", "moe-toolkit", "meta",
                          "n_vocab", (json_int_t)moe_model_n_vocab(api->model), "n_ctx_train",
                          (json_int_t)moe_model_n_ctx_train(api->model), "arch",
                          moe_model_arch_name(api->model));
    return json_reply(200, json_pack("{s:s,s:[o]}", "object", "list", "data", m));
}

/* {"content": TEXT, "add_special": false} -> {"tokens": [...]}, as llama-server. */
srv_reply srv_api_tokenize(const srv_api *api, const char *body, size_t len) {
    srv_reply r;
    json_t *o = parse_object(body, len, &r);
    if (!o)
        return r;
    json_t *c = json_object_get(o, "content");
    bool add_special = false, with_pieces = false;
    if (!json_is_string(c)) {
        json_decref(o);
        return srv_error_reply(400, "'content' must be a string");
    }
    if (!get_bool(o, "add_special", &add_special, &r) ||
        !get_bool(o, "with_pieces", &with_pieces, &r)) {
        json_decref(o);
        return r;
    }
    const char *text = json_string_value(c);
    size_t n = json_string_length(c);
    int32_t cap = n > INT32_MAX / 2 ? -1 : (int32_t)n + 8;
    moe_token *toks = cap > 0 ? malloc((size_t)cap * sizeof *toks) : NULL;
    int32_t k = toks ? moe_tokenize(api->model, text, (int32_t)n, toks, cap, add_special, true)
                     : -1;
    json_t *arr = json_array();
    for (int32_t i = 0; i < k; i++) {
        if (!with_pieces) {
            json_array_append_new(arr, json_integer(toks[i]));
            continue;
        }
        char piece[256];
        int32_t pn = moe_token_to_piece(api->model, toks[i], piece, sizeof piece, true);
        json_array_append_new(arr, json_pack("{s:I,s:o}", "id", (json_int_t)toks[i], "piece",
                                             text_json(piece, pn > 0 ? (size_t)pn : 0)));
    }
    free(toks);
    json_decref(o);
    if (k < 0) {
        json_decref(arr);
        return srv_error_reply(500, "cannot tokenize the content");
    }
    return json_reply(200, json_pack("{s:o}", "tokens", arr));
}

/* {"tokens": [...]} -> {"content": TEXT}: the pieces as generation shows them. */
srv_reply srv_api_detokenize(const srv_api *api, const char *body, size_t len) {
    srv_reply r;
    json_t *o = parse_object(body, len, &r);
    if (!o)
        return r;
    json_t *arr = json_object_get(o, "tokens");
    if (!json_is_array(arr)) {
        json_decref(o);
        return srv_error_reply(400, "'tokens' must be an array of token ids");
    }
    size_t cap = 256, n = 0, i;
    char *text = malloc(cap);
    json_t *v;
    json_array_foreach(arr, i, v) {
        json_int_t id = json_is_integer(v) ? json_integer_value(v) : -1;
        if (id < 0 || id >= moe_model_n_vocab(api->model)) {
            free(text);
            json_decref(o);
            return srv_error_reply(400, "tokens[%zu] is not a token id of this model", i);
        }
        for (;;) {
            int32_t k = text ? moe_token_to_piece(api->model, (moe_token)id, text + n,
                                                  (int32_t)(cap - n), false)
                             : 0;
            if (k >= 0) {
                n += (size_t)k;
                break;
            }
            char *nt = realloc(text, cap = 2 * cap + (size_t)-k);
            if (!nt)
                break;
            text = nt;
        }
    }
    json_decref(o);
    json_t *s = text ? text_json(text, n) : NULL;
    free(text);
    return s ? json_reply(200, json_pack("{s:o}", "content", s))
             : srv_error_reply(500, "out of memory");
}

/* Prometheus text format, version 0.0.4. */
srv_reply srv_api_metrics(const srv_api *api) {
    srv_counters c;
    srv_engine_counters(api->engine, &c);
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        return srv_error_reply(500, "out of memory");
#define METRIC(name, type, help, fmt, value)                                                    \
    fprintf(f, "# HELP moe_server_" name " " help "\n# TYPE moe_server_" name " " type          \
               "\nmoe_server_" name " " fmt "\n", value)
    METRIC("requests_total", "counter", "Completion requests finished.", "%" PRId64, c.requests);
    METRIC("requests_cancelled_total", "counter", "Requests whose client went away.", "%" PRId64,
           c.cancelled);
    METRIC("requests_processing", "gauge", "Requests holding a slot.", "%" PRId32, c.processing);
    METRIC("requests_deferred", "gauge", "Requests queued for a free slot.", "%" PRId32,
           c.queued);
    METRIC("prompt_tokens_total", "counter", "Prompt tokens evaluated.", "%" PRId64,
           c.prompt_tokens);
    METRIC("prompt_tokens_reused_total", "counter",
           "Prompt tokens found in a slot's cache (not evaluated).", "%" PRId64, c.prompt_reused);
    METRIC("tokens_predicted_total", "counter", "Tokens generated.", "%" PRId64, c.gen_tokens);
    METRIC("prompt_seconds_total", "counter", "Seconds in decode steps holding prompt tokens.",
           "%.6f", c.prompt_s);
    METRIC("tokens_predicted_seconds_total", "counter",
           "Seconds in decode steps holding only generated tokens.", "%.6f", c.gen_s);
    METRIC("prompt_tokens_seconds", "gauge", "Prompt tokens per second of prompt time.", "%.3f",
           c.prompt_s > 0 ? (double)c.prompt_tokens / c.prompt_s : 0.0);
    METRIC("predicted_tokens_seconds", "gauge", "Generated tokens per second of decode time.",
           "%.3f",
           c.prompt_s + c.gen_s > 0 ? (double)c.gen_tokens / (c.prompt_s + c.gen_s) : 0.0);
    METRIC("decode_steps_total", "counter", "moe_decode calls.", "%" PRId64, c.decode_steps);
    METRIC("decode_steps_batched_total", "counter",
           "Decode steps that evaluated more than one sequence.", "%" PRId64, c.batched_steps);
    METRIC("decode_tokens_total", "counter", "Tokens evaluated by decode steps.", "%" PRId64,
           c.batch_tokens);
    METRIC("decode_sequences_max", "gauge", "Most sequences one decode step evaluated.",
           "%" PRId64, c.max_batch_seqs);
    METRIC("kv_cache_tokens", "gauge", "KV cache cells in use.", "%" PRId32, c.kv_used);
    METRIC("kv_cache_usage_ratio", "gauge", "KV cache cells in use over cells.", "%.6f",
           c.kv_size ? (double)c.kv_used / c.kv_size : 0.0);
#undef METRIC
    fclose(f);
    return (srv_reply){.status = 200, .body = buf,
                       .content_type = "text/plain; version=0.0.4; charset=utf-8"};
}
