/* fuzz_vocab — fuzz target for the vocabulary loader and the tokenizers
 * (runtime/vocab.h). Input: a GGUF file whose tokenizer.* keys define the
 * vocabulary (the seeds: tiny SPM and BPE vocabularies without tensors); the
 * bytes after its header are the text, tokenized with and without special
 * tokens and BOS/EOS, then detokenized; every piece of the first tokens is
 * rendered. Invariants: a rejected vocabulary leaves none and a message; token
 * ids stay in range; the "buffer too small" answers give the size that then
 * suffices. Corpus: tests/corpus/vocab (replayed with --expect any). */
#include <string.h>

#include "formats/gguf/gguf.h"
#include "formats/base/log.h"
#include "fuzz/fuzz_target.h"
#include "runtime/vocab.h"

enum { MAX_TEXT = 4096, MAX_PIECES = 512 };

static void check_detokenize(const moe_vocab *v, const int32_t *toks, int32_t n, bool special) {
    char small[16];
    int32_t r = moe_vocab_detokenize(v, toks, n, small, sizeof small, special);
    if (r >= 0)
        return;
    char *big = malloc((size_t)-r);
    MOE_FUZZ_REQUIRE(big != NULL);
    MOE_FUZZ_REQUIRE(moe_vocab_detokenize(v, toks, n, big, -r, special) == -r);
    free(big);
}

static void check_tokenize(const moe_vocab *v, const char *text, int32_t len, bool add,
                           bool special) {
    int64_t n_vocab = moe_vocab_n_tokens(v);
    int32_t cap = len + 4;
    int32_t *toks = malloc((size_t)cap * sizeof *toks);
    MOE_FUZZ_REQUIRE(toks != NULL);
    int32_t n = moe_vocab_tokenize(v, text, len, toks, cap, add, special);
    if (n < 0 && n != INT32_MIN) { /* more tokens than bytes: BOS/EOS, byte fallback */
        cap = -n;
        toks = realloc(toks, (size_t)cap * sizeof *toks);
        MOE_FUZZ_REQUIRE(toks != NULL);
        MOE_FUZZ_REQUIRE(moe_vocab_tokenize(v, text, len, toks, cap, add, special) == cap);
        n = cap;
    }
    for (int32_t i = 0; i < n; i++)
        MOE_FUZZ_REQUIRE(toks[i] >= 0 && toks[i] < n_vocab);
    if (n > 0)
        check_detokenize(v, toks, n, special);
    free(toks);
}

static void exercise(const moe_vocab *v, const char *text, int32_t len) {
    int64_t n_vocab = moe_vocab_n_tokens(v);
    MOE_FUZZ_REQUIRE(n_vocab > 0);
    int32_t specials[] = {moe_vocab_bos(v), moe_vocab_eos(v), moe_vocab_eot(v), moe_vocab_unk(v)};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++)
        MOE_FUZZ_REQUIRE(specials[i] >= -1 && specials[i] < n_vocab);
    for (int k = 0; k < 4; k++)
        check_tokenize(v, text, len, k & 1, k & 2);
    for (int64_t t = 0; t < n_vocab && t < MAX_PIECES; t++) {
        char piece[8];
        int32_t r = moe_vocab_token_to_piece(v, (int32_t)t, piece, sizeof piece, true);
        MOE_FUZZ_REQUIRE(r >= 0 ? r <= (int32_t)sizeof piece : -r > (int32_t)sizeof piece);
    }
}

moe_status moe_fuzz_run(const uint8_t *data, size_t size, moe_err *err) {
    moe_log_set_level(MOE_LOG_ERROR); /* a missing pre-tokenizer warns on every input */
    moe_gguf *g = NULL;
    MOE_TRY(moe_gguf_parse(data, size, size, &g, err));
    moe_vocab *v = NULL;
    moe_status st = moe_vocab_load(g, &v, err);
    if (st != MOE_OK) {
        MOE_FUZZ_REQUIRE(v == NULL && err->msg[0] != '\0');
    } else {
        size_t start = g->data_offset < size ? (size_t)g->data_offset : size;
        size_t len = size - start < MAX_TEXT ? size - start : MAX_TEXT;
        char *text = malloc(len + 1); /* exact size: ASan sees reads past it */
        MOE_FUZZ_REQUIRE(text != NULL);
        memcpy(text, data + start, len);
        text[len] = '\0';
        exercise(v, text, (int32_t)len);
        free(text);
        moe_vocab_free(v);
    }
    moe_gguf_free(g);
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    moe_err err;
    moe_fuzz_run(data, size, &err);
    return 0;
}
