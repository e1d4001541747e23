/* cuda/gemm — several tokens against a quantized weight, tiled: a block owns
 * kTileRows rows x kTileTokens tokens of y and walks the row length in chunks
 * of kChunk values; per chunk its threads decode the weight parts of the tile
 * into shared memory (each part decoded once, then reused by every token) and
 * load the tokens' x values beside them, then each thread accumulates
 * kTokensPerThread outputs of one row. */
#include <cuda_runtime.h>

#include "runtime/cuda/dequant.cuh"
#include "runtime/cuda/kernels.h"

namespace {

constexpr int kTileRows = 64;
constexpr int kTileTokens = 32;
constexpr int kChunk = 64;  // values per chunk: a multiple of every decoder's kPart
constexpr int kThreads = 256;
constexpr int kTokensPerThread = kTileRows * kTileTokens / kThreads;
// +1: rows kChunk + 1 floats apart put consecutive rows in different banks
constexpr int kPitch = kChunk + 1;

static_assert(kThreads % kTileRows == 0, "a thread's row is tid % kTileRows");
static_assert(kTokensPerThread * (kThreads / kTileRows) == kTileTokens, "tokens covered");

template <typename Dec>
__global__ void gemm_kernel(const uint8_t *w, int64_t ne0, int64_t nrows, const float *x,
                            int64_t T, float *y) {
    static_assert(kChunk % Dec::kPart == 0, "chunk of whole parts");
    constexpr int kPartsPerChunk = kChunk / Dec::kPart;
    __shared__ float ws[kTileRows * kPitch];
    __shared__ float xs[kTileTokens * kPitch];
    const int64_t row0 = (int64_t)blockIdx.x * kTileRows, tok0 = (int64_t)blockIdx.y * kTileTokens;
    const int64_t row_bytes = ne0 / (Dec::kPart * Dec::kParts) * (int64_t)Dec::kBytes;
    const int64_t nparts = ne0 / Dec::kPart;
    const int my_row = threadIdx.x % kTileRows;
    const int my_tok0 = threadIdx.x / kTileRows * kTokensPerThread;
    float acc[kTokensPerThread] = {};

    for (int64_t part0 = 0; part0 < nparts; part0 += kPartsPerChunk) {
        // decode: one part of one row per thread and step; rows past the end
        // and parts past the row's end are zeros
        for (int i = threadIdx.x; i < kTileRows * kPartsPerChunk; i += kThreads) {
            const int r = i / kPartsPerChunk, p = i % kPartsPerChunk;
            float *dst = ws + r * kPitch + p * Dec::kPart;
            if (row0 + r < nrows && part0 + p < nparts) {
                float v[Dec::kPart];
                moe_cuda::decode_part<Dec>(w + (row0 + r) * row_bytes, part0 + p, v);
                for (int j = 0; j < Dec::kPart; j++) dst[j] = v[j];
            } else {
                for (int j = 0; j < Dec::kPart; j++) dst[j] = 0.0f;
            }
        }
        const int64_t k0 = part0 * Dec::kPart;
        for (int i = threadIdx.x; i < kTileTokens * kChunk; i += kThreads) {
            const int t = i / kChunk, k = i % kChunk;
            xs[t * kPitch + k] =
                tok0 + t < T && k0 + k < ne0 ? x[(tok0 + t) * ne0 + k0 + k] : 0.0f;
        }
        __syncthreads();
        const float *wr = ws + my_row * kPitch;
        for (int k = 0; k < kChunk; k++) {
            const float wv = wr[k];
            for (int j = 0; j < kTokensPerThread; j++)
                acc[j] += wv * xs[(my_tok0 + j) * kPitch + k];
        }
        __syncthreads();  // the next chunk overwrites ws and xs
    }
    const int64_t r = row0 + my_row;
    for (int j = 0; j < kTokensPerThread; j++) {
        const int64_t t = tok0 + my_tok0 + j;
        if (r < nrows && t < T) y[t * nrows + r] = acc[j];
    }
}

}  // namespace

extern "C" int moe_cuda_gemm(int64_t type, const void *w, int64_t ne0, int64_t nrows,
                             const float *x, int64_t T, float *y, void *stream_ptr) {
    if (nrows == 0 || T == 0) return 0;
    if (ne0 <= 0 || nrows < 0 || T < 0 || (T + kTileTokens - 1) / kTileTokens > 65535) return -1;
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    return moe_cuda::with_decoder(type, [&](auto dec) {
        using Dec = decltype(dec);
        if (ne0 % (Dec::kPart * Dec::kParts) != 0) return -1;
        const dim3 grid((unsigned)((nrows + kTileRows - 1) / kTileRows),
                        (unsigned)((T + kTileTokens - 1) / kTileTokens));
        gemm_kernel<Dec><<<grid, kThreads, 0, stream>>>(static_cast<const uint8_t *>(w), ne0,
                                                        nrows, x, T, y);
        return cudaGetLastError() == cudaSuccess ? 0 : -1;
    });
}
