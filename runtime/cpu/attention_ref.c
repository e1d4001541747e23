/* Reference attention: llama.cpp's non-flash attention over the KV cache in
 * the lane order of its x86 AVX-512 build (bit-identical logits on the
 * conformance models). Shape alphabet: H/Hkv heads, dk/dv head sizes. */
#include <math.h>
#include <string.h>

#include "formats/fp16.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/cpu/kernels.h"
#include "runtime/cpu_ops.h"

static float round_f16(float v) { return moe_f16_to_f32(moe_f32_to_f16(v)); }

static int64_t even(int64_t n) { return (n + 1) & ~(int64_t)1; }

int64_t moe_attention_workspace(const moe_model *m, int64_t row_k, int64_t row_v,
                                int32_t n_cells) {
    /* scores for every head and cell, one K row, one V row, the rounded q,
     * 64 lanes per output value plus room for a double tail per value */
    const int64_t H = m->hp.n_head;
    int64_t qd = H * m->attn.dk, lanes = (64 + 2) * H * m->attn.dv;
    return even(H * n_cells) + even(row_k) + even(row_v) + even(qd) + even(lanes);
}

static bool visible(const moe_kv_cell *cell, int32_t pos, int32_t seq) {
    return cell->pos >= 0 && cell->pos <= pos && (cell->seqs >> seq & 1);
}

/* Row of the cache in f32: F16 rows through the level's exact conversion. */
static void load_row(moe_type type, const uint8_t *rows, uint64_t bytes, int32_t cell, int64_t n,
                     float *out) {
    const uint8_t *src = rows + (uint64_t)cell * bytes;
    if (type == MOE_TYPE_F16)
        moe_cpu_float_ops_active()->f16_row(src, out, n);
    else
        moe_type_get(type)->to_f32(src, out, n, 1);
}

/* out[h][d] = sum over cells c < n_kv of p[h][c] * v[c][h/group][d], in the
 * lane order of llama.cpp's product (see attend_token): cell c adds into lane
 * c % W of every output value. lanes holds W rows of H*dv accumulators (lane
 * l of value i at lanes[l * H*dv + i]), so one cell's update is a row. */
static void weighted_sum(const moe_model *m, const moe_attn_step *st, int32_t pos,
                         int32_t seq, const float *scores, float *vrow, float *lanes, float *out,
                         bool batched) {
    const moe_kv_cache *kv = st->kv;
    const moe_cpu_float_ops *fops = moe_cpu_float_ops_active();
    const int64_t H = m->hp.n_head, dv = m->attn.dv, group = H / m->attn.n_head_kv, HD = H * dv;
    const int32_t n_kv = st->n_kv;
    const int W = batched ? 16 : 64;                  /* lanes per output */
    const int32_t full = batched ? n_kv : n_kv & ~63; /* VEC sums the rest in double */
    double tail[1024];
    const bool big = HD > 1024;
    double *tl = big ? (double *)(lanes + W * HD) : tail;
    memset(lanes, 0, (size_t)(W * HD) * sizeof *lanes);
    for (int64_t i = 0; i < HD; i++)
        tl[i] = 0.0;
    for (int32_t c = 0; c < n_kv; c++) {
        if (!visible(&kv->cells[c], pos, seq))
            continue; /* weight 0: adds nothing */
        load_row(kv->type_v, kv->v[st->layer], kv->bytes_v, c, kv->row_v, vrow);
        for (int64_t h = 0; h < H; h++) {
            const float p = scores[h * n_kv + c];
            const float *vh = vrow + (h / group) * dv;
            if (c < full) {
                fops->fma_row(p, vh, lanes + (int64_t)(c % W) * HD + h * dv, dv);
            } else {
                /* the VEC tail: float products summed in double */
                for (int64_t d = 0; d < dv; d++)
                    tl[h * dv + d] += (double)(p * vh[d]);
            }
        }
    }
    for (int64_t i = 0; i < HD; i++) {
        float acc[64];
        for (int l = 0; l < W; l++)
            acc[l] = lanes[(int64_t)l * HD + i];
        if (batched) {
            out[i] = moe_reduce16(acc);
            continue;
        }
        for (int l = 0; l < 16; l++) { /* fold the four 16-lane accumulators */
            acc[l] += acc[32 + l];
            acc[16 + l] += acc[48 + l];
            acc[l] += acc[16 + l];
        }
        out[i] = (float)((double)moe_reduce16(acc) + tl[i]);
    }
}

