/* The CUDA capability query answers without a GPU: supported weight types and
 * shapes, and refusals that name the tensor and the reason. */
#include <string.h>

#include "formats/quant/types.h"
#include "runtime/cuda/caps.h"
#include "test_util.h"

int main(void) {
    char msg[256];
    const moe_type ok[] = {MOE_TYPE_F16,  MOE_TYPE_BF16, MOE_TYPE_Q8_0,
                           MOE_TYPE_Q4_0, MOE_TYPE_IQ4_NL, MOE_TYPE_Q4_K,
                           MOE_TYPE_Q5_K, MOE_TYPE_Q6_K, MOE_TYPE_IQ4_XS};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        CHECK(moe_cuda_supports_weight("w", ok[i], 256 * 3, msg, sizeof msg), "%s: %s",
              moe_type_name(ok[i]), msg);

    CHECK(!moe_cuda_supports_weight("blk.0.ffn_up_exps.weight", MOE_TYPE_Q4_K_R4, 256, msg,
                                    sizeof msg), "interleaved refused");
    CHECK(strstr(msg, "blk.0.ffn_up_exps.weight") && strstr(msg, "CPU-only") &&
              strstr(msg, "moe-repack --deinterleave"), "interleaved message: %s", msg);
    CHECK(!moe_cuda_supports_weight("t", MOE_TYPE_IQ2_XXS, 256, msg, sizeof msg), "iq2_xxs");
    CHECK(strstr(msg, "t: ") == msg && strstr(msg, "no CUDA kernel"), "message: %s", msg);
    CHECK(!moe_cuda_supports_weight("t", MOE_TYPE_Q8_0, 100, msg, sizeof msg), "ragged row");
    CHECK(strstr(msg, "100") != NULL, "ragged message: %s", msg);
    CHECK(!moe_cuda_supports_weight("t", MOE_TYPE_Q6_K, 32 * 9, msg, sizeof msg),
          "row not whole super-blocks");
    CHECK(strstr(msg, "288") && strstr(msg, "256"), "super-block message: %s", msg);
    CHECK(!moe_cuda_supports_weight("t", 9999, 256, msg, sizeof msg), "unknown type");

    CHECK(moe_cuda_supports_attention("blk.0", 192, 128, msg, sizeof msg), "MLA 192/128");
    CHECK(moe_cuda_supports_attention("blk.0", 576, 512, msg, sizeof msg), "MLA absorbed");
    CHECK(!moe_cuda_supports_attention("blk.3", 1024, 128, msg, sizeof msg), "head 1024");
    CHECK(strstr(msg, "blk.3") && strstr(msg, "1024"), "attention message: %s", msg);

    CHECK(moe_cuda_supports_router("r", 256, 8, msg, sizeof msg), "256 experts top-8");
    CHECK(moe_cuda_supports_router("r", 3, 3, msg, sizeof msg), "3 experts, all used");
    CHECK(!moe_cuda_supports_router("ffn_gate_inp", 4096, 8, msg, sizeof msg), "4096 experts");
    CHECK(strstr(msg, "ffn_gate_inp") && strstr(msg, "4096"), "router message: %s", msg);
    CHECK(!moe_cuda_supports_router("r", 8, 9, msg, sizeof msg), "used > experts");
    TEST_DONE();
}
