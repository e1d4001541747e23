#include "runtime/kv_cache.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "formats/quant/quant.h"
#include "runtime/cpu_ops.h"

static uint64_t row_bytes(moe_type t, int64_t n) {
    uint64_t b = 0;
    moe_type_row_size(t, n, &b, NULL);
    return b;
}

uint64_t moe_kv_cell_bytes(const moe_hparams *hp, moe_type tk, moe_type tv) {
    const bool ok_k = tk == MOE_TYPE_F32 || tk == MOE_TYPE_F16 || tk == MOE_TYPE_Q8_0;
    const bool ok_v = tv == MOE_TYPE_F32 || tv == MOE_TYPE_F16 || tv == MOE_TYPE_Q8_0;
    if (!ok_k || !ok_v)
        return 0;
    return row_bytes(tk, hp->n_head_kv * hp->head_dim_k) +
           row_bytes(tv, hp->n_head_kv * hp->head_dim_v);
}

/* A layer's rows, zeroed. From 2 MB on, in transparent huge pages where the
 * kernel gives them: with rows per cell (before the head-major layout), one
 * token's attention read a 256-byte slice of every 1 KB row, a new 4 KB page
 * every four rows, and the page walks made one token at depth 2600 wait
 * (perf: the K loads, even with software prefetch); a KV head's streams
 * still cross a page every 16 cells. */
static void *layer_rows(size_t bytes) {
    enum { HUGE_PAGE = 2u << 20, PAGE = 4096 };
    void *p;
    if (bytes < HUGE_PAGE) {
        p = calloc(1, bytes);
    } else {
        const size_t size = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
        p = aligned_alloc(HUGE_PAGE, size);
#ifdef MADV_HUGEPAGE
        if (p) /* a hint: without it the rows work the same */
            (void)madvise(p, size, MADV_HUGEPAGE);
#endif
        if (p)
            memset(p, 0, bytes);
    }
    /* Every page mapped now, not at a token's first store into it: calloc's
     * fresh pages (and a memset the compiler may drop after an allocation)
     * are mapped on first write, and a page fault in the token loop took
     * ~30 us here, one every 4 cells of 1 KB rows (a 512-cell context: 8
     * per token, 2.5% of its time). A volatile store cannot be dropped. */
    volatile uint8_t *b = p;
    for (size_t i = 0; b && i < bytes; i += PAGE)
        b[i] = 0;
    if (b && bytes) /* calloc's p sits past a page start: its last page too */
        b[bytes - 1] = 0;
    return p;
}

/* n_parts parts of part_values values per cell (kv_cache.h): a part's
 * slices of consecutive cells are adjacent, the parts n_cells slices apart. */
static moe_kv_layout layout(moe_type t, int64_t n_parts, int64_t part_values, int32_t n_cells) {
    const uint64_t part = row_bytes(t, part_values);
    return (moe_kv_layout){.n_parts = (int32_t)n_parts, .part_values = part_values,
                           .part_bytes = part, .part_stride = n_parts > 1 ? part * (uint64_t)n_cells : 0,
                           .cell_stride = part};
}

