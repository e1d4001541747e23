/* vocab.c — loading a vocabulary from tokenizer.* keys, special-token
 * partitioning, pieces and the getters. The two tokenizer algorithms live in
 * vocab_spm.c and vocab_bpe.c. Facts: ../shared/spec/model.md §6. */
#define MOE_VOCAB_INTERNAL
#include "runtime/vocab.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "formats/base/checked.h"
#include "formats/base/log.h"

/* Inserts id under its text; a later id with the same text replaces the
 * earlier one, as llama.cpp's token_to_id does. */
static void map_put_token(moe_vocab *v, int32_t id) {
    size_t n;
    const char *s = moe_vocab_text_of(v, id, &n);
    uint32_t i = (uint32_t)moe_vocab_hash(s, n, MOE_VOCAB_HASH_SEED) & v->map.mask;
    for (;; i = (i + 1) & v->map.mask) {
        int32_t old = v->map.slot[i];
        if (old < 0)
            break;
        size_t len;
        const char *t = moe_vocab_text_of(v, old, &len);
        if (len == n && memcmp(t, s, n) == 0)
            break;
    }
    v->map.slot[i] = id;
}

/* ---- loading ------------------------------------------------------------------------------- */

static const moe_gguf_kv *find_kv(const moe_gguf *g, const char *key) {
    int64_t i = moe_gguf_find_key(g, key);
    return i < 0 ? NULL : &g->kv[i];
}

static moe_status want_array(const moe_gguf_kv *kv, moe_gguf_vtype elem, uint64_t count,
                             moe_err *err) {
    bool ok = kv->type == MOE_GGUF_ARRAY && kv->elem_type == elem &&
              (count == 0 || kv->count == count);
    MOE_FAIL_IF(!ok, err, MOE_ERR_FORMAT, "%s: expected arr[%s]%s%llu, found %s[%s] of %llu",
                kv->key, moe_gguf_vtype_name(elem), count ? " of " : "",
                (unsigned long long)count, moe_gguf_vtype_name(kv->type),
                kv->type == MOE_GGUF_ARRAY ? moe_gguf_vtype_name(kv->elem_type) : "-",
                (unsigned long long)kv->count);
    return MOE_OK;
}

/* Copies every token text into one blob; empty texts become "[EMPTY_i]". */
static moe_status load_tokens(moe_vocab *v, const moe_gguf *g, moe_err *err) {
    const moe_gguf_kv *kv = find_kv(g, "tokenizer.ggml.tokens");
    MOE_FAIL_IF(!kv, err, MOE_ERR_FORMAT, "missing key 'tokenizer.ggml.tokens'");
    MOE_TRY(want_array(kv, MOE_GGUF_STRING, 0, err));
    MOE_FAIL_IF(kv->count == 0 || kv->count >= INT32_MAX, err, MOE_ERR_FORMAT,
                "tokenizer.ggml.tokens: %llu tokens", (unsigned long long)kv->count);
    v->n = (int32_t)kv->count;
    uint64_t total = 0;
    for (int32_t i = 0; i < v->n; i++) {
        const char *s;
        uint64_t len;
        MOE_TRY(moe_gguf_arr_str(kv, (uint64_t)i, &s, &len, err));
        total += len ? len : 24;
    }
    MOE_FAIL_IF(total >= UINT32_MAX, err, MOE_ERR_FORMAT,
                "tokenizer.ggml.tokens: %llu bytes of text", (unsigned long long)total);
    v->blob = malloc(total + 1);
    v->off = malloc(((size_t)v->n + 1) * sizeof *v->off);
    MOE_FAIL_IF(!v->blob || !v->off, err, MOE_ERR_NOMEM, "out of memory for %d tokens", v->n);
    uint32_t at = 0;
    for (int32_t i = 0; i < v->n; i++) {
        const char *s;
        uint64_t len;
        MOE_TRY(moe_gguf_arr_str(kv, (uint64_t)i, &s, &len, err));
        v->off[i] = at;
        if (len) {
            memcpy(v->blob + at, s, len);
            at += (uint32_t)len;
        } else {
            at += (uint32_t)snprintf(v->blob + at, 25, "[EMPTY_%d]", i);
        }
    }
    v->off[v->n] = at;
    MOE_TRY(moe_vocab_map_init(&v->map, (size_t)v->n, err));
    for (int32_t i = 0; i < v->n; i++)
        map_put_token(v, i);
    return MOE_OK;
}

