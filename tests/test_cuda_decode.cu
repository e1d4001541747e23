/* The CUDA matrix kernels' block decoders (runtime/cuda/dequant.cuh), run on
 * the host, against the CPU reference decoders (formats/dequant_*.c): every
 * part of every block of ragged rows, bit for bit (both multiply the same
 * f32 values in the same order). Also: the IQ4 level table matches the
 * host's, and the decoders' type list is exactly what caps.c claims. Needs
 * no GPU: runs wherever the CUDA target builds. Seed printed per type. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

extern "C" {  // formats/ is C without C++ guards
#include "formats/quant/quant.h"
#include "formats/quant/types.h"
}
#include "runtime/cuda/caps.h"
#include "runtime/cuda/dequant.cuh"
#include "test_util.h"

namespace {

template <typename Dec>
void check_decoder(moe_type type, int64_t ne0, int64_t nrows) {
    const moe_type_traits *tr = moe_type_get(type);
    uint64_t row_bytes = 0;
    CHECK(moe_type_row_size(type, ne0, &row_bytes, NULL) == MOE_OK, "row size");
    CHECK(row_bytes == (uint64_t)(ne0 / (Dec::kPart * Dec::kParts)) * Dec::kBytes,
          "%s: decoder block bytes", tr->name);
    test_rng_state = (uint32_t)(type * 7919 + ne0);
    printf("%s ne0=%lld rows=%lld seed=%u\n", tr->name, (long long)ne0, (long long)nrows,
           test_rng_state);
    std::vector<float> src((size_t)(ne0 * nrows)), ref(src.size());
    std::vector<uint8_t> q((size_t)(row_bytes * nrows));
    for (float &v : src) v = (float)(test_rng_next() % 20001) / 10000.0f - 1.0f;
    CHECK(moe_quantize_rows(type, src.data(), q.data(), nrows, ne0, NULL, NULL) == MOE_OK,
          "%s: quantize", tr->name);
    tr->to_f32(q.data(), ref.data(), ne0, nrows);
    int bad = 0;
    for (int64_t r = 0; r < nrows; r++)
        for (int64_t u = 0; u < ne0 / Dec::kPart; u++) {
            float part[Dec::kPart];
            moe_cuda::decode_part<Dec>(q.data() + r * row_bytes, u, part);
            const float *want = ref.data() + r * ne0 + u * Dec::kPart;
            bad += memcmp(part, want, sizeof part) != 0;
        }
    CHECK(bad == 0, "%s: %d parts differ from the CPU reference", tr->name, bad);
}

}  // namespace

int main(void) {
    for (int i = 0; i < 16; i++)
        CHECK(moe_cuda::iq4_level(i) == moe_iq4nl_values[i], "iq4 level %d", i);

    /* super-block types: 1 and 5 super-blocks per row; others: ragged counts
     * of blocks. 3 rows each, so row offsets are exercised. */
    check_decoder<moe_cuda::DecodeF16>(MOE_TYPE_F16, 8 * 37, 3);
    check_decoder<moe_cuda::DecodeBF16>(MOE_TYPE_BF16, 8 * 37, 3);
    check_decoder<moe_cuda::DecodeQ8_0>(MOE_TYPE_Q8_0, 32 * 7, 3);
    check_decoder<moe_cuda::DecodeQ4_0>(MOE_TYPE_Q4_0, 32 * 7, 3);
    check_decoder<moe_cuda::DecodeIQ4_NL>(MOE_TYPE_IQ4_NL, 32 * 7, 3);
    for (int64_t nb : {1, 5}) {
        check_decoder<moe_cuda::DecodeQ4_K>(MOE_TYPE_Q4_K, 256 * nb, 3);
        check_decoder<moe_cuda::DecodeQ5_K>(MOE_TYPE_Q5_K, 256 * nb, 3);
        check_decoder<moe_cuda::DecodeQ6_K>(MOE_TYPE_Q6_K, 256 * nb, 3);
        check_decoder<moe_cuda::DecodeIQ4_XS>(MOE_TYPE_IQ4_XS, 256 * nb, 3);
    }

    /* with_decoder (what the kernels take) and caps.c (what placement is
     * told) agree on every type id. */
    char msg[256];
    for (int64_t t = 0; t < 512; t++) {
        const moe_type_traits *tr = moe_type_get(t);
        if (!tr) continue;
        const bool kernel = moe_cuda::with_decoder(t, [](auto) { return 0; }) == 0;
        const bool claimed =
            moe_cuda_supports_weight("w", t, tr->block_size * 8, msg, sizeof msg);
        CHECK(kernel == claimed, "%s: decoder %d, caps %d (%s)", tr->name, kernel, claimed,
              claimed ? "" : msg);
    }
    TEST_DONE();
}