moe_status moe_kv_init(moe_kv_cache *kv, const moe_model *m, int32_t n_cells, moe_type tk,
                       moe_type tv, moe_err *err) {
    memset(kv, 0, sizeof *kv);
    const moe_hparams *hp = &m->hp;
    MOE_FAIL_IF(n_cells < 1, err, MOE_ERR_USAGE, "context size %d must be at least 1", n_cells);
    const moe_type ok[] = {MOE_TYPE_F32, MOE_TYPE_F16, MOE_TYPE_Q8_0};
    bool good_k = false, good_v = false;
    for (int i = 0; i < 3; i++)
        good_k |= tk == ok[i], good_v |= tv == ok[i];
    MOE_FAIL_IF(!good_k || !good_v, err, MOE_ERR_USAGE,
                "KV cache types must be f32, f16 or q8_0 (got %s/%s)", moe_type_name(tk),
                moe_type_name(tv));
    /* absorbed MLA: the values are the latent at the head of each key row,
     * read there as llama.cpp does (so in the key's type) */
    kv->v_in_k = m->attn.absorbed;
    if (kv->v_in_k)
        tv = tk;
    kv->row_k = m->attn.n_head_kv * m->attn.dk;
    kv->row_v = m->attn.n_head_kv * m->attn.dv;
    MOE_FAIL_IF(kv->row_k % moe_type_get(tk)->block_size || kv->row_v % moe_type_get(tv)->block_size,
                err, MOE_ERR_USAGE, "KV rows of %lld/%lld values do not fit %s/%s blocks",
                (long long)kv->row_k, (long long)kv->row_v, moe_type_name(tk), moe_type_name(tv));
    kv->size = n_cells;
    kv->type_k = tk;
    kv->type_v = tv;
    kv->bytes_k = row_bytes(tk, kv->row_k);
    kv->bytes_v = kv->v_in_k ? kv->bytes_k : row_bytes(tv, kv->row_v);
    const int64_t Hkv = m->attn.n_head_kv;
    const bool head_major = !kv->v_in_k && Hkv > 1 &&
                            m->attn.dk % moe_type_get(tk)->block_size == 0 &&
                            m->attn.dv % moe_type_get(tv)->block_size == 0;
    kv->lay_k = layout(tk, head_major ? Hkv : 1, kv->row_k / (head_major ? Hkv : 1), n_cells);
    kv->lay_v = kv->v_in_k ? kv->lay_k
                           : layout(tv, head_major ? Hkv : 1, kv->row_v / (head_major ? Hkv : 1), n_cells);
    kv->n_layer = hp->n_layer;
    kv->cells = calloc((size_t)n_cells, sizeof *kv->cells);
    kv->k = calloc((size_t)hp->n_layer, sizeof *kv->k);
    kv->v = calloc((size_t)hp->n_layer, sizeof *kv->v);
    MOE_FAIL_IF(!kv->cells || !kv->k || !kv->v, err, MOE_ERR_NOMEM, "out of memory");
    for (int64_t l = 0; l < hp->n_layer; l++) {
        kv->k[l] = layer_rows((size_t)n_cells * kv->bytes_k);
        kv->v[l] = kv->v_in_k ? kv->k[l] : layer_rows((size_t)n_cells * kv->bytes_v);
        MOE_FAIL_IF(!kv->k[l] || !kv->v[l], err, MOE_ERR_NOMEM,
                    "out of memory for a %d-cell KV cache", n_cells);
    }
    /* the K-shift re-rotates one row at a time: its buffer exists from the start */
    kv->shift_row = malloc((size_t)kv->row_k * sizeof *kv->shift_row);
    /* so is the defragmentation's move list (at most one move per cell) */
    kv->moves = malloc((size_t)n_cells * sizeof *kv->moves);
    MOE_FAIL_IF(!kv->shift_row || !kv->moves, err, MOE_ERR_NOMEM, "out of memory");
    moe_kv_clear_all(kv);
    return MOE_OK;
}

void moe_kv_free(moe_kv_cache *kv) {
    if (!kv)
        return;
    for (int64_t l = 0; l < kv->n_layer; l++) {
        if (kv->k)
            free(kv->k[l]);
        if (kv->v && !kv->v_in_k)
            free(kv->v[l]);
    }
    free(kv->k);
    free(kv->v);
    free(kv->cells);
    free(kv->shift_row);
    free(kv->moves);
    memset(kv, 0, sizeof *kv);
}

void moe_kv_clear_all(moe_kv_cache *kv) {
    for (int32_t i = 0; i < kv->size; i++)
        kv->cells[i] = (moe_kv_cell){.pos = -1};
    kv->used = 0;
    kv->has_shift = false;
}

moe_status moe_kv_claim(moe_kv_cache *kv, int32_t n, const int32_t *pos, const int32_t *seq,
                        int32_t *cells, moe_err *err) {
    MOE_FAIL_IF(kv->size - kv->used < n, err, MOE_ERR_USAGE,
                "the KV cache is full: %d of %d cells used, %d more needed (use a larger -c)",
                kv->used, kv->size, n);
    int32_t c = 0;
    for (int32_t i = 0; i < n; i++) {
        while (kv->cells[c].pos >= 0)
            c++;
        cells[i] = c;
        kv->cells[c] = (moe_kv_cell){.pos = pos[i], .seqs = 1ull << seq[i]};
        c++;
    }
    kv->used += n;
    return MOE_OK;
}