/* Scores (optional, default 0) and types (optional, default NORMAL): llama.cpp
 * reads them as raw f32 / i32 arrays of n_vocab, so we demand exactly that. */
static moe_status load_scores_types(moe_vocab *v, const moe_gguf *g, moe_err *err) {
    v->score = calloc((size_t)v->n, sizeof *v->score);
    v->type = malloc((size_t)v->n);
    v->eog = calloc((size_t)v->n, 1);
    v->strip = calloc((size_t)v->n, 1);
    MOE_FAIL_IF(!v->score || !v->type || !v->eog || !v->strip, err, MOE_ERR_NOMEM,
                "out of memory");
    memset(v->type, MOE_TOKEN_NORMAL, (size_t)v->n);
    const moe_gguf_kv *kv = find_kv(g, "tokenizer.ggml.scores");
    if (kv) {
        MOE_TRY(want_array(kv, MOE_GGUF_F32, (uint64_t)v->n, err));
        for (int32_t i = 0; i < v->n; i++) {
            double x;
            MOE_TRY(moe_gguf_arr_float(kv, (uint64_t)i, &x, err));
            v->score[i] = (float)x;
        }
    }
    kv = find_kv(g, "tokenizer.ggml.token_type");
    if (kv) {
        MOE_TRY(want_array(kv, MOE_GGUF_I32, (uint64_t)v->n, err));
        for (int32_t i = 0; i < v->n; i++) {
            int64_t t;
            MOE_TRY(moe_gguf_arr_int(kv, (uint64_t)i, &t, err));
            MOE_FAIL_IF(t < MOE_TOKEN_UNDEFINED || t > MOE_TOKEN_BYTE, err, MOE_ERR_FORMAT,
                        "tokenizer.ggml.token_type[%d] = %lld is not a token type", i,
                        (long long)t);
            v->type[i] = (uint8_t)t;
        }
    }
    return MOE_OK;
}

/* An id key overrides *id when present and in range; out of range is only a
 * warning (llama.cpp keeps the default). */
static moe_status read_id(const moe_vocab *v, const moe_gguf *g, const char *key, int32_t *id,
                          moe_err *err) {
    const moe_gguf_kv *kv = find_kv(g, key);
    if (!kv)
        return MOE_OK;
    int64_t x;
    MOE_TRY(moe_gguf_kv_int(kv, &x, err));
    if (x < 0 || x >= v->n) {
        MOE_WARN("%s = %lld is outside the %d-token vocabulary: ignored", key, (long long)x, v->n);
        return MOE_OK;
    }
    *id = (int32_t)x;
    return MOE_OK;
}

static moe_status read_bool(const moe_gguf *g, const char *key, bool *b, moe_err *err) {
    const moe_gguf_kv *kv = find_kv(g, key);
    return kv ? moe_gguf_kv_bool(kv, b, err) : MOE_OK;
}

/* Texts llama.cpp takes as an end of turn when no eot key is given (first
 * found in this order wins), and the wider end-of-generation set. */
static const char *const EOT_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>",
    "<\357\275\234end\342\226\201of\342\226\201sentence\357\275\234>", /* <｜end▁of▁sentence｜> */
};
static const char *const EOG_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
    "<EOT>", "_<EOT>",
    "<\357\275\234end\342\226\201of\342\226\201sentence\357\275\234>", /* <｜end▁of▁sentence｜> */
    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
};
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static int32_t find_cstr(const moe_vocab *v, const char *s) {
    return moe_vocab_find(v, s, strlen(s));
}

static int32_t id_or_none(int32_t id, int32_t n) { return id < n ? id : -1; }

