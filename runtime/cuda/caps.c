/* cuda/caps — host-only; see caps.h. */
#include "runtime/cuda/caps.h"

#include <stdio.h>

#include "formats/quant/types.h"

/* Types with a decoder in dequant.cuh (GEMV and GEMM both take every one);
 * keep in step with moe_cuda::with_decoder. */
static const moe_type cuda_weight_types[] = {
    MOE_TYPE_F16,  MOE_TYPE_BF16, MOE_TYPE_Q8_0, MOE_TYPE_Q4_0,   MOE_TYPE_IQ4_NL,
    MOE_TYPE_Q4_K, MOE_TYPE_Q5_K, MOE_TYPE_Q6_K, MOE_TYPE_IQ4_XS,
};

bool moe_cuda_supports_weight(const char *tensor, int64_t type, int64_t ne0, char *msg,
                              size_t msg_size) {
    const moe_type_traits *tr = moe_type_get(type);
    if (!tr) {
        snprintf(msg, msg_size, "%s: unknown type %lld", tensor, (long long)type);
        return false;
    }
    if (tr->interleave_rows > 0) {
        snprintf(msg, msg_size, "%s: %s is CPU-only: convert with moe-repack --deinterleave",
                 tensor, tr->name);
        return false;
    }
    bool known = false;
    for (size_t i = 0; i < sizeof cuda_weight_types / sizeof cuda_weight_types[0]; i++)
        known = known || cuda_weight_types[i] == (moe_type)type;
    if (!known) {
        snprintf(msg, msg_size, "%s: type %s has no CUDA kernel (CPU-only)", tensor, tr->name);
        return false;
    }
    if (ne0 <= 0 || ne0 % tr->block_size != 0) {
        snprintf(msg, msg_size, "%s: row of %lld values is not a multiple of %s's block of %lld",
                 tensor, (long long)ne0, tr->name, (long long)tr->block_size);
        return false;
    }
    return true;
}

bool moe_cuda_supports_attention(const char *layer, int64_t dk, int64_t dv, char *msg,
                                 size_t msg_size) {
    if (dk <= 0 || dv <= 0 || dk > MOE_CUDA_MAX_HEAD_DIM || dv > MOE_CUDA_MAX_HEAD_DIM) {
        snprintf(msg, msg_size, "%s: head sizes k=%lld v=%lld outside the CUDA attention's 1..%d",
                 layer, (long long)dk, (long long)dv, MOE_CUDA_MAX_HEAD_DIM);
        return false;
    }
    return true;
}

bool moe_cuda_supports_router(const char *tensor, int64_t n_expert, int64_t n_used, char *msg,
                              size_t msg_size) {
    if (n_expert <= 0 || n_expert > MOE_CUDA_MAX_EXPERTS) {
        snprintf(msg, msg_size, "%s: %lld experts outside the CUDA router's 1..%d", tensor,
                 (long long)n_expert, MOE_CUDA_MAX_EXPERTS);
        return false;
    }
    if (n_used <= 0 || n_used > n_expert || n_used > MOE_CUDA_MAX_EXPERTS_USED) {
        snprintf(msg, msg_size, "%s: %lld experts used per token outside the CUDA router's 1..%d",
                 tensor, (long long)n_used, MOE_CUDA_MAX_EXPERTS_USED);
        return false;
    }
    return true;
}