static bool in_range(const moe_kv_cell *cell, int32_t seq, int32_t p0, int32_t p1) {
    if (cell->pos < 0 || cell->pos < p0 || (p1 >= 0 && cell->pos >= p1))
        return false;
    return seq < 0 || (cell->seqs >> seq & 1);
}

void moe_kv_remove(moe_kv_cache *kv, int32_t seq, int32_t p0, int32_t p1) {
    if (p0 < 0)
        p0 = 0;
    for (int32_t i = 0; i < kv->size; i++) {
        moe_kv_cell *cell = &kv->cells[i];
        if (!in_range(cell, seq, p0, p1))
            continue;
        cell->seqs = seq < 0 ? 0 : cell->seqs & ~(1ull << seq);
        if (!cell->seqs) {
            *cell = (moe_kv_cell){.pos = -1};
            kv->used--;
        }
    }
}

void moe_kv_shift(moe_kv_cache *kv, int32_t seq, int32_t p0, int32_t p1, int32_t delta) {
    if (p0 < 0)
        p0 = 0;
    if (p0 == p1 || delta == 0)
        return;
    for (int32_t i = 0; i < kv->size; i++) {
        moe_kv_cell *cell = &kv->cells[i];
        if (!in_range(cell, seq, p0, p1))
            continue;
        cell->pos += delta;
        cell->delta += delta;
        kv->has_shift = true;
        if (cell->pos < 0) { /* shifted out of the window: freed, as llama.cpp does */
            *cell = (moe_kv_cell){.pos = -1};
            kv->used--;
        }
    }
}

int32_t moe_kv_pos_max(const moe_kv_cache *kv, int32_t seq) {
    int32_t max = -1;
    for (int32_t i = 0; i < kv->size; i++)
        if (kv->cells[i].pos > max && (seq < 0 || (kv->cells[i].seqs >> seq & 1)))
            max = kv->cells[i].pos;
    return max;
}

int32_t moe_kv_pos_min(const moe_kv_cache *kv, int32_t seq) {
    int32_t min = -1;
    for (int32_t i = 0; i < kv->size; i++) {
        const moe_kv_cell *c = &kv->cells[i];
        if (c->pos >= 0 && (min < 0 || c->pos < min) && (seq < 0 || (c->seqs >> seq & 1)))
            min = c->pos;
    }
    return min;
}

void moe_kv_copy(moe_kv_cache *kv, int32_t src, int32_t dst, int32_t p0, int32_t p1) {
    if (src == dst || src < 0 || dst < 0)
        return;
    if (p0 < 0)
        p0 = 0;
    for (int32_t i = 0; i < kv->size; i++)
        if (in_range(&kv->cells[i], src, p0, p1))
            kv->cells[i].seqs |= 1ull << dst;
}

void moe_kv_keep(moe_kv_cache *kv, int32_t seq) {
    for (int32_t i = 0; i < kv->size; i++) {
        moe_kv_cell *cell = &kv->cells[i];
        if (cell->pos < 0)
            continue;
        if (seq >= 0 && (cell->seqs >> seq & 1)) {
            cell->seqs = 1ull << seq;
        } else {
            *cell = (moe_kv_cell){.pos = -1};
            kv->used--;
        }
    }
}

void moe_kv_divide(moe_kv_cache *kv, int32_t seq, int32_t p0, int32_t p1, int32_t d) {
    if (d <= 1)
        return;
    if (p0 < 0)
        p0 = 0;
    for (int32_t i = 0; i < kv->size; i++) {
        moe_kv_cell *cell = &kv->cells[i];
        if (!in_range(cell, seq, p0, p1))
            continue;
        int32_t old = cell->pos;
        cell->pos /= d;
        cell->delta += cell->pos - old;
        kv->has_shift |= cell->pos != old;
    }
}

static int by_key(const void *a, const void *b) {
    const uint64_t ka = *(const uint64_t *)a, kb = *(const uint64_t *)b;
    return (ka > kb) - (ka < kb);
}

