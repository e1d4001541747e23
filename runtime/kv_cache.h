/* kv_cache — keys and values of past tokens, per layer, with llama.cpp's cell
 * semantics (position, sequence set, pending shift).
 *
 * Owns: cell bookkeeping (find free cells, remove/shift ranges of a sequence),
 * storage in F32, F16 or Q8_0 (rows rounded exactly as llama.cpp's copy into
 * the cache rounds them), and the K-shift: keys whose position changed are
 * re-rotated by the position delta before the next decode, for every
 * architecture (deepseek2 included, whose rope part sits after the non-rope
 * part of each head), sequence copy/keep/divide (cells are shared between
 * sequences, never copied), and defragmentation: holes are found from the
 * front and filled with cells taken from the end, so no move overlaps another
 * (a context shift that frees the oldest cells moves only as many cells as it
 * freed, not the whole cache). Does not own: attention arithmetic
 * (forward.c), or when shifts and defragmentation run (context.c).
 */
#ifndef MOE_RUNTIME_KV_CACHE_H
#define MOE_RUNTIME_KV_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/model.h"

typedef struct moe_kv_cell {
    int32_t pos;    /* -1: empty */
    int32_t delta;  /* pending shift */
    uint64_t seqs;  /* bit s: holds sequence s */
} moe_kv_cell;

/* One block move of defragmentation: len cells from src to dst. */
typedef struct moe_kv_move {
    int32_t src, dst, len;
} moe_kv_move;

/* Where the K (or V) rows of a layer lie. A cell's row is n_parts parts of
 * part_values values (part_bytes bytes each); part p of cell c starts at
 * p * part_stride + c * cell_stride bytes into the layer's memory.
 * - Head-major, one part per KV head (the cache's layout wherever a KV head's
 *   values are whole blocks of the cache type, and there are several KV
 *   heads): a KV head's slices of all cells follow each other. Decoding one
 *   token, each thread attends its own KV heads, and reads their slices as
 *   one linear stream: here a 256-byte slice of every 1 KB row read at
 *   11 GB/s, a linear stream at 28-31 GB/s (one thread).
 * - Cell-major, one part (the whole row): rows follow each other, as
 *   llama.cpp lays them out (one KV head, or absorbed MLA's shared row).
 * Which one is the cache's business: everything outside kv_cache.c reaches
 * the rows through moe_kv_at / moe_kv_row_read / moe_kv_row_write, and the
 * state files hold whole rows in cell order either way. */
typedef struct moe_kv_layout {
    int32_t n_parts;
    int64_t part_values;
    uint64_t part_bytes, part_stride, cell_stride;
} moe_kv_layout;

typedef struct moe_kv_cache {
    int32_t size;
    moe_kv_cell *cells;
    int32_t used;
    bool has_shift;
    moe_type type_k, type_v;
    int64_t row_k, row_v;        /* values per cell per layer (all heads) */
    uint64_t bytes_k, bytes_v;   /* bytes of one cell's whole row */
    moe_kv_layout lay_k, lay_v;
    bool v_in_k;                 /* absorbed MLA: V is the first row_v values of each K
                                  * row (v[l] aliases k[l], type_v = type_k) */
    int64_t n_layer;
    uint8_t **k, **v;            /* [layer] -> its size rows (laid out as lay_k, lay_v) */
    float *shift_row;            /* one K row of floats for the K-shift */
    moe_kv_move *moves;          /* [size] the last defragmentation's moves */
    int32_t n_moves;
} moe_kv_cache;

/* Allocates the cache for model (n_cells >= 1). Types: F32, F16, Q8_0 (rows
 * must then be multiples of 32). */
moe_status moe_kv_init(moe_kv_cache *kv, const moe_model *model, int32_t n_cells, moe_type tk,
                       moe_type tv, moe_err *err);
void moe_kv_free(moe_kv_cache *kv);
/* Bytes one cell takes in one layer (K and V rows) with types tk / tv, as
 * moe_kv_init lays them out; 0 for a type the cache does not take. */
uint64_t moe_kv_cell_bytes(const moe_hparams *hp, moe_type tk, moe_type tv);

/* Chooses free cells for n tokens (cells[i] receives token i) and claims them
 * with their positions and sequences. Fails (nothing claimed) when full. */
