/* CUDA row kernels against the CPU backend's reference operations, at ragged
 * shapes: RoPE (NORM, NEOX, YaRN, partial rotation) vs moe_cpu_rope, softmax
 * vs moe_cpu_softmax, the router vs the CPU backend's route step (softmax and
 * sigmoid gating, bias, norm, scale, expert counts 3..512), attention over an
 * F16 cache (GQA, dk != dv, hidden cells) vs moe_cpu_attention_ref. Needs a
 * GPU: skips (77) without one. Tolerances: runtime/cuda/kernels.h. Seeds are
 * fixed and printed per case. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/backend.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/cpu_ops.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/kernels.h"
#include "runtime/kv_cache.h"
#include "cuda_test_util.h"
#include "test_util.h"

static float urand(void) { return (float)(test_rng_next() % 20001) / 10000.0f - 1.0f; }

/* ---- RoPE ---------------------------------------------------------------------------------- */

static void check_rope(int n_dims, int head_dim, bool neox, bool yarn, bool fused) {
    enum { T = 4, H = 3 };
    const int32_t pos[T] = {0, 17, 4093, 100003};
    const int64_t head_stride = head_dim + 1, token_stride = H * head_stride + 2;
    moe_rope_params r = {.n_dims = n_dims, .neox = neox, .freq_base = 10000.0f,
                         .freq_scale = yarn ? 0.25f : 1.0f, .ext_factor = yarn ? 1.0f : 0.0f,
                         .attn_factor = 1.0f, .beta_fast = 32.0f, .beta_slow = 1.0f,
                         .corr_lo = yarn ? 5.0f : 0.0f, .corr_hi = yarn ? 21.0f : 0.0f,
                         .n_ctx_orig = 4096, .fused = fused};
    test_rng_state = (uint32_t)(n_dims * 31 + head_dim + neox * 7 + yarn * 13);
    printf("rope n_dims=%d head=%d neox=%d yarn=%d fused=%d seed=%u\n", n_dims, head_dim, neox,
           yarn, fused, test_rng_state);
    const size_t n = (size_t)(T * token_stride);
    float *x = malloc(n * sizeof *x), *ref = malloc(n * sizeof *x), *got = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = ref[i] = urand();
    for (int t = 0; t < T; t++)
        moe_cpu_rope(ref + t * token_stride, H, head_stride, pos[t], &r);
    float *dx = to_device(x, n * sizeof *x);
    int32_t *dpos = to_device(pos, sizeof pos);
    CHECK(moe_cuda_rope(dx, T, token_stride, H, head_stride, dpos, &r, NULL) == 0, "rope");
    from_device(got, dx, n * sizeof *x);
    /* rotated values within the tolerance (|x0| + |x1| <= 2, YaRN's magnitude
     * below 1.2); everything else (dims past n_dims, padding) untouched */
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        const int64_t in_token = (int64_t)i % token_stride, d = in_token % head_stride;
        const bool rotated = in_token < H * head_stride && d < n_dims;
        bad += rotated ? !(fabs((double)got[i] - ref[i]) <= 1e-5 * 2.0 * 1.2 + 1e-6)
                       : got[i] != ref[i];
    }
    CHECK(bad == 0, "rope n_dims=%d neox=%d yarn=%d: %d values off", n_dims, neox, yarn, bad);
    cudaFree(dx), cudaFree(dpos);
    free(x), free(ref), free(got);
}

/* ---- softmax ------------------------------------------------------------------------------- */

static void check_softmax(int64_t n, int64_t nrows) {
    const int64_t stride = n + 3;
    const size_t total = (size_t)(stride * nrows);
    test_rng_state = (uint32_t)(n * 977 + nrows);
    printf("softmax n=%lld rows=%lld seed=%u\n", (long long)n, (long long)nrows, test_rng_state);
    float *x = malloc(total * sizeof *x), *ref = malloc(total * sizeof *x);
    float *got = malloc(total * sizeof *x);
    for (size_t i = 0; i < total; i++)
        x[i] = ref[i] = 8.0f * urand();
    if (n > 2)
        x[1] = ref[1] = -INFINITY; /* a hidden entry: weight 0 */
    for (int64_t r = 0; r < nrows; r++)
        moe_cpu_softmax(ref + r * stride, n);
    float *dx = to_device(x, total * sizeof *x);
    CHECK(moe_cuda_softmax(dx, n, nrows, stride, NULL) == 0, "softmax");
    from_device(got, dx, total * sizeof *x);
    int bad = 0;
    for (int64_t r = 0; r < nrows; r++)
        for (int64_t i = 0; i < stride; i++) {
            const float g = got[r * stride + i], e = ref[r * stride + i];
            bad += i < n ? !(fabsf(g - e) <= 1e-5f * e + 1e-7f) : g != e;
        }
    CHECK(bad == 0, "softmax n=%lld: %d values off", (long long)n, bad);
    cudaFree(dx);
    free(x), free(ref), free(got);
}