int32_t moe_kv_seq_cells(const moe_kv_cache *kv, int32_t seq, int32_t *out, uint64_t *key) {
    int32_t n = 0;
    bool sorted = true;
    for (int32_t c = 0; c < kv->size; c++) {
        const moe_kv_cell *cell = &kv->cells[c];
        if (cell->pos < 0 || !(cell->seqs >> seq & 1))
            continue;
        if (n > 0 && kv->cells[out[n - 1]].pos > cell->pos)
            sorted = false;
        out[n++] = c;
    }
    if (sorted)
        return n;
    /* after shifts, defrags or seq_cp: sort (position, cell) keys */
    for (int32_t i = 0; i < n; i++)
        key[i] = (uint64_t)(uint32_t)kv->cells[out[i]].pos << 32 | (uint32_t)out[i];
    qsort(key, (size_t)n, sizeof *key, by_key);
    for (int32_t i = 0; i < n; i++)
        out[i] = (int32_t)(key[i] & 0xffffffffu);
    return n;
}

int32_t moe_kv_used_end(const moe_kv_cache *kv) {
    int32_t end = 0;
    for (int32_t c = 0; c < kv->size; c++)
        if (kv->cells[c].pos >= 0)
            end = c + 1;
    return end;
}

float moe_kv_fragmentation(const moe_kv_cache *kv, int32_t padding) {
    int32_t end = moe_kv_used_end(kv);
    if (end == 0)
        return 0.0f;
    int64_t n_kv = padding > 1 ? ((int64_t)end + padding - 1) / padding * padding : end;
    if (n_kv > kv->size)
        n_kv = kv->size;
    float f = 1.0f - (float)(kv->used + padding) / (float)n_kv;
    return f > 0.0f ? f : 0.0f;
}

uint8_t *moe_kv_at(const moe_kv_cache *kv, bool v, int64_t layer, int32_t cell, int64_t i) {
    const moe_kv_layout *lay = moe_kv_layout_of(kv, v);
    const int64_t p = i / lay->part_values;
    return (v ? kv->v : kv->k)[layer] + (uint64_t)p * lay->part_stride +
           (uint64_t)cell * lay->cell_stride +
           row_bytes(v ? kv->type_v : kv->type_k, i - p * lay->part_values);
}

void moe_kv_row_read(const moe_kv_cache *kv, bool v, int64_t layer, int32_t cell, uint8_t *dst) {
    const moe_kv_layout *lay = moe_kv_layout_of(kv, v);
    const uint8_t *src = (v ? kv->v : kv->k)[layer] + (uint64_t)cell * lay->cell_stride;
    for (int32_t p = 0; p < lay->n_parts; p++)
        memcpy(dst + p * lay->part_bytes, src + p * lay->part_stride, lay->part_bytes);
}

void moe_kv_row_write(moe_kv_cache *kv, bool v, int64_t layer, int32_t cell, const uint8_t *src) {
    const moe_kv_layout *lay = moe_kv_layout_of(kv, v);
    uint8_t *dst = (v ? kv->v : kv->k)[layer] + (uint64_t)cell * lay->cell_stride;
    for (int32_t p = 0; p < lay->n_parts; p++)
        memcpy(dst + p * lay->part_stride, src + p * lay->part_bytes, lay->part_bytes);
}

/* Copies len cells' K/V rows of every layer from src to dst (no overlap): a
 * part's cells lie cell_stride apart, so each part moves as one run. */
static void move_rows(moe_kv_cache *kv, int32_t src, int32_t dst, int32_t len) {
    for (int64_t l = 0; l < kv->n_layer; l++) {
        for (int v = 0; v < (kv->v_in_k ? 1 : 2); v++) {
            const moe_kv_layout *lay = moe_kv_layout_of(kv, v);
            uint8_t *base = (v ? kv->v : kv->k)[l];
            for (int32_t p = 0; p < lay->n_parts; p++)
                memcpy(base + p * lay->part_stride + (uint64_t)dst * lay->cell_stride,
                       base + p * lay->part_stride + (uint64_t)src * lay->cell_stride,
                       (size_t)len * lay->cell_stride);
        }
    }
}

/* Records one cell moving src -> dst, extending the last block when both
 * continue it. */
