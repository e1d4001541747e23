/* vocab_spm.c — the SentencePiece ("llama") tokenizer as llama.cpp runs it:
 * greedy merging of adjacent pieces by vocabulary score, then byte fallback
 * (../shared/spec/model.md §6.3). */
#define MOE_VOCAB_INTERNAL
#include "runtime/vocab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPM_SPACE "\xe2\x96\x81" /* U+2581, SentencePiece's stand-in for ' ' */
#define SPM_SPACE_LEN 3

/* A run of the escaped text; merged-away symbols keep n == 0. */
typedef struct sym {
    int32_t prev, next;
    uint32_t off, n;
} sym;

typedef struct spm_state {
    const moe_vocab *v;
    const char *text;
    sym *syms;
    moe_bigram_heap q;
} spm_state;

/* Queues the pair (left, right) if their joined text is a token; adjacent
 * symbols are contiguous in the text, so no copy is needed. */
static void try_pair(spm_state *st, int32_t left, int32_t right) {
    if (left < 0 || right < 0)
        return;
    const sym *l = &st->syms[left], *r = &st->syms[right];
    uint32_t size = l->n + r->n;
    int32_t id = moe_vocab_find(st->v, st->text + l->off, size);
    if (id < 0)
        return;
    moe_bigram_push(&st->q, (moe_bigram){st->v->score[id], left, right, size});
}

/* Byte fallback: <0xXX>, else the one-byte token, else <unk>. */
static int32_t byte_token(const moe_vocab *v, unsigned char c) {
    char name[8];
    snprintf(name, sizeof name, "<0x%02X>", c);
    int32_t id = moe_vocab_find(v, name, 6);
    if (id < 0)
        id = moe_vocab_find(v, (const char *)&c, 1);
    return id >= 0 ? id : v->unk;
}

/* UTF-8 sequence length from the first byte alone, as llama.cpp does (no
 * validation: stray continuation bytes are one-byte symbols). */
static uint32_t utf8_len(unsigned char c) {
    static const uint8_t lens[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lens[c >> 4];
}

/* Spaces become U+2581, with one in front when asked. */
static char *escape(const char *text, size_t len, bool prefix_space, size_t *out_len) {
    size_t spaces = prefix_space;
    for (size_t i = 0; i < len; i++)
        spaces += text[i] == ' ';
    char *s = malloc(len + spaces * (SPM_SPACE_LEN - 1) + 1);
    if (!s)
        return NULL;
    size_t n = 0;
    if (prefix_space) {
        memcpy(s, SPM_SPACE, SPM_SPACE_LEN);
        n = SPM_SPACE_LEN;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(s + n, SPM_SPACE, SPM_SPACE_LEN);
            n += SPM_SPACE_LEN;
        } else {
            s[n++] = text[i];
        }
    }
    *out_len = n;
    return s;
}

static void emit(const spm_state *st, moe_tokvec *out) {
    for (int32_t i = 0; i != -1; i = st->syms[i].next) {
        const sym *s = &st->syms[i];
        int32_t id = moe_vocab_find(st->v, st->text + s->off, s->n);
        if (id >= 0) {
            moe_tokvec_push(out, id);
            continue;
        }
        /* Merged symbols are always tokens, so only unmerged characters get
         * here: llama.cpp's re-segmentation reduces to bytes. */
        for (uint32_t j = 0; j < s->n; j++) {
            int32_t b = byte_token(st->v, (unsigned char)st->text[s->off + j]);
            if (b >= 0)
                moe_tokvec_push(out, b);
        }
    }
}

void moe_spm_tokenize(const moe_vocab *v, const char *text, size_t len, bool prefix_space,
                      moe_tokvec *out) {
    size_t n;
    char *s = escape(text, len, prefix_space, &n);
    sym *syms = s ? malloc((n + 1) * sizeof *syms) : NULL;
    if (!syms || n == 0 || n >= INT32_MAX) {
        out->failed |= !syms || n >= INT32_MAX;
        free(s);
        free(syms);
        return;
    }
    int32_t count = 0;
    for (uint32_t off = 0; off < n; count++) {
        uint32_t k = utf8_len((unsigned char)s[off]);
        if (k > n - off)
            k = (uint32_t)(n - off);
        syms[count] = (sym){count - 1, off + k == n ? -1 : count + 1, off, k};
        off += k;
    }
    spm_state st = {v, s, syms, {0}};
    for (int32_t i = 1; i < count; i++)
        try_pair(&st, i - 1, i);
    while (st.q.n > 0) {
        moe_bigram b = moe_bigram_pop(&st.q);
        sym *l = &syms[b.left], *r = &syms[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
            continue; /* stale: one side changed since it was queued */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            syms[r->next].prev = b.left;
        try_pair(&st, l->prev, b.left);
        try_pair(&st, b.left, l->next);
    }
    if (st.q.failed)
        out->failed = true;
    else
        emit(&st, out);
    free(st.q.d);
    free(syms);
    free(s);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

size_t moe_spm_piece(const moe_vocab *v, int32_t tok, char *buf) {
    size_t len;
    const char *s = moe_vocab_token_text(v, tok, &len);
    if (v->type[tok] == MOE_TOKEN_BYTE && len == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' &&
        hexval(s[3]) >= 0 && hexval(s[4]) >= 0) {
        if (buf)
            buf[0] = (char)(hexval(s[3]) * 16 + hexval(s[4]));
        return 1;
    }
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        if (len - i >= SPM_SPACE_LEN && memcmp(s + i, SPM_SPACE, SPM_SPACE_LEN) == 0) {
            if (buf)
                buf[n] = ' ';
            n++;
            i += SPM_SPACE_LEN;
        } else {
            if (buf)
                buf[n] = s[i];
            n++;
            i++;
        }
    }
    return n;
}
