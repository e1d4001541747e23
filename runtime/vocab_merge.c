/* vocab_merge.c — the containers both tokenizers' merge loops use (see
 * vocab_merge.h). */
#include "runtime/vocab_merge.h"

#include <stdlib.h>
#include <string.h>

#include "formats/base/checked.h"

uint64_t moe_vocab_hash(const void *p, size_t n, uint64_t h) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

moe_status moe_vocab_map_init(moe_vocab_map *m, size_t n_keys, moe_err *err) {
    size_t cap = 16;
    while (cap < 2 * n_keys)
        cap *= 2;
    MOE_FAIL_IF(cap > ((size_t)1 << 31), err, MOE_ERR_FORMAT, "too many tokenizer entries (%zu)",
                n_keys);
    m->slot = malloc(cap * sizeof *m->slot);
    MOE_FAIL_IF(!m->slot, err, MOE_ERR_NOMEM, "out of memory for the tokenizer table");
    memset(m->slot, 0xff, cap * sizeof *m->slot); /* every slot -1 */
    m->mask = (uint32_t)(cap - 1);
    return MOE_OK;
}

void moe_vocab_map_free(moe_vocab_map *m) {
    free(m->slot);
    m->slot = NULL;
    m->mask = 0;
}

void moe_tokvec_push(moe_tokvec *tv, int32_t tok) {
    if (tv->failed)
        return;
    int32_t *d = moe_grow(tv->d, &tv->cap, tv->n + 1, 64, sizeof *d);
    if (!d) {
        tv->failed = true;
        return;
    }
    tv->d = d;
    tv->d[tv->n++] = tok;
}

static bool before(const moe_bigram *a, const moe_bigram *b) {
    return a->prio > b->prio || (a->prio == b->prio && a->left < b->left);
}

void moe_bigram_push(moe_bigram_heap *h, moe_bigram b) {
    moe_bigram *d = moe_grow(h->d, &h->cap, h->n + 1, 64, sizeof *d);
    if (!d) {
        h->failed = true;
        return;
    }
    h->d = d;
    size_t i = h->n++;
    while (i > 0 && before(&b, &h->d[(i - 1) / 2])) {
        h->d[i] = h->d[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->d[i] = b;
}

moe_bigram moe_bigram_pop(moe_bigram_heap *h) {
    moe_bigram top = h->d[0], last = h->d[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && before(&h->d[c + 1], &h->d[c]))
            c++;
        if (!before(&h->d[c], &last))
            break;
        h->d[i] = h->d[c];
        i = c;
    }
    if (h->n)
        h->d[i] = last;
    return top;
}