/* ---- router -------------------------------------------------------------------------------- */

/* Whether the GPU's choice of slot k may differ from the CPU's: both experts'
 * selection values are within 1e-5 (a near-tie the two arithmetics may order
 * either way). */
static bool near_tie(const float *sel, int32_t a, int32_t b) {
    return a >= 0 && b >= 0 && fabsf(sel[a] - sel[b]) <= 1e-5f * fabsf(sel[a]) + 1e-7f;
}

static void check_route(int32_t E, int32_t K, bool sigmoid, bool with_bias, bool norm,
                        float scale) {
    enum { T = 5 };
    test_rng_state = (uint32_t)(E * 131 + K * 7 + sigmoid * 3 + with_bias + norm * 11);
    printf("route E=%d K=%d sigmoid=%d bias=%d norm=%d scale=%g seed=%u\n", E, K, sigmoid,
           with_bias, norm, scale, test_rng_state);
    const size_t ne = (size_t)(T * E), nk = (size_t)(T * K);
    float *logits = malloc(ne * sizeof(float)), *probs = malloc(ne * sizeof(float));
    float *bias = malloc((size_t)E * sizeof(float)), *w = malloc(nk * sizeof(float));
    float *gw = malloc(nk * sizeof(float)), *gprobs = malloc(ne * sizeof(float));
    int32_t *ids = malloc(nk * sizeof(int32_t)), *gids = malloc(nk * sizeof(int32_t));
    for (size_t i = 0; i < ne; i++)
        logits[i] = probs[i] = 4.0f * urand();
    for (int32_t e = 0; e < E; e++)
        bias[e] = 0.1f * urand();
    moe_weight bw = {.data = (const uint8_t *)bias, .type = MOE_TYPE_F32, .ne = {E, 1, 1, 1},
                     .name = "exp_probs_b"};
    moe_route_step st = {.probs = probs, .T = T, .E = E, .K = K, .sigmoid = sigmoid,
                         .bias = with_bias ? &bw : NULL, .norm = norm, .scale = scale,
                         .ids = ids, .w = w};
    moe_backend_cpu()->route(NULL, &st);

    float *dp = to_device(logits, ne * sizeof(float));
    float *db = to_device(bias, (size_t)E * sizeof(float)), *dw = NULL;
    int32_t *di = NULL;
    CHECK(cudaMalloc((void **)&dw, nk * sizeof(float)) == cudaSuccess, "alloc w");
    CHECK(cudaMalloc((void **)&di, nk * sizeof(int32_t)) == cudaSuccess, "alloc ids");
    CHECK(moe_cuda_route(dp, T, E, K, sigmoid, with_bias ? db : NULL, norm, scale, di, dw,
                         NULL) == 0, "route");
    from_device(gprobs, dp, ne * sizeof(float));
    from_device(gids, di, nk * sizeof(int32_t));
    from_device(gw, dw, nk * sizeof(float));
    int bad_p = 0, bad_id = 0, bad_w = 0;
    for (size_t i = 0; i < ne; i++)
        bad_p += !(fabsf(gprobs[i] - probs[i]) <= 1e-5f * probs[i] + 1e-7f);
    for (int t = 0; t < T; t++) {
        float sel[MOE_MAX_EXPERTS];
        for (int32_t e = 0; e < E; e++)
            sel[e] = probs[t * E + e] + (with_bias ? bias[e] : 0.0f);
        for (int32_t k = 0; k < K; k++) {
            const int32_t c = ids[t * K + k], g = gids[t * K + k];
            bad_id += g != c && !(g >= 0 && g < E && near_tie(sel, c, g));
            if (g == c)
                bad_w += !(fabsf(gw[t * K + k] - w[t * K + k]) <=
                           1e-5f * fabsf(w[t * K + k]) + 1e-7f);
        }
    }
    CHECK(bad_p == 0, "route E=%d: %d probabilities off", E, bad_p);
    CHECK(bad_id == 0, "route E=%d K=%d: %d experts differ (not near-ties)", E, K, bad_id);
    CHECK(bad_w == 0, "route E=%d K=%d: %d weights off", E, K, bad_w);
    cudaFree(dp), cudaFree(db), cudaFree(dw), cudaFree(di);
    free(logits), free(probs), free(bias), free(w), free(gw), free(gprobs), free(ids),
        free(gids);
}

