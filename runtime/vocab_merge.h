/* vocab_merge — the containers both tokenizers' merge loops share: a string
 * hash and open-addressing id table, a growable token list, and the heap of
 * candidate merges (SentencePiece by score, BPE by rank).
 *
 * A leaf below vocab.c, vocab_spm.c and vocab_bpe.c: it knows nothing of a
 * vocabulary, so the tokenizers and the loader that calls them share these
 * pieces without calling back into each other. Internal to the tokenizer.
 */
#ifndef MOE_RUNTIME_VOCAB_MERGE_H
#define MOE_RUNTIME_VOCAB_MERGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/base/status.h"

/* FNV-1a over p[0..n), continuing from h (chain calls to hash pieces). */
uint64_t moe_vocab_hash(const void *p, size_t n, uint64_t h);
#define MOE_VOCAB_HASH_SEED 0xcbf29ce484222325ull

/* Open-addressing table from byte strings to int32 ids (-1 = empty slot).
 * Keys live elsewhere: the owner compares an id's bytes itself. */
typedef struct moe_vocab_map {
    uint32_t mask;
    int32_t *slot;
} moe_vocab_map;

/* Sizes m for n_keys keys (load factor <= 1/2). */
moe_status moe_vocab_map_init(moe_vocab_map *m, size_t n_keys, moe_err *err);
void moe_vocab_map_free(moe_vocab_map *m);

/* A growable token list that remembers running out of memory. */
typedef struct moe_tokvec {
    int32_t *d;
    size_t n, cap;
    bool failed;
} moe_tokvec;

void moe_tokvec_push(moe_tokvec *tv, int32_t tok);

/* A pair of adjacent symbols that may merge; the heap pops the highest
 * priority first, ties going to the leftmost pair (both tokenizers). */
typedef struct moe_bigram {
    double prio; /* SPM: the merged token's score; BPE: minus the merge rank */
    int32_t left, right;
    uint32_t size; /* bytes of left + right when queued (stale check) */
} moe_bigram;

typedef struct moe_bigram_heap {
    moe_bigram *d;
    size_t n, cap;
    bool failed; /* a push ran out of memory */
} moe_bigram_heap;

void moe_bigram_push(moe_bigram_heap *h, moe_bigram b);
moe_bigram moe_bigram_pop(moe_bigram_heap *h); /* h->n > 0 */

#endif