/* Causal attention of one token against every visible cell of its sequence,
 * all heads: scores = kq_scale * q·k, softmax, weighted sum of v. llama.cpp
 * rounds q to the K cache's type (F16) for the dot product and the softmax
 * weights to the V cache's type before the weighted sum; so do we. Both
 * products follow llama.cpp's order: GEMM for a batch, VEC for one token; the
 * weighted sum runs over cell indices (hidden cells weigh 0 and add nothing),
 * so cell c sits in lane c % 16 (GEMM) or c % 64 (VEC). */
static void attend_token(const moe_model *m, const moe_attn_step *st, int32_t pos, int32_t seq,
                         const float *q, float *out, float *scores, float *krow, float *vrow,
                         float *qr, float *lanes, bool batched) {
    const moe_kv_cache *kv = st->kv;
    const int64_t H = m->hp.n_head, Hkv = m->attn.n_head_kv, dk = m->attn.dk;
    const int64_t group = H / Hkv;
    const int32_t n_kv = st->n_kv; /* cells llama.cpp would attend over, hidden ones masked */
    const bool kf16 = kv->type_k == MOE_TYPE_F16, vf16 = kv->type_v == MOE_TYPE_F16;
    for (int64_t i = 0; i < H * dk; i++)
        qr[i] = kf16 ? round_f16(q[i]) : q[i];
    for (int32_t c = 0; c < n_kv; c++) {
        const bool vis = visible(&kv->cells[c], pos, seq);
        if (vis)
            load_row(kv->type_k, kv->k[st->layer], kv->bytes_k, c, kv->row_k, krow);
        for (int64_t h = 0; h < H; h++)
            scores[h * n_kv + c] =
                vis ? (batched ? moe_dot_gemm : moe_dot_vec)(qr + h * dk, krow + (h / group) * dk,
                                                             dk) *
                          m->kq_scale
                    : -INFINITY;
    }
    for (int64_t h = 0; h < H; h++) {
        float *sh = scores + h * n_kv;
        moe_cpu_softmax(sh, n_kv);
        for (int32_t c = 0; c < n_kv && vf16; c++)
            sh[c] = round_f16(sh[c]);
    }
    weighted_sum(m, st, pos, seq, scores, vrow, lanes, out, batched);
}

/* Stores the batch's K/V rows, then attends token by token (tokens of one
 * batch see each other causally through the cache); tokens are split into
 * contiguous chunks, one per thread. */
void moe_cpu_attention_ref(moe_backend *be, const moe_model *m, const moe_attn_step *st) {
    const int64_t qd = m->hp.n_head * m->attn.dk, od = m->hp.n_head * m->attn.dv;
    const int64_t kd = st->kv->row_k, vd = st->kv->row_v;
    const int32_t T = st->T;
    for (int32_t t = 0; t < T; t++)
        moe_kv_store(st->kv, st->layer, st->cells[t], st->k + t * kd, st->v + t * vd);
    const int64_t ws = be->attn_ws_floats;
    int nth = be->n_threads < T ? be->n_threads : T;
#pragma omp parallel for num_threads(nth) schedule(static)
    for (int k = 0; k < nth; k++) {
        float *scores = be->attn_ws + k * ws;
        float *krow = scores + even(m->hp.n_head * st->kv->size);
        float *vrow = krow + even(kd);
        float *qr = vrow + even(vd);
        float *lanes = qr + even(qd);
        for (int32_t t = (int32_t)((int64_t)T * k / nth); t < (int32_t)((int64_t)T * (k + 1) / nth); t++)
            attend_token(m, st, st->pos[t], st->seq[t], st->q + t * qd, st->out + t * od, scores,
                         krow, vrow, qr, lanes, T > 1);
    }
}
