/* CUDA matrix kernels (GEMV, tiled GEMM) and RMS norm against CPU references
 * computed here (the type table's reference decoders, sums in double), at
 * ragged shapes: rows not a multiple of the 4-row GEMV block or the 64-row
 * GEMM tile, tokens not a multiple of the 32-token tile, rows not a multiple
 * of the 64-value chunk. Needs a GPU: skips (77) without one. Tolerances are
 * those documented in runtime/cuda/kernels.h. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "formats/quant/quant.h"
#include "formats/quant/types.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/kernels.h"
#include "cuda_test_util.h"
#include "test_util.h"

static float frand(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xFFFF) / 32768.0f - 1.0f;
}

/* y = W x against the dequantized weights in double: GEMV (gemm false, one
 * token) or GEMM with T tokens. */
static void check_product(moe_type type, int64_t ne0, int64_t nrows, int64_t T, bool gemm) {
    const moe_type_traits *tr = moe_type_get(type);
    uint64_t row_bytes = 0;
    CHECK(moe_type_row_size(type, ne0, &row_bytes, NULL) == MOE_OK, "row size");
    unsigned seed = (unsigned)(type * 131 + nrows * 7 + T);
    const size_t nw = (size_t)(ne0 * nrows), nx = (size_t)(ne0 * T), ny = (size_t)(nrows * T);
    float *wf = malloc(sizeof(float) * nw), *wdq = malloc(sizeof(float) * nw);
    uint8_t *wq = malloc((size_t)(row_bytes * nrows));
    float *x = malloc(sizeof(float) * nx), *y = malloc(sizeof(float) * ny);
    for (size_t i = 0; i < nw; i++) wf[i] = frand(&seed);
    for (size_t i = 0; i < nx; i++) x[i] = frand(&seed);
    CHECK(moe_quantize_rows(type, wf, wq, nrows, ne0, NULL, NULL) == MOE_OK, "quantize %s",
          tr->name);
    tr->to_f32(wq, wdq, ne0, nrows);

    void *dw = to_device(wq, (size_t)(row_bytes * nrows));
    float *dx = to_device(x, sizeof(float) * nx), *dy = NULL;
    CHECK(cudaMalloc((void **)&dy, sizeof(float) * ny) == cudaSuccess, "alloc y");
    const int rc = gemm ? moe_cuda_gemm(type, dw, ne0, nrows, dx, T, dy, NULL)
                        : moe_cuda_gemv(type, dw, ne0, nrows, dx, dy, NULL);
    CHECK(rc == 0, "%s %s", gemm ? "gemm" : "gemv", tr->name);
    CHECK(cudaMemcpy(y, dy, sizeof(float) * ny, cudaMemcpyDeviceToHost) == cudaSuccess,
          "download");
    int bad = 0;
    for (int64_t t = 0; t < T; t++)
        for (int64_t r = 0; r < nrows; r++) {
            double ref = 0, mag = 0;
            for (int64_t i = 0; i < ne0; i++) {
                ref += (double)wdq[r * ne0 + i] * x[t * ne0 + i];
                mag += fabs((double)wdq[r * ne0 + i] * x[t * ne0 + i]);
            }
            const float got = y[t * nrows + r];
            if (!(fabs(got - ref) <= 1e-5 * mag + 1e-6) && bad++ < 3)
                fprintf(stderr, "%s ne0=%lld token %lld row %lld: %g vs %g\n", tr->name,
                        (long long)ne0, (long long)t, (long long)r, got, ref);
        }
    CHECK(bad == 0, "%s %s ne0=%lld rows=%lld T=%lld: %d outputs off", gemm ? "gemm" : "gemv",
          tr->name, (long long)ne0, (long long)nrows, (long long)T, bad);
    cudaFree(dw), cudaFree(dx), cudaFree(dy);
    free(wf), free(wdq), free(wq), free(x), free(y);
}

static void check_rms_norm(int64_t n, int64_t nrows, int with_weight) {
    const int64_t stride = n + 3;  // rows not packed
    unsigned seed = (unsigned)(n + nrows);
    float *x = malloc(sizeof(float) * (size_t)(stride * nrows));
    float *w = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)(n * nrows));
    for (int64_t i = 0; i < stride * nrows; i++) x[i] = frand(&seed);
    for (int64_t i = 0; i < n; i++) w[i] = frand(&seed);
    float *dx = to_device(x, sizeof(float) * (size_t)(stride * nrows));
    float *dw = to_device(w, sizeof(float) * (size_t)n), *dy = NULL;
    CHECK(cudaMalloc((void **)&dy, sizeof(float) * (size_t)(n * nrows)) == cudaSuccess, "alloc");
    CHECK(moe_cuda_rms_norm(dx, stride, with_weight ? dw : NULL, dy, n, n, nrows, 1e-6f, NULL) ==
              0, "rms_norm");
    CHECK(cudaMemcpy(y, dy, sizeof(float) * (size_t)(n * nrows), cudaMemcpyDeviceToHost) ==
              cudaSuccess, "download");
    for (int64_t t = 0; t < nrows; t++) {
        double ss = 0;
        for (int64_t i = 0; i < n; i++) ss += (double)x[t * stride + i] * x[t * stride + i];
        const double scale = 1.0 / sqrt(ss / (double)n + 1e-6);
        for (int64_t i = 0; i < n; i++) {
            const double ref = x[t * stride + i] * scale * (with_weight ? w[i] : 1.0);
            CHECK(fabs(y[t * n + i] - ref) <= 1e-5 * fabs(ref) + 1e-6, "rms row %lld [%lld]",
                  (long long)t, (long long)i);
        }
    }
    cudaFree(dx), cudaFree(dw), cudaFree(dy);
    free(x), free(w), free(y);
}

int main(void) {
    if (moe_cuda_device_count() == 0) {
        printf("no CUDA device: skipping\n");
        return 77;
    }
    const moe_type types[] = {MOE_TYPE_F16,  MOE_TYPE_BF16, MOE_TYPE_Q8_0,
                              MOE_TYPE_Q4_0, MOE_TYPE_IQ4_NL, MOE_TYPE_Q4_K,
                              MOE_TYPE_Q5_K, MOE_TYPE_Q6_K, MOE_TYPE_IQ4_XS};
    const int64_t rows[] = {1, 3, 7, 64, 69};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        /* rows of fewer parts than a warp has lanes, and of more (not a
         * multiple of 32 parts either) */
        const int64_t block = moe_type_get(types[t])->block_size;
        const int64_t unit = block < 32 ? 32 : block;
        for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
            check_product(types[t], unit * 3, rows[r], 1, false);
            check_product(types[t], 4096 + unit, rows[r], 1, false);
        }
        /* GEMM: tiles of 64 rows x 32 tokens, chunks of 64 values: ragged in
         * all three (rows 1..130, tokens 1..70, rows of 3 or 17 units) */
        const int64_t gemm_shapes[][2] = {{1, 1}, {7, 3}, {65, 33}, {130, 70}};
        for (size_t g = 0; g < sizeof gemm_shapes / sizeof gemm_shapes[0]; g++) {
            check_product(types[t], unit * 3, gemm_shapes[g][0], gemm_shapes[g][1], true);
            check_product(types[t], unit * 17, gemm_shapes[g][0], gemm_shapes[g][1], true);
        }
    }
    const int64_t tokens[] = {1, 3, 7, 64};
    for (size_t t = 0; t < sizeof tokens / sizeof tokens[0]; t++) {
        check_rms_norm(4096 + 5, tokens[t], 1);
        check_rms_norm(77, tokens[t], 0);
    }
    TEST_DONE();
}