/* ---- attention ----------------------------------------------------------------------------- */

/* Cells: most hold sequence 0 at positions below the token's, some another
 * sequence (hidden), some are empty (hidden); the token's own K/V go to the
 * last cell, stored there by the CPU step. */
static void fill_cache(moe_kv_cache *kv, int32_t n_cells, int32_t P, int64_t rk, int64_t rv) {
    float *kr = malloc((size_t)rk * sizeof(float)), *vr = malloc((size_t)rv * sizeof(float));
    for (int32_t c = 0; c < n_cells - 1; c++) {
        kv->cells[c].pos = c % 11 == 5 ? -1 : c;
        kv->cells[c].seqs = c % 7 == 3 ? 2u : 1u;
        for (int64_t i = 0; i < rk; i++)
            kr[i] = urand();
        for (int64_t i = 0; i < rv; i++)
            vr[i] = urand();
        moe_kv_store(kv, 0, c, kr, vr);
    }
    kv->cells[n_cells - 1].pos = P;
    kv->cells[n_cells - 1].seqs = 1u;
    free(kr), free(vr);
}

static void check_attention(int64_t H, int64_t Hkv, int64_t dk, int64_t dv, int32_t n_cells) {
    test_rng_state = (uint32_t)(H * 1009 + Hkv * 101 + dk + dv * 3 + n_cells);
    printf("attention H=%lld Hkv=%lld dk=%lld dv=%lld cells=%d seed=%u\n", (long long)H,
           (long long)Hkv, (long long)dk, (long long)dv, n_cells, test_rng_state);
    moe_model m = {0};
    m.hp.n_layer = 1, m.hp.n_head = H, m.hp.n_head_kv = Hkv, m.hp.head_dim_k = dk,
    m.hp.head_dim_v = dv;
    m.attn = (moe_attn_shape){.n_head_kv = Hkv, .dk = dk, .dv = dv, .n_kv_pad = 32};
    m.kq_scale = 1.0f / sqrtf((float)dk);
    moe_kv_cache kv;
    moe_err err = {0};
    CHECK(moe_kv_init(&kv, &m, n_cells, MOE_TYPE_F16, MOE_TYPE_F16, &err) == MOE_OK, "kv: %s",
          err.msg);
    const int32_t P = n_cells + 5, seq = 0, cell = n_cells - 1;
    fill_cache(&kv, n_cells, P, kv.row_k, kv.row_v);
    float *q = malloc((size_t)(H * dk) * sizeof(float)), *out = malloc((size_t)(H * dv) * 4);
    float *k = malloc((size_t)kv.row_k * 4), *v = malloc((size_t)kv.row_v * 4);
    float *got = malloc((size_t)(H * dv) * 4), *mask = malloc((size_t)n_cells * 4);
    for (int64_t i = 0; i < H * dk; i++)
        q[i] = 2.0f * urand();
    for (int64_t i = 0; i < kv.row_k; i++)
        k[i] = urand();
    for (int64_t i = 0; i < kv.row_v; i++)
        v[i] = urand();
    moe_backend be = {.n_threads = 1};
    be.attn_ws_floats = moe_attention_workspace(&m, kv.row_k, kv.row_v, n_cells);
    be.attn_ws = malloc((size_t)be.attn_ws_floats * sizeof(float));
    /* the CPU walks the sequence's cells in position order: here cell order */
    int32_t *list = malloc((size_t)n_cells * sizeof(int32_t)), n_list = 0;
    for (int32_t c = 0; c < n_cells; c++)
        if (kv.cells[c].pos >= 0 && (kv.cells[c].seqs >> seq & 1))
            list[n_list++] = c;
    const int32_t *lists[1] = {list};
    moe_attn_step st = {.kv = &kv, .layer = 0, .T = 1, .pos = &P, .seq = &seq,
                        .cells = &cell, .seq_cells = lists, .n_seq_cells = &n_list,
                        .q = q, .k = k, .v = v, .out = out};
    moe_cpu_attention_ref(&be, &m, &st);

    for (int32_t c = 0; c < n_cells; c++) { /* the CPU's visibility rule as a mask */
        const moe_kv_cell *cl = &kv.cells[c];
        mask[c] = cl->pos >= 0 && cl->pos <= P && (cl->seqs >> seq & 1) ? 0.0f : -INFINITY;
    }
    moe_cuda_attn_args a = {.row_k = kv.row_k, .row_v = kv.row_v, .T = 1, .n_kv = n_cells,
                            .H = H, .Hkv = Hkv, .dk = dk, .dv = dv, .kq_scale = m.kq_scale};
    a.q = to_device(q, (size_t)(H * dk) * 4);
    /* the CUDA kernel takes whole rows in cell order: gathered from the cache's layout */
    uint8_t *rows_k = malloc((size_t)n_cells * kv.bytes_k), *rows_v = malloc((size_t)n_cells * kv.bytes_v);
    for (int32_t c = 0; c < n_cells; c++) {
        moe_kv_row_read(&kv, false, 0, c, rows_k + (size_t)c * kv.bytes_k);
        moe_kv_row_read(&kv, true, 0, c, rows_v + (size_t)c * kv.bytes_v);
    }
    a.k = to_device(rows_k, (size_t)n_cells * kv.bytes_k);
    a.v = to_device(rows_v, (size_t)n_cells * kv.bytes_v);
    free(rows_k);
    free(rows_v);
    a.mask = to_device(mask, (size_t)n_cells * 4);
    CHECK(cudaMalloc((void **)&a.scores,
                     (size_t)moe_cuda_attention_ws_floats(1, H, n_cells) * 4) == cudaSuccess,
          "alloc scores");
    CHECK(cudaMalloc((void **)&a.out, (size_t)(H * dv) * 4) == cudaSuccess, "alloc out");
    CHECK(moe_cuda_attention_f16(&a, NULL) == 0, "attention");
    from_device(got, a.out, (size_t)(H * dv) * 4);
    /* sum_c p_c |v_c| <= max |v| = 1 */
    int bad = 0;
    for (int64_t i = 0; i < H * dv; i++)
        bad += !(fabsf(got[i] - out[i]) <= 0x1p-10f + 1e-6f);
    CHECK(bad == 0, "attention H=%lld dk=%lld: %d values off", (long long)H, (long long)dk, bad);
    cudaFree((void *)a.q), cudaFree((void *)a.k), cudaFree((void *)a.v);
    cudaFree((void *)a.mask), cudaFree(a.scores), cudaFree(a.out);
    moe_kv_free(&kv);
    free(q), free(out), free(k), free(v), free(got), free(mask), free(be.attn_ws), free(list);
}