moe_status moe_kv_claim(moe_kv_cache *kv, int32_t n, const int32_t *pos, const int32_t *seq,
                        int32_t *cells, moe_err *err);

void moe_kv_clear_all(moe_kv_cache *kv);
void moe_kv_remove(moe_kv_cache *kv, int32_t seq, int32_t p0, int32_t p1);
void moe_kv_shift(moe_kv_cache *kv, int32_t seq, int32_t p0, int32_t p1, int32_t delta);
int32_t moe_kv_pos_max(const moe_kv_cache *kv, int32_t seq);
/* Smallest position stored for seq (seq < 0: any), or -1. */
int32_t moe_kv_pos_min(const moe_kv_cache *kv, int32_t seq);

/* Adds dst to the sequence set of every cell of src with p0 <= pos < p1 (p1 <
 * 0: to the end). The cells are shared, not copied. src == dst: nothing. */
void moe_kv_copy(moe_kv_cache *kv, int32_t src, int32_t dst, int32_t p0, int32_t p1);
/* Frees every cell that does not hold seq; the others then hold only seq. */
void moe_kv_keep(moe_kv_cache *kv, int32_t seq);
/* Integer-divides the positions [p0, p1) of seq by d (> 1; 1 or less: no
 * change); keys are re-rotated by the difference at the next apply_shift. */
void moe_kv_divide(moe_kv_cache *kv, int32_t seq, int32_t p0, int32_t p1, int32_t d);

/* The cells holding sequence seq, in position order (equal positions in cell
 * order), into out (room for kv->size; key: scratch of kv->size); returns
 * their count. Attention walks a sequence's cells in this order, so where the
 * cells lie (after a defrag, between other sequences' cells) changes no bit of
 * the result. */
int32_t moe_kv_seq_cells(const moe_kv_cache *kv, int32_t seq, int32_t *out, uint64_t *key);
/* The first cell past the last used one (0 when empty). */
int32_t moe_kv_used_end(const moe_kv_cache *kv);
/* llama.cpp's fragmentation of the cells attended over: 1 - (used +
 * padding) / n_kv, where n_kv is used_end rounded up to padding (at most
 * size); 0 when nothing is used. */
float moe_kv_fragmentation(const moe_kv_cache *kv, int32_t padding);

/* Compacts the used cells into cells 0..used-1: each hole (from the front) is
 * filled, in order, with the last not yet moved used cells. Every source cell
 * lies at or past `used` and every destination below it, so no move overlaps
 * another and each cell moves at most once. Moves metadata (position,
 * sequences, pending delta) with the K/V bytes of every layer (any cache
 * type: rows are copied, not re-encoded). Records the block moves in
 * kv->moves / kv->n_moves and returns how many cells moved. Allocates
 * nothing. */
int32_t moe_kv_compact(moe_kv_cache *kv);

/* Applies pending shifts: rotates the stored keys of shifted cells by their
 * deltas (model's RoPE), then clears the deltas. */
void moe_kv_apply_shift(moe_kv_cache *kv, const moe_model *model);

/* The address of value i of a cell's K row (V row when v) in layer: values
 * [i, i + n) read from there lie in one part when i and n do (a KV head's
 * slice: i = g * head size, n = head size). The same value of the next cell
 * lies layout(kv, v)->cell_stride bytes further. */
uint8_t *moe_kv_at(const moe_kv_cache *kv, bool v, int64_t layer, int32_t cell, int64_t i);
static inline const moe_kv_layout *moe_kv_layout_of(const moe_kv_cache *kv, bool v) {
    return v ? &kv->lay_v : &kv->lay_k;
}
/* A cell's whole K (V when v) row as bytes of the cache type, in value order
 * (bytes_k / bytes_v of them): gathered from its parts, or scattered to them. */
void moe_kv_row_read(const moe_kv_cache *kv, bool v, int64_t layer, int32_t cell, uint8_t *dst);
void moe_kv_row_write(moe_kv_cache *kv, bool v, int64_t layer, int32_t cell, const uint8_t *src);

/* Row access in f32: store rounds to the cache type; load dequantizes. */
void moe_kv_store(moe_kv_cache *kv, int64_t layer, int32_t cell, const float *k, const float *v);
void moe_kv_load_k(const moe_kv_cache *kv, int64_t layer, int32_t cell, float *out);

#endif
