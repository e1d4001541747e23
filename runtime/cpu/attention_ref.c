/* Reference attention: llama.cpp's non-flash attention over the KV cache in
 * the lane order of its x86 AVX-512 build (bit-identical logits on the
 * conformance models). Shape alphabet: H/Hkv heads, dk/dv head sizes. */
#include <math.h>
#include <string.h>

#include "formats/quant/fp16.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/cpu/kernels.h"
#include "runtime/cpu_ops.h"

static int64_t even(int64_t n) { return (n + 1) & ~(int64_t)1; }

int64_t moe_attention_workspace(const moe_model *m, int64_t row_k, int64_t row_v,
                                int32_t n_cells) {
    /* scores for every head and cell, one K row, one V row, the rounded q,
     * 64 lanes per output value plus room for a double tail per value */
    const int64_t H = m->hp.n_head;
    int64_t qd = H * m->attn.dk, lanes = (64 + 2) * H * m->attn.dv;
    return even(H * n_cells) + even(row_k) + even(row_v) + even(qd) + even(lanes);
}

/* The cells one token attends: the first n_vis entries of its sequence's
 * position-ordered list (those at or before its position), placed at slots
 * 0..n_vis) of a row of n_slots, llama.cpp's mask width for that sequence
 * alone (its cell count rounded up to the cache padding: 32, or 256 for
 * absorbed MLA). With one sequence and no holes the
 * slots are the cell indices, so the order of every sum is llama.cpp's. */
typedef struct attn_cells {
    const int32_t *cell; /* slot -> cache cell */
    int32_t n_vis, n_slots;
} attn_cells;

static attn_cells token_cells(const moe_attn_step *st, int32_t t, int32_t pad) {
    const moe_kv_cache *kv = st->kv;
    const int32_t *list = st->seq_cells[t], n = st->n_seq_cells[t], pos = st->pos[t];
    int32_t n_vis = 0;
    while (n_vis < n && kv->cells[list[n_vis]].pos <= pos)
        n_vis++;
    const int32_t slots = (n + pad - 1) / pad * pad;
    return (attn_cells){.cell = list, .n_vis = n_vis,
                        .n_slots = slots < kv->size ? slots : kv->size};
}

/* Values [i0, i0 + n) of a cell's K (v: V) row in f32, lying in one part of
 * the cache's layout (a KV head's slice, or the whole row of a one-part
 * layout); F16 through the level's exact conversion. For a block type i0 and
 * n are multiples of its block (checked by the caller). */
static void load_part(const moe_kv_cache *kv, bool v, int64_t layer, int32_t cell, int64_t i0,
                      int64_t n, float *out) {
    const moe_type type = v ? kv->type_v : kv->type_k;
    const uint8_t *src = moe_kv_at(kv, v, layer, cell, i0);
    if (type == MOE_TYPE_F16)
        moe_cpu_float_ops_active()->f16_row(src, out, n);
    else if (type == MOE_TYPE_F32)
        memcpy(out, src, (size_t)n * sizeof *out);
    else
        moe_type_get(type)->to_f32(src, out, n, 1);
}

/* A cell's whole K (v: V) row in f32, part by part. */
static void load_row(const moe_kv_cache *kv, bool v, int64_t layer, int32_t cell, float *out) {
    const moe_kv_layout *lay = moe_kv_layout_of(kv, v);
    for (int32_t p = 0; p < lay->n_parts; p++)
        load_part(kv, v, layer, cell, p * lay->part_values, lay->part_values,
                  out + p * lay->part_values);
}

enum { FOLD = 16 }; /* output values whose lanes are folded together */

/* sum[i] for n <= FOLD output values i: their W lanes (lanes[l * nv + i], 0
 * for l >= used) folded as one value's would be (W = 64: the four 16-lane
 * accumulators into one, then moe_reduce16's tree; W = 16: the tree). Every
 * step is an addition across values, lane for lane, so these loops keep each
 * value's order and vectorise. */