/* Special ids: defaults by tokenizer, then keys, then text detection. */
static moe_status load_specials(moe_vocab *v, const moe_gguf *g, moe_err *err) {
    bool spm = v->kind == MOE_VOCAB_SPM;
    v->bos = id_or_none(spm ? 1 : 11, v->n);
    v->eos = id_or_none(spm ? 2 : 11, v->n);
    v->unk = spm ? 0 : -1;
    v->eot = v->eom = -1;
    v->add_space_prefix = spm;
    v->add_eos = false;
    if (spm)
        v->add_bos = true; /* BPE: set by its pre-tokenizer */
    MOE_TRY(read_id(v, g, "tokenizer.ggml.bos_token_id", &v->bos, err));
    MOE_TRY(read_id(v, g, "tokenizer.ggml.eos_token_id", &v->eos, err));
    MOE_TRY(read_id(v, g, "tokenizer.ggml.eot_token_id", &v->eot, err));
    MOE_TRY(read_id(v, g, "tokenizer.ggml.eom_token_id", &v->eom, err));
    MOE_TRY(read_id(v, g, "tokenizer.ggml.unknown_token_id", &v->unk, err));
    MOE_TRY(read_bool(g, "tokenizer.ggml.add_bos_token", &v->add_bos, err));
    MOE_TRY(read_bool(g, "tokenizer.ggml.add_eos_token", &v->add_eos, err));
    MOE_TRY(read_bool(g, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix, err));

    /* llama.cpp forces CONTROL on the tokens it picks by text, so they stop
     * being split out of plain text unless parse_special. */
    for (size_t i = 0; v->eot < 0 && i < N_OF(EOT_TEXTS); i++) {
        int32_t id = find_cstr(v, EOT_TEXTS[i]);
        if (id >= 0) {
            v->eot = id;
            v->type[id] = MOE_TOKEN_CONTROL;
        }
    }
    if (v->eom < 0)
        v->eom = find_cstr(v, "<|eom_id|>");
    for (size_t i = 0; i < N_OF(EOG_TEXTS); i++) {
        int32_t id = find_cstr(v, EOG_TEXTS[i]);
        if (id >= 0) {
            v->eog[id] = 1;
            v->type[id] = MOE_TOKEN_CONTROL;
        }
    }
    static const char *const fim_keys[] = {"tokenizer.ggml.fim_pad_token_id",
                                           "tokenizer.ggml.fim_rep_token_id",
                                           "tokenizer.ggml.fim_sep_token_id"};
    for (size_t i = 0; i < N_OF(fim_keys); i++) {
        int32_t id = -1;
        MOE_TRY(read_id(v, g, fim_keys[i], &id, err));
        if (id >= 0)
            v->eog[id] = 1;
    }
    int32_t ends[] = {v->eos, v->eot, v->eom};
    for (size_t i = 0; i < N_OF(ends); i++)
        if (ends[i] >= 0)
            v->eog[ends[i]] = 1;
    return MOE_OK;
}

typedef struct special_key {
    uint32_t len;
    int32_t id;
} special_key;

