/* CUDA element-wise steps against the CPU backend's steps of the same names
 * (moe_backend_cpu()), at ragged shapes: bit for bit where kernels.h says so
 * (add_bias, experts_combine, mla_kv, get_rows, ungated add), within 1e-6
 * of the magnitudes involved where expf differs (silu_mul, gated add).
 * Needs a GPU: skips (77) without one. Seeds fixed and printed. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/quant/quant.h"
#include "runtime/backend.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/cpu_ops.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/kernels.h"
#include "cuda_test_util.h"
#include "test_util.h"

static float urand(void) { return (float)(test_rng_next() % 20001) / 2500.0f - 4.0f; }

static float *rand_floats(size_t n) {
    float *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = urand();
    return v;
}

/* Values off: bits differ (tol < 0), or |got - want| > tol * (|want| + 8):
 * inputs lie in [-4, 4], so 8 bounds the terms a sum may have cancelled. */
static int count_off(const float *got, const float *want, size_t n, double tol) {
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += tol < 0 ? memcmp(&got[i], &want[i], sizeof(float)) != 0
                       : !(fabs((double)got[i] - want[i]) <= tol * (fabs(want[i]) + 8.0));
    return bad;
}

static void check_silu_add(int64_t T, int64_t n) {
    test_rng_state = (uint32_t)(T * 31 + n);
    printf("silu_mul / add_bias / add_gated T=%lld n=%lld seed=%u\n", (long long)T,
           (long long)n, test_rng_state);
    const size_t tn = (size_t)(T * n);
    float *g = rand_floats(tn), *u = rand_floats(tn), *b = rand_floats((size_t)n);
    float *gate = rand_floats((size_t)T), *ref = malloc(tn * 4), *got = malloc(tn * 4);
    float *dg = to_device(g, tn * 4), *du = to_device(u, tn * 4), *db = to_device(b, n * 4);
    float *dgate = to_device(gate, (size_t)T * 4);

    memcpy(ref, g, tn * 4);
    for (int64_t t = 0; t < T; t++)
        moe_cpu_silu(ref + t * n, n);
    for (size_t i = 0; i < tn; i++)
        ref[i] *= u[i];
    CHECK(moe_cuda_silu_mul(dg, du, (int64_t)tn, NULL) == 0, "silu_mul");
    from_device(got, dg, tn * 4);
    CHECK(count_off(got, ref, tn, 1e-6) == 0, "silu_mul T=%lld n=%lld", (long long)T,
          (long long)n);

    moe_weight bw = {.data = (const uint8_t *)b, .type = MOE_TYPE_F32, .ne = {n, 1, 1, 1}};
    memcpy(ref, got, tn * 4); /* both sides continue from the device's values */
    moe_backend_cpu()->add_bias(NULL, ref, &bw, T, n);
    CHECK(moe_cuda_add_bias(dg, db, T, n, NULL) == 0, "add_bias");
    from_device(got, dg, tn * 4);
    CHECK(count_off(got, ref, tn, -1) == 0, "add_bias bits");

    for (int with_gate = 0; with_gate < 2; with_gate++) {
        memcpy(ref, got, tn * 4);
        moe_backend_cpu()->add_gated(NULL, ref, u, with_gate ? gate : NULL, T, n);
        CHECK(moe_cuda_add_gated(dg, du, with_gate ? dgate : NULL, T, n, NULL) == 0,
              "add_gated");
        from_device(got, dg, tn * 4);
        CHECK(count_off(got, ref, tn, with_gate ? 1e-6 : -1) == 0, "add_gated gate=%d",
              with_gate);
        memcpy(got, ref, tn * 4); /* realign for the next round */
        CHECK(cudaMemcpy(dg, ref, tn * 4, cudaMemcpyHostToDevice) == cudaSuccess, "upload");
    }
    cudaFree(dg), cudaFree(du), cudaFree(db), cudaFree(dgate);
    free(g), free(u), free(b), free(gate), free(ref), free(got);
}

static void check_combine(int64_t T, int64_t K, int64_t D) {
    test_rng_state = (uint32_t)(T * 7 + K * 131 + D);
    printf("experts_combine T=%lld K=%lld D=%lld seed=%u\n", (long long)T, (long long)K,
           (long long)D, test_rng_state);
    const size_t ns = (size_t)(T * K * D), no = (size_t)(T * D);
    float *slots = rand_floats(ns), *w = rand_floats((size_t)(T * K));
    float *ref = malloc(no * 4), *got = malloc(no * 4);
    moe_cpu_experts_combine(NULL, slots, w, T, K, D, ref);
    float *ds = to_device(slots, ns * 4), *dw = to_device(w, (size_t)(T * K) * 4), *dout = NULL;
    CHECK(cudaMalloc((void **)&dout, no * 4) == cudaSuccess, "alloc");
    CHECK(moe_cuda_experts_combine(ds, dw, T, K, D, dout, NULL) == 0, "combine");
    from_device(got, dout, no * 4);
    CHECK(count_off(got, ref, no, -1) == 0, "experts_combine bits T=%lld K=%lld", (long long)T,
          (long long)K);
    cudaFree(ds), cudaFree(dw), cudaFree(dout);
    free(slots), free(w), free(ref), free(got);
}