static void fold_lanes(const float *lanes, int64_t nv, int used, int W, int64_t n, float *sum) {
    float a[64][FOLD];
    for (int l = 0; l < W; l++) {
        if (l >= used) { /* constant sizes: vector moves, no call */
            memset(a[l], 0, sizeof a[l]);
            continue;
        }
        if (n == FOLD) {
            memcpy(a[l], lanes + (int64_t)l * nv, sizeof a[l]);
            continue;
        }
        for (int64_t i = 0; i < FOLD; i++)
            a[l][i] = i < n ? lanes[(int64_t)l * nv + i] : 0.0f;
    }
    if (W == 64)
        for (int l = 0; l < 16; l++)
            for (int64_t i = 0; i < FOLD; i++) {
                a[l][i] += a[32 + l][i];
                a[16 + l][i] += a[48 + l][i];
                a[l][i] += a[16 + l][i];
            }
    for (int l = 0; l < 8; l++) /* moe_reduce16: halves, quarters, then the two pairs */
        for (int64_t i = 0; i < FOLD; i++)
            a[l][i] += a[l + 8][i];
    for (int l = 0; l < 4; l++)
        for (int64_t i = 0; i < FOLD; i++)
            a[l][i] += a[l + 4][i];
    for (int64_t i = 0; i < FOLD; i++)
        a[0][i] = (a[0][i] + a[2][i]) + (a[1][i] + a[3][i]);
    memcpy(sum, a[0], (size_t)n * sizeof *sum);
}

/* out[h][d] = sum over slots j of p[h][j] * v[cell j][h/group][d], in the
 * lane order of llama.cpp's product (see attend_token): slot j adds into lane
 * j % W of every output value. Heads [h0, h1) only (a thread's share), one KV
 * head's query heads at a time: lanes holds W rows of their nh*dv
 * accumulators (lane l of value i at lanes[l * nh*dv + i]), small enough to
 * stay in cache, and each visible slot's V values of that KV head are loaded
 * once. Only the lanes some slot reaches are cleared and read; the others
 * hold an exact 0. The order of every sum is unchanged by this tiling. */
static void weighted_sum(const moe_model *m, const moe_attn_step *st, const attn_cells *ac,
                         int64_t h0, int64_t h1, const float *scores, float *vrow, float *lanes,
                         float *out, bool batched) {
    const moe_kv_cache *kv = st->kv;
    const moe_cpu_float_ops *fops = moe_cpu_float_ops_active();
    const int64_t H = m->hp.n_head, dv = m->attn.dv, group = H / m->attn.n_head_kv;
    const int32_t n_slots = ac->n_slots;
    const int W = batched ? 16 : 64;                          /* lanes per output */
    const int32_t full = batched ? n_slots : n_slots & ~63; /* VEC sums the rest in double */
    const int32_t in_lanes = ac->n_vis < full ? ac->n_vis : full;
    const int used = in_lanes < W ? in_lanes : W; /* lanes some slot adds into */
    /* a KV head's values lie in one part of the layout (a part is a head or the row) */
    const bool parts = dv % moe_type_get(kv->type_v)->block_size == 0 &&
                       (kv->lay_v.n_parts == 1 || kv->lay_v.part_values == dv);
    const uint64_t stride = kv->lay_v.cell_stride;
    if (batched && kv->type_v == MOE_TYPE_F16 && dv % 8 == 0 && parts) { /* lanes in registers */
        for (int64_t ha = h0; ha < h1;) { /* the heads of one KV head together */
            const int64_t g = ha / group, hb = (g + 1) * group < h1 ? (g + 1) * group : h1;
            fops->wsum_f16(scores + ha * n_slots, n_slots, moe_kv_at(kv, true, st->layer, 0, g * dv), stride,
                           ac->cell, ac->n_vis, dv, out + ha * dv, hb - ha, dv);
            ha = hb;
        }
        return;
    }
    if (!batched && kv->type_v == MOE_TYPE_F16 && dv % 8 == 0 && parts) { /* 64 lanes, the rest in double */
        for (int64_t ha = h0; ha < h1;) { /* the heads of one KV head together */
            const int64_t g = ha / group, hb = (g + 1) * group < h1 ? (g + 1) * group : h1;
            fops->wsum_f16_vec(scores + ha * n_slots, n_slots, moe_kv_at(kv, true, st->layer, 0, g * dv),
                               stride, ac->cell, in_lanes, ac->n_vis, dv, out + ha * dv, hb - ha, dv);
            ha = hb;
        }
        return;
    }
    double tail[1024];
    const bool big = H * dv > 1024;
    double *tl = big ? (double *)(lanes + W * H * dv) : tail;
    for (int64_t ha = h0; ha < h1;) {
        const int64_t g = ha / group, hb = (g + 1) * group < h1 ? (g + 1) * group : h1;
        const int64_t nv = (hb - ha) * dv; /* accumulators of this KV head's heads */
        for (int l = 0; l < used; l++)
            memset(lanes + (int64_t)l * nv, 0, (size_t)nv * sizeof *lanes);
        for (int64_t i = 0; i < nv; i++)
            tl[i] = 0.0;
        for (int32_t j = 0; j < ac->n_vis; j++) { /* hidden slots weigh 0 and add nothing */
            const float *vh = vrow;
            if (parts) {
                load_part(kv, true, st->layer, ac->cell[j], g * dv, dv, vrow);
            } else {
                load_row(kv, true, st->layer, ac->cell[j], vrow);
                vh = vrow + g * dv;
            }
            for (int64_t h = ha; h < hb; h++) {
                const float p = scores[h * n_slots + j];
                const int64_t at = (h - ha) * dv;
                if (j < full) {
                    fops->fma_row(p, vh, lanes + (int64_t)(j % W) * nv + at, dv);
                } else {
                    /* the VEC tail: float products summed in double */
                    for (int64_t d = 0; d < dv; d++)
                        tl[at + d] += (double)(p * vh[d]);
                }
            }
        }
        for (int64_t i0 = 0; i0 < nv; i0 += FOLD) {
            const int64_t n = nv - i0 < FOLD ? nv - i0 : FOLD;
            float sum[FOLD];
            fold_lanes(lanes + i0, nv, used, W, n, sum);
            float *o = out + ha * dv + i0;
            for (int64_t i = 0; i < n; i++)
                o[i] = batched ? sum[i] : (float)((double)sum[i] + tl[i0 + i]);
        }
        ha = hb;
    }
}

