/* synth_vocab — tokenizer keys for moe-synth: a built-in SentencePiece-style
 * vocabulary (keys per ../shared/spec/model.md §6.1), or a copy of another
 * GGUF's tokenizer.* keys. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf/cursor.h"
#include "formats/quant/fp16.h"
#include "formats/tools/synth.h"

/* SentencePiece token types (llama_token_type). */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_BYTE = 6 };

#define N_SPECIAL 3   /* <unk> <s> </s> */
#define N_BYTES 256   /* <0x00>..<0xFF>: byte fallback makes any text encodable */
#define SPM_SPACE "\xE2\x96\x81" /* U+2581, SentencePiece's word-start marker */
#define MAX_WORD 4

/* Letters by English frequency, so the early (best-scored) pieces look like text. */
static const char letters[] = "etaoinshrdlucmfwypvbgkjqxz";

/* Number of normal pieces the generator can make. */
static int64_t max_pieces(void) {
    int64_t n = 1 + 2 * 94; /* the marker, then each printable char alone and after it */
    int64_t words = 26;
    for (int len = 2; len <= MAX_WORD; len++) {
        words *= 26;
        n += 2 * words;
    }
    return n;
}

/* Writes normal piece k (0-based) into buf: the marker; the 94 printable ASCII
 * characters; the same after the marker; then for each length 2..4 every word
 * over `letters`, first with the marker, then without. */
static void piece(int64_t k, char *buf) {
    if (k == 0) {
        strcpy(buf, SPM_SPACE);
        return;
    }
    k -= 1;
    if (k < 2 * 94) {
        char c = (char)(33 + k % 94);
        if (k < 94)
            snprintf(buf, 8, "%c", c);
        else
            snprintf(buf, 8, SPM_SPACE "%c", c);
        return;
    }
    k -= 2 * 94;
    int64_t words = 26;
    for (int len = 2; len <= MAX_WORD; len++) {
        words *= 26;
        if (k < 2 * words) {
            bool marker = k < words;
            int64_t w = k % words;
            char *p = buf;
            if (marker) {
                memcpy(p, SPM_SPACE, 3);
                p += 3;
            }
            for (int i = len - 1; i >= 0; i--) {
                p[i] = letters[w % 26];
                w /= 26;
            }
            p[len] = '\0';
            return;
        }
        k -= 2 * words;
    }
    buf[0] = '\0'; /* unreachable: callers stay below max_pieces() */
}

static moe_status write_arrays(moe_gguf_writer *w, int64_t n, moe_err *err) {
    const size_t max_len = 3 + MAX_WORD + 1;
    char *text = malloc((size_t)n * max_len);
    const char **tokens = malloc((size_t)n * sizeof(*tokens));
    uint8_t *scores = malloc((size_t)n * 4);
    uint8_t *types = malloc((size_t)n * 4);
    moe_status st = MOE_OK;
    if (!text || !tokens || !scores || !types) {
        st = moe_fail(err, MOE_ERR_NOMEM, "out of memory for a %lld-token vocabulary",
                      (long long)n);
        goto out;
    }
    for (int64_t i = 0; i < n; i++) {
        char *s = text + (size_t)i * max_len;
        int type = TT_NORMAL;
        float score = 0;
        if (i == 0) {
            strcpy(s, "<unk>");
            type = TT_UNKNOWN;
        } else if (i < N_SPECIAL) {
            strcpy(s, i == 1 ? "<s>" : "</s>");
            type = TT_CONTROL;
        } else if (i < N_SPECIAL + N_BYTES) {
            snprintf(s, max_len, "<0x%02X>", (unsigned)(i - N_SPECIAL));
            type = TT_BYTE;
        } else {
            int64_t k = i - N_SPECIAL - N_BYTES;
            piece(k, s);
            score = -(float)k; /* SPM merges prefer higher scores: earlier pieces */
        }
        tokens[i] = s;
        moe_store_le32(scores + 4 * i, moe_f32_to_bits(score));
        moe_store_le32(types + 4 * i, (uint32_t)type);
    }
    st = moe_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tokens, (uint64_t)n, err);
    if (st == MOE_OK)
        st = moe_gguf_writer_set_arr(w, "tokenizer.ggml.scores", MOE_GGUF_F32, (uint64_t)n,
                                     scores, err);
    if (st == MOE_OK)
        st = moe_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", MOE_GGUF_I32, (uint64_t)n,
                                     types, err);
out:
    free(text);
    free(tokens);
    free(scores);
    free(types);
    return st;
}

moe_status synth_vocab_builtin(moe_gguf_writer *w, int64_t n_vocab, moe_err *err) {
    int64_t most = N_SPECIAL + N_BYTES + max_pieces();
    MOE_FAIL_IF(n_vocab < N_SPECIAL + N_BYTES || n_vocab > most, err, MOE_ERR_USAGE,
                "the built-in vocabulary has %d to %lld tokens, not %lld (use --vocab FILE)",
                N_SPECIAL + N_BYTES, (long long)most, (long long)n_vocab);
    MOE_TRY(moe_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama", err));
    MOE_TRY(moe_gguf_writer_set_str(w, "tokenizer.ggml.pre", "default", err));
    MOE_TRY(write_arrays(w, n_vocab, err));
    MOE_TRY(moe_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1, err));
    MOE_TRY(moe_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2, err));
    MOE_TRY(moe_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0, err));
    MOE_TRY(moe_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true, err));
    return moe_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", false, err);
}

moe_status synth_vocab_count(const moe_gguf *g, int64_t *n_vocab, moe_err *err) {
    int64_t ki = moe_gguf_find_key(g, "tokenizer.ggml.tokens");
    MOE_FAIL_IF(ki < 0, err, MOE_ERR_FORMAT, "no tokenizer.ggml.tokens key");
    const moe_gguf_kv *kv = &g->kv[ki];
    MOE_FAIL_IF(kv->type != MOE_GGUF_ARRAY || kv->elem_type != MOE_GGUF_STRING ||
                    kv->count == 0 || kv->count > INT32_MAX,
                err, MOE_ERR_FORMAT, "tokenizer.ggml.tokens is not a non-empty string array");
    *n_vocab = (int64_t)kv->count;
    return MOE_OK;
}

moe_status synth_vocab_copy(moe_gguf_writer *w, const moe_gguf *g, moe_err *err) {
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (strncmp(g->kv[i].key, "tokenizer.", 10) == 0)
            MOE_TRY(moe_gguf_writer_copy_kv(w, &g->kv[i], err));
    return MOE_OK;
}