static int cmp_special(const void *a, const void *b) {
    const special_key *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static bool is_special_type(uint8_t t) {
    return t == MOE_TOKEN_CONTROL || t == MOE_TOKEN_USER_DEFINED || t == MOE_TOKEN_UNKNOWN;
}

/* Tokens the partitioner looks for, longest text first (ties: lower id, so
 * the order is deterministic where llama.cpp's unstable sort is not). */
static moe_status build_specials(moe_vocab *v, moe_err *err) {
    int32_t n = 0;
    for (int32_t i = 0; i < v->n; i++)
        n += is_special_type(v->type[i]);
    special_key *keys = malloc(((size_t)n + 1) * sizeof *keys);
    v->special = malloc(((size_t)n + 1) * sizeof *v->special);
    if (!keys || !v->special) {
        free(keys);
        return moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    }
    n = 0;
    for (int32_t i = 0; i < v->n; i++)
        if (is_special_type(v->type[i]))
            keys[n++] = (special_key){v->off[i + 1] - v->off[i], i};
    qsort(keys, (size_t)n, sizeof *keys, cmp_special);
    for (int32_t i = 0; i < n; i++)
        v->special[i] = keys[i].id;
    v->n_special = n;
    free(keys);
    return MOE_OK;
}

static bool contains_ci(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return true;
    return false;
}

static const char *opt_str(const moe_gguf *g, const char *key) {
    const moe_gguf_kv *kv = find_kv(g, key);
    return kv && kv->type == MOE_GGUF_STRING ? kv->str : "";
}

static void set_strip(moe_vocab *v, const char *text, unsigned bit, bool on) {
    int32_t id = find_cstr(v, text);
    if (id >= 0)
        v->strip[id] = (uint8_t)(on ? v->strip[id] | bit : v->strip[id] & ~bit);
}

/* Whitespace-swallowing attributes llama.cpp sets by model name: Phi-3's
 * special tokens eat the whitespace after them (so "<|user|>\n" in a prompt
 * is just <|user|>), jina-v2's <mask> the whitespace before it. */
static void set_strip_rules(moe_vocab *v, const moe_gguf *g) {
    const char *pre = opt_str(g, "tokenizer.ggml.pre");
    if (strstr(pre, "jina-v2-de") || strstr(pre, "jina-v2-es") || strstr(pre, "jina-v2-code") ||
        strstr(opt_str(g, "general.architecture"), "nomic-bert-moe")) {
        set_strip(v, "<mask>", MOE_STRIP_LEFT, true);
    } else if (contains_ci(opt_str(g, "general.name"), "phi-3") ||
               contains_ci(opt_str(g, "general.name"), "phi3")) {
        for (int32_t i = 0; i < v->n_special; i++)
            v->strip[v->special[i]] |= MOE_STRIP_RIGHT;
        set_strip(v, "</s>", MOE_STRIP_RIGHT, true);
        static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
        for (size_t i = 0; i < N_OF(keep); i++)
            set_strip(v, keep[i], MOE_STRIP_RIGHT, false);
    }
}

static moe_status load_template(moe_vocab *v, const moe_gguf *g, moe_err *err) {
    const moe_gguf_kv *kv = find_kv(g, "tokenizer.chat_template");
    if (!kv)
        return MOE_OK;
    MOE_FAIL_IF(kv->type != MOE_GGUF_STRING, err, MOE_ERR_FORMAT,
                "tokenizer.chat_template: expected str, found %s", moe_gguf_vtype_name(kv->type));
    v->chat_template = strdup(kv->str);
    MOE_FAIL_IF(!v->chat_template, err, MOE_ERR_NOMEM, "out of memory");
    return MOE_OK;
}

static moe_status load(moe_vocab *v, const moe_gguf *g, moe_err *err) {
    const char *model;
    MOE_TRY(moe_gguf_get_str(g, "tokenizer.ggml.model", &model, err));
    if (strcmp(model, "llama") == 0)
        v->kind = MOE_VOCAB_SPM;
    else if (strcmp(model, "gpt2") == 0)
        v->kind = MOE_VOCAB_BPE;
    else
        return moe_fail(err, MOE_ERR_UNSUPPORTED,
                        "tokenizer.ggml.model '%s' is not supported (only 'llama' and 'gpt2')",
                        model);
    MOE_TRY(load_tokens(v, g, err));
    MOE_TRY(load_scores_types(v, g, err));
    if (v->kind == MOE_VOCAB_BPE)
        MOE_TRY(moe_bpe_load(v, g, err));
    MOE_TRY(load_specials(v, g, err));
    MOE_TRY(build_specials(v, err));
    set_strip_rules(v, g);
    return load_template(v, g, err);
}

moe_status moe_vocab_load(const moe_gguf *g, moe_vocab **out, moe_err *err) {
    *out = NULL;
    moe_vocab *v = calloc(1, sizeof *v);
    MOE_FAIL_IF(!v, err, MOE_ERR_NOMEM, "out of memory");
    moe_status st = load(v, g, err);
    if (st != MOE_OK) {
        moe_vocab_free(v);
        return st;
    }
    *out = v;
    return MOE_OK;
}

void moe_vocab_free(moe_vocab *v) {
    if (!v)
        return;
    moe_bpe_free(v->bpe);
    moe_vocab_map_free(&v->map);
    free(v->blob);
    free(v->off);
    free(v->score);
    free(v->type);
    free(v->eog);
    free(v->strip);
    free(v->special);
    free(v->chat_template);
    free(v);
}

/* ---- tokenizing ---------------------------------------------------------------------------- */

/* A stretch of the input: raw text (tok < 0) or one special token. */
typedef struct frag {
    int32_t tok;
    size_t off, len;
} frag;

typedef struct fragvec {
    frag *d;
    size_t n, cap;
} fragvec;

static bool frag_push(fragvec *fv, int32_t tok, size_t off, size_t len) {
    frag *d = moe_grow(fv->d, &fv->cap, fv->n + 1, 16, sizeof *d);
    if (!d)
        return false;
    fv->d = d;
    fv->d[fv->n++] = (frag){tok, off, len};
    return true;
}

static bool occurs_in_raw(const fragvec *fv, const char *text, const char *s, size_t n) {
    for (size_t i = 0; i < fv->n; i++)
        if (fv->d[i].tok < 0 && fv->d[i].len >= n && memmem(text + fv->d[i].off, fv->d[i].len, s, n))
            return true;
    return false;
}

static bool is_ascii_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Splits every raw fragment of *cur on the occurrences of token id into
 * *next (cleared first). */
static bool split_on(const moe_vocab *v, int32_t id, const char *text, const fragvec *cur,
                     fragvec *next) {
    size_t n;
    const char *s = moe_vocab_text_of(v, id, &n);
    next->n = 0;
    for (size_t i = 0; i < cur->n; i++) {
        frag f = cur->d[i];
        if (f.tok >= 0) {
            if (!frag_push(next, f.tok, f.off, f.len))
                return false;
            continue;
        }
        size_t at = f.off, end = f.off + f.len;
        const char *hit;
        while (end - at >= n && (hit = memmem(text + at, end - at, s, n)) != NULL) {
            size_t h = (size_t)(hit - text), left = h;
            if (v->strip[id] & MOE_STRIP_LEFT)
                while (left > at && is_ascii_space(text[left - 1]))
                    left--;
            if (left > at && !frag_push(next, -1, at, left - at))
                return false;
            if (!frag_push(next, id, h, n))
                return false;
            at = h + n;
            if (v->strip[id] & MOE_STRIP_RIGHT)
                while (at < end && is_ascii_space(text[at]))
                    at++;
        }
        if (at < end && !frag_push(next, -1, at, end - at))
            return false;
    }
    return true;
}

/* llama.cpp's tokenizer_st_partition: each special token in turn, longest
 * first, is cut out of whatever raw text is left. */
static bool partition(const moe_vocab *v, const char *text, size_t len, bool parse_special,
                      fragvec *out) {
    fragvec tmp = {0};
    bool ok = len == 0 || frag_push(out, -1, 0, len);
    for (int32_t k = 0; ok && k < v->n_special; k++) {
        int32_t id = v->special[k];
        uint8_t t = v->type[id];
        if (!parse_special && (t == MOE_TOKEN_CONTROL || t == MOE_TOKEN_UNKNOWN))
            continue;
        size_t n;
        const char *s = moe_vocab_text_of(v, id, &n);
        if (!occurs_in_raw(out, text, s, n))
            continue;
        ok = split_on(v, id, text, out, &tmp);
        fragvec swap = *out;
        *out = tmp;
        tmp = swap;
    }
    free(tmp.d);
    return ok;
}

int32_t moe_vocab_tokenize(const moe_vocab *v, const char *text, int32_t len, int32_t *out,
                           int32_t cap, bool add_special, bool parse_special) {
    size_t n = !text ? 0 : len < 0 ? strlen(text) : (size_t)len;
    fragvec fv = {0};
    moe_tokvec tv = {0};
    bool ok = partition(v, text, n, parse_special, &fv);
    if (ok && add_special && v->add_bos && v->bos >= 0)
        moe_tokvec_push(&tv, v->bos);
    bool prev_special = true; /* SPM: the text start counts as after a special token */
    for (size_t i = 0; ok && i < fv.n; i++) {
        frag f = fv.d[i];
        if (f.tok >= 0) {
            moe_tokvec_push(&tv, f.tok);
            prev_special = true;
        } else if (v->kind == MOE_VOCAB_SPM) {
            moe_spm_tokenize(v, text + f.off, f.len, v->add_space_prefix && prev_special, &tv);
            prev_special = false;
        } else {
            ok = moe_bpe_tokenize(v, text + f.off, f.len, &tv);
        }
    }
    if (ok && add_special && v->add_eos && v->eos >= 0)
        moe_tokvec_push(&tv, v->eos);
    free(fv.d);
    size_t room = out && cap > 0 ? (size_t)cap : 0;
    int32_t ret = INT32_MIN;
    if (ok && !tv.failed && tv.n <= INT32_MAX) {
        size_t k = tv.n < room ? tv.n : room;
        if (k)
            memcpy(out, tv.d, k * sizeof *out);
        ret = tv.n <= room ? (int32_t)tv.n : -(int32_t)tv.n;
    }
    free(tv.d);
    return ret;
}

/* ---- pieces -------------------------------------------------------------------------------- */

/* Renders tok's piece into buf, which holds at least the token's stored
 * length (no piece is longer); returns its length. */
static size_t piece(const moe_vocab *v, int32_t tok, bool special, char *buf) {
    size_t len;
    const char *s = moe_vocab_text_of(v, tok, &len);
    switch (v->type[tok]) {
    case MOE_TOKEN_CONTROL:
    case MOE_TOKEN_UNKNOWN:
        if (!special)
            return 0;
        /* fallthrough */
    case MOE_TOKEN_USER_DEFINED:
        memcpy(buf, s, len);
        return len;
    case MOE_TOKEN_NORMAL:
        return v->kind == MOE_VOCAB_SPM ? moe_spm_piece(v, tok, buf) : moe_bpe_piece(v, tok, buf);
    case MOE_TOKEN_BYTE:
        return v->kind == MOE_VOCAB_SPM ? moe_spm_piece(v, tok, buf) : 0;
    default:
        return 0;
    }
}

/* Writes tok's piece to buf[0..cap) if it fits and returns its length
 * either way; lstrip drops one leading space. */
static size_t piece_into(const moe_vocab *v, int32_t tok, bool special, bool lstrip, char *buf,
                         size_t cap) {
    size_t len;
    moe_vocab_text_of(v, tok, &len);
    char small[256], *dst = buf, *heap = NULL;
    if (!buf || cap < len) {
        /* The caller's room is short: render aside to learn the length. */
        dst = len <= sizeof small ? small : (heap = malloc(len));
        if (!dst)
            return 0;
    }
    size_t n = piece(v, tok, special, dst);
    if (lstrip && n > 0 && dst[0] == ' ') {
        memmove(dst, dst + 1, n - 1);
        n--;
    }
    if (dst != buf && buf && n <= cap)
        memcpy(buf, dst, n);
    free(heap);
    return n;
}

int32_t moe_vocab_token_to_piece(const moe_vocab *v, int32_t tok, char *buf, int32_t cap,
                                 bool special) {
    if (tok < 0 || tok >= v->n)
        return 0;
    size_t room = cap > 0 && buf ? (size_t)cap : 0;
    size_t n = piece_into(v, tok, special, false, buf, room);
    return n <= room ? (int32_t)n : -(int32_t)n;
}

int32_t moe_vocab_detokenize(const moe_vocab *v, const int32_t *toks, int32_t n, char *buf,
                             int32_t cap, bool special) {
    size_t room = cap > 0 && buf ? (size_t)cap : 0, at = 0;
    bool strip = v->kind == MOE_VOCAB_SPM && v->add_space_prefix;
    for (int32_t i = 0; i < n; i++) {
        int32_t t = toks[i];
        if (t < 0 || t >= v->n)
            continue;
        /* The prefix space sits on the first piece after BOS/control tokens. */
        bool lstrip = strip && v->type[t] != MOE_TOKEN_CONTROL;
        size_t k = piece_into(v, t, special, lstrip, at < room ? buf + at : NULL,
                              at < room ? room - at : 0);
        if (lstrip)
            strip = false;
        at += k;
        if (at > INT32_MAX)
            return INT32_MIN;
    }
    return at <= room ? (int32_t)at : -(int32_t)at;
}

/* ---- getters ------------------------------------------------------------------------------- */

int64_t moe_vocab_n_tokens(const moe_vocab *v) { return v->n; }
moe_vocab_kind moe_vocab_type(const moe_vocab *v) { return v->kind; }
const char *moe_vocab_pre_name(const moe_vocab *v) {
    return v->bpe ? moe_bpe_pre_name(v->bpe) : "default";
}
int32_t moe_vocab_bos(const moe_vocab *v) { return v->bos; }
int32_t moe_vocab_eos(const moe_vocab *v) { return v->eos; }
int32_t moe_vocab_eot(const moe_vocab *v) { return v->eot; }
int32_t moe_vocab_unk(const moe_vocab *v) { return v->unk; }
bool moe_vocab_add_bos(const moe_vocab *v) { return v->add_bos && v->bos >= 0; }
bool moe_vocab_add_eos(const moe_vocab *v) { return v->add_eos && v->eos >= 0; }
bool moe_vocab_is_eog(const moe_vocab *v, int32_t tok) {
    return tok >= 0 && tok < v->n && v->eog[tok];
}
const char *moe_vocab_token_text(const moe_vocab *v, int32_t tok, size_t *len) {
    if (tok < 0 || tok >= v->n) {
        *len = 0;
        return NULL;
    }
    return moe_vocab_text_of(v, tok, len);
}
moe_token_type moe_vocab_token_type(const moe_vocab *v, int32_t tok) {
    return tok >= 0 && tok < v->n ? (moe_token_type)v->type[tok] : MOE_TOKEN_UNDEFINED;
}
const char *moe_vocab_chat_template(const moe_vocab *v) { return v->chat_template; }