/* Causal attention of one token against the cells of its sequence, heads
 * [h0, h1): scores = kq_scale * q·k, softmax, weighted sum of v. llama.cpp
 * rounds q to the K cache's type (F16) for the dot product and the softmax
 * weights to the V cache's type before the weighted sum; so do we. Both
 * products follow llama.cpp's order: GEMM for a batch, VEC for one token;
 * slot j sits in lane j % 16 (GEMM) or j % 64 (VEC). Heads are independent,
 * so any split of them between threads gives the same bits. */
static void attend_token(const moe_model *m, const moe_attn_step *st, int32_t t, int64_t h0,
                         int64_t h1, float *out, float *scores, float *krow, float *vrow,
                         float *qr, float *lanes, bool batched) {
    const moe_kv_cache *kv = st->kv;
    const int64_t H = m->hp.n_head, Hkv = m->attn.n_head_kv, dk = m->attn.dk;
    const int64_t group = H / Hkv;
    const attn_cells ac = token_cells(st, t, m->attn.n_kv_pad);
    const int32_t n_slots = ac.n_slots;
    const bool kf16 = kv->type_k == MOE_TYPE_F16, vf16 = kv->type_v == MOE_TYPE_F16;
    const float *q = st->q + t * H * dk;
    const moe_cpu_float_ops *fops = moe_cpu_float_ops_active();
    memcpy(qr + h0 * dk, q + h0 * dk, (size_t)((h1 - h0) * dk) * sizeof *qr);
    if (kf16)
        fops->round_f16_row(qr + h0 * dk, (h1 - h0) * dk);
    /* the same sums; a KV head's keys in one part of the layout */
    const bool k_in_registers = kf16 && (!batched || dk % 16 == 0) &&
                                (kv->lay_k.n_parts == 1 || kv->lay_k.part_values == dk);
    if (k_in_registers) {
        for (int64_t ha = h0; ha < h1;) { /* the heads of one KV head together */
            const int64_t g = ha / group, hb = (g + 1) * group < h1 ? (g + 1) * group : h1;
            (batched ? fops->scores_f16 : fops->scores_f16_vec)(
                qr + ha * dk, moe_kv_at(kv, false, st->layer, 0, g * dk), kv->lay_k.cell_stride, ac.cell,
                ac.n_vis, dk, scores + ha * n_slots, hb - ha, n_slots);
            ha = hb;
        }
        for (int64_t h = h0; h < h1; h++) {
            float *sh = scores + h * n_slots;
            for (int32_t j = 0; j < n_slots; j++)
                sh[j] = j < ac.n_vis ? sh[j] * m->kq_scale : -INFINITY;
        }
    }
    for (int32_t j = 0; j < n_slots && !k_in_registers; j++) {
        const bool vis = j < ac.n_vis;
        if (vis)
            load_row(kv, false, st->layer, ac.cell[j], krow);
        for (int64_t h = h0; h < h1; h++)
            scores[h * n_slots + j] =
                vis ? (batched ? moe_dot_gemm : moe_dot_vec)(qr + h * dk, krow + (h / group) * dk,
                                                             dk) *
                          m->kq_scale
                    : -INFINITY;
    }
    for (int64_t h = h0; h < h1; h++) {
        float *sh = scores + h * n_slots;
        moe_cpu_softmax(sh, n_slots);
        if (vf16)
            fops->round_f16_row(sh, n_slots);
    }
    weighted_sum(m, st, &ac, h0, h1, scores, vrow, lanes, out, batched);
}