static void note_move(moe_kv_cache *kv, int32_t src, int32_t dst) {
    moe_kv_move *last = kv->n_moves ? &kv->moves[kv->n_moves - 1] : NULL;
    if (last && last->src + last->len == src && last->dst + last->len == dst)
        last->len++;
    else
        kv->moves[kv->n_moves++] = (moe_kv_move){.src = src, .dst = dst, .len = 1};
}

int32_t moe_kv_compact(moe_kv_cache *kv) {
    const int32_t n_used = kv->used;
    int32_t end = kv->size; /* cells at or past end have been taken (or were empty) */
    int32_t moved = 0;
    kv->n_moves = 0;
    for (int32_t i0 = 0; i0 < n_used;) {
        if (kv->cells[i0].pos >= 0) {
            i0++;
            continue;
        }
        int32_t nh = 1; /* the hole's size */
        while (i0 + nh < n_used && kv->cells[i0 + nh].pos < 0)
            nh++;
        /* the last nh used cells below end: as many used cells lie at or
         * past n_used as there are holes below it, so `is` stays >= n_used */
        int32_t is = end, nf = 0;
        while (nf < nh && is > n_used) {
            is--;
            nf += kv->cells[is].pos >= 0;
        }
        if (nf < nh)
            break; /* `used` disagrees with the cells: a bug, but never corrupt data */
        for (int32_t s = is, d = i0; s < end; s++) {
            if (kv->cells[s].pos < 0)
                continue;
            note_move(kv, s, d);
            kv->cells[d++] = kv->cells[s];
            kv->cells[s] = (moe_kv_cell){.pos = -1};
            moved++;
        }
        end = is;
        i0 += nh;
    }
    for (int32_t m = 0; m < kv->n_moves; m++)
        move_rows(kv, kv->moves[m].src, kv->moves[m].dst, kv->moves[m].len);
    return moved;
}

static void to_cache(moe_type t, const float *src, uint8_t *dst, int64_t n) {
    moe_quantize_rows(t, src, dst, 1, n, NULL, NULL);
}

/* A cell's row of floats into the cache, part by part (a part is whole
 * blocks, so the bytes are those of the whole row rounded at once). */
static void store_row(moe_kv_cache *kv, bool v, int64_t layer, int32_t cell, const float *src) {
    const moe_kv_layout *lay = moe_kv_layout_of(kv, v);
    for (int32_t p = 0; p < lay->n_parts; p++)
        to_cache(v ? kv->type_v : kv->type_k, src + p * lay->part_values,
                 moe_kv_at(kv, v, layer, cell, p * lay->part_values), lay->part_values);
}

void moe_kv_store(moe_kv_cache *kv, int64_t layer, int32_t cell, const float *k, const float *v) {
    store_row(kv, false, layer, cell, k);
    if (!kv->v_in_k)
        store_row(kv, true, layer, cell, v);
}

void moe_kv_load_k(const moe_kv_cache *kv, int64_t layer, int32_t cell, float *out) {
    const moe_kv_layout *lay = &kv->lay_k;
    for (int32_t p = 0; p < lay->n_parts; p++)
        moe_type_get(kv->type_k)->to_f32(moe_kv_at(kv, false, layer, cell, p * lay->part_values),
                                         out + p * lay->part_values, lay->part_values, 1);
}

void moe_kv_apply_shift(moe_kv_cache *kv, const moe_model *m) {
    if (!kv->has_shift)
        return;
    const moe_hparams *hp = &m->hp;
    /* deepseek2 keys are [nope | rope] per head ([latent | rope] absorbed):
     * only the rope tail turns */
    const int64_t dk = m->attn.dk, offset = m->arch->mla ? dk - hp->n_rot : 0;
    float *row = kv->shift_row;
    for (int32_t c = 0; c < kv->size; c++) {
        if (kv->cells[c].pos < 0 || kv->cells[c].delta == 0)
            continue;
        for (int64_t l = 0; l < hp->n_layer; l++) {
            moe_kv_load_k(kv, l, c, row);
            moe_cpu_rope(row + offset, m->attn.n_head_kv, dk, kv->cells[c].delta, &m->rope);
            store_row(kv, false, l, c, row);
        }
    }
    for (int32_t c = 0; c < kv->size; c++)
        kv->cells[c].delta = 0;
    kv->has_shift = false;
}