int main(void) {
    if (moe_cuda_device_count() == 0) {
        printf("no CUDA device: skipping\n");
        return 77;
    }
    for (int neox = 0; neox < 2; neox++)
        for (int yarn = 0; yarn < 2; yarn++)
            for (int fused = 0; fused < 2; fused++) {
                check_rope(64, 64, neox, yarn, fused);
                check_rope(32, 96, neox, yarn, fused); /* partial rotation */
            }
    const int64_t widths[] = {1, 5, 16, 33, 257, 1000};
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++) {
        check_softmax(widths[i], 1);
        check_softmax(widths[i], 7);
    }
    const int32_t experts[][2] = {{3, 3}, {8, 2}, {60, 4}, {64, 6}, {160, 6}, {256, 8},
                                  {384, 64}, {512, 10}};
    for (size_t i = 0; i < sizeof experts / sizeof experts[0]; i++) {
        const int32_t E = experts[i][0], K = experts[i][1];
        check_route(E, K, false, false, true, 1.0f);   /* softmax, normalised (Qwen, OLMoE) */
        check_route(E, K, false, false, false, 1.0f);  /* softmax, weights not renormalised */
        check_route(E, K, true, true, true, 2.5f);     /* sigmoid + bias + scale (DeepSeek-V3) */
    }
    check_attention(4, 4, 64, 64, 37);
    check_attention(8, 2, 128, 128, 300);  /* GQA */
    check_attention(3, 3, 192, 128, 70);   /* MLA shapes: dk != dv */
    check_attention(2, 1, 576, 512, 20);   /* absorbed MLA: the largest heads */
    TEST_DONE();
}