static void check_mla_kv(int64_t T, int64_t H, int64_t nope, int64_t n_rope, int64_t dv) {
    test_rng_state = (uint32_t)(T + H * 17 + nope * 5 + n_rope + dv * 3);
    printf("mla_kv T=%lld H=%lld nope=%lld rope=%lld dv=%lld seed=%u\n", (long long)T,
           (long long)H, (long long)nope, (long long)n_rope, (long long)dv, test_rng_state);
    const int64_t kpe_stride = n_rope + 9; /* kpe rows inside a wider projection */
    const size_t nkv = (size_t)(T * H * (nope + dv)), nkpe = (size_t)(T * kpe_stride);
    const size_t nk = (size_t)(T * H * (nope + n_rope)), nv = (size_t)(T * H * dv);
    float *kv = rand_floats(nkv), *kpe = rand_floats(nkpe);
    float *k = malloc(nk * 4), *v = malloc(nv * 4), *gk = malloc(nk * 4), *gv = malloc(nv * 4);
    moe_backend_cpu()->mla_kv(NULL, kv, kpe, kpe_stride, T, H, nope, n_rope, dv, k, v);
    float *dkv = to_device(kv, nkv * 4), *dkpe = to_device(kpe, nkpe * 4), *dk = NULL, *dv_ = NULL;
    CHECK(cudaMalloc((void **)&dk, nk * 4) == cudaSuccess && cudaMalloc((void **)&dv_, nv * 4) ==
              cudaSuccess, "alloc");
    CHECK(moe_cuda_mla_kv(dkv, dkpe, kpe_stride, T, H, nope, n_rope, dv, dk, dv_, NULL) == 0,
          "mla_kv");
    from_device(gk, dk, nk * 4);
    from_device(gv, dv_, nv * 4);
    CHECK(count_off(gk, k, nk, -1) == 0 && count_off(gv, v, nv, -1) == 0, "mla_kv bits");
    cudaFree(dkv), cudaFree(dkpe), cudaFree(dk), cudaFree(dv_);
    free(kv), free(kpe), free(k), free(v), free(gk), free(gv);
}

static void check_get_rows(moe_type type, int64_t ne0) {
    enum { ROWS = 11, T = 6 };
    const int32_t ids[T] = {10, 0, 3, 3, 7, 1};
    test_rng_state = (uint32_t)(type * 3 + ne0);
    printf("get_rows %s ne0=%lld seed=%u\n", moe_type_name(type), (long long)ne0,
           test_rng_state);
    uint64_t row_bytes = 0;
    CHECK(moe_type_row_size(type, ne0, &row_bytes, NULL) == MOE_OK, "row size");
    float *src = rand_floats((size_t)(ROWS * ne0));
    uint8_t *q = malloc((size_t)(ROWS * row_bytes));
    CHECK(moe_quantize_rows(type, src, q, ROWS, ne0, NULL, NULL) == MOE_OK, "quantize");
    moe_weight w = {.data = q, .type = type, .ne = {ne0, ROWS, 1, 1}, .row_bytes = row_bytes,
                    .expert_bytes = row_bytes * ROWS};
    const size_t n = (size_t)(T * ne0);
    float *ref = malloc(n * 4), *got = malloc(n * 4), *dout = NULL;
    moe_backend_cpu()->get_rows(NULL, &w, ids, T, ref);
    void *dq = to_device(q, (size_t)(ROWS * row_bytes));
    int32_t *dids = to_device(ids, sizeof ids);
    CHECK(cudaMalloc((void **)&dout, n * 4) == cudaSuccess, "alloc");
    CHECK(moe_cuda_get_rows(type, dq, ne0, dids, T, dout, NULL) == 0, "get_rows");
    from_device(got, dout, n * 4);
    CHECK(count_off(got, ref, n, -1) == 0, "get_rows %s bits", moe_type_name(type));
    cudaFree(dq), cudaFree(dids), cudaFree(dout);
    free(src), free(q), free(ref), free(got);
}

int main(void) {
    if (moe_cuda_device_count() == 0) {
        printf("no CUDA device: skipping\n");
        return 77;
    }
    check_silu_add(1, 37);
    check_silu_add(5, 1000);
    check_silu_add(3, 4099);
    check_combine(1, 1, 33);
    check_combine(7, 8, 1000);
    check_combine(3, 6, 4096 + 7);
    check_mla_kv(1, 2, 128, 64, 128);
    check_mla_kv(5, 3, 16, 8, 24);
    const moe_type types[] = {MOE_TYPE_F16,  MOE_TYPE_BF16, MOE_TYPE_Q8_0,
                              MOE_TYPE_Q4_0, MOE_TYPE_IQ4_NL, MOE_TYPE_Q4_K,
                              MOE_TYPE_Q5_K, MOE_TYPE_Q6_K, MOE_TYPE_IQ4_XS};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const int64_t block = moe_type_get(types[t])->block_size;
        check_get_rows(types[t], (block < 32 ? 32 : block) * 5);
    }
    TEST_DONE();
}