/* A token's K and V rows into its cell: an F16 cache through the level's
 * row conversion (vcvtps2ph rounds as moe_f32_to_f16: the same bytes, without
 * a branchy scalar conversion per value), any other type through the cache's
 * own. (The 15 us this store took per layer for one token were page faults:
 * kv_cache.c now maps every page at creation.) */
static void store_token(moe_kv_cache *kv, int64_t layer, int32_t cell, const float *k,
                        const float *v) {
    const moe_cpu_kernel_table *tab = moe_cpu_kernels(moe_cpu_level_active()); /* NULL: ref */
    if (!tab || kv->type_k != MOE_TYPE_F16 || (!kv->v_in_k && kv->type_v != MOE_TYPE_F16)) {
        moe_kv_store(kv, layer, cell, k, v);
        return;
    }
    const moe_act_quantize_fn to_f16 = tab->quantize[MOE_ACT_F16];
    for (int side = 0; side < (kv->v_in_k ? 1 : 2); side++) {
        const moe_kv_layout *lay = moe_kv_layout_of(kv, side);
        for (int32_t p = 0; p < lay->n_parts; p++)
            to_f16((side ? v : k) + p * lay->part_values,
                   moe_kv_at(kv, side, layer, cell, p * lay->part_values), lay->part_values);
    }
}

/* Stores the batch's K/V rows, then attends token by token (tokens of one
 * batch see each other causally through the cache). A batch of at least two
 * tokens per thread: each thread takes the next token when it is done (a
 * causal batch's later tokens attend more cells: with contiguous ranges the
 * second of two threads did three quarters of a prompt's attention). Fewer
 * tokens: the (token, head) pairs in contiguous ranges, one per thread. */
void moe_cpu_attention_ref(moe_backend *be, const moe_model *m, const moe_attn_step *st) {
    const int64_t qd = m->hp.n_head * m->attn.dk, od = m->hp.n_head * m->attn.dv;
    const int64_t kd = st->kv->row_k, vd = st->kv->row_v, H = m->hp.n_head;
    const int32_t T = st->T;
    if (T < 8) { /* no region at all: one with if (false) still cost 1.4 us here */
        for (int32_t t = 0; t < T; t++)
            store_token(st->kv, st->layer, st->cells[t], st->k + t * kd, st->v + t * vd);
    } else {
#pragma omp parallel for num_threads(be->n_threads) schedule(static)
        for (int32_t t = 0; t < T; t++) /* a batch's tokens have cells of their own */
            store_token(st->kv, st->layer, st->cells[t], st->k + t * kd, st->v + t * vd);
    }
    const int64_t ws = be->attn_ws_floats, units = (int64_t)T * H;
    const int nth = be->n_threads < units ? be->n_threads : (int)units;
    const bool by_token = T >= 2 * nth;
    int32_t next = 0;
#pragma omp parallel for num_threads(nth) schedule(static)
    for (int k = 0; k < nth; k++) { /* one iteration per thread: k names its workspace */
        float *scores = be->attn_ws + k * ws;
        float *krow = scores + even(m->hp.n_head * st->kv->size);
        float *vrow = krow + even(kd);
        float *qr = vrow + even(vd);
        float *lanes = qr + even(qd);
        while (by_token) {
            int32_t t;
#pragma omp atomic capture
            t = next++;
            if (t >= T)
                break;
            attend_token(m, st, t, 0, H, st->out + t * od, scores, krow, vrow, qr, lanes, true);
        }
        if (by_token)
            continue;
        const int64_t u0 = units * k / nth, u1 = units * (k + 1) / nth;
        for (int64_t u = u0; u < u1;) {
            const int32_t t = (int32_t)(u / H);
            const int64_t h0 = u % H, h1 = u1 - t * H < H ? u1 - t * H : H;
            attend_token(m, st, t, h0, h1, st->out + t * od, scores, krow, vrow, qr, lanes,
                         T > 1);
            u = t * H + h1;
        }
    }
}
