/* cuda/caps — what the CUDA backend can compute, answerable without a GPU.
 *
 * Owns: the list of weight types, head sizes and expert counts the CUDA
 * kernels support, and the message explaining a refusal. Does not own:
 * placement policy (the caller decides to fall back to the CPU or fail).
 */
#ifndef MOE_RUNTIME_CUDA_CAPS_H
#define MOE_RUNTIME_CUDA_CAPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The attention and router limits below are those attention.cu and router.cu
 * are designed to; those kernels are NOT written yet, so no caller may place
 * attention or routing on CUDA on the strength of these answers alone. */

/* Largest attention head size (k or v) the attention kernel handles: one
 * thread block keeps a head's query and accumulator in shared memory. 576/512
 * covers DeepSeek MLA's absorbed heads. */
#define MOE_CUDA_MAX_HEAD_DIM 576
/* Largest expert count the router's top-k handles (one block per token). */
#define MOE_CUDA_MAX_EXPERTS 1024
#define MOE_CUDA_MAX_EXPERTS_USED 64

/* True when the CUDA matrix kernels take weights of type `type` with rows of
 * ne0 values. Otherwise writes into msg (size msg_size) a reason naming
 * `tensor`, e.g. "blk.0.ffn_up_exps.weight: q4_K_R4 is CPU-only: convert with
 * moe-repack --deinterleave". */
bool moe_cuda_supports_weight(const char *tensor, int64_t type, int64_t ne0, char *msg,
                              size_t msg_size);

/* True when the attention kernel handles key head size dk and value head size
 * dv (dk != dv for MLA); reason in msg otherwise, naming `layer`. */
bool moe_cuda_supports_attention(const char *layer, int64_t dk, int64_t dv, char *msg,
                                 size_t msg_size);

/* True when the router kernel handles n_expert experts with n_used chosen per
 * token; reason in msg otherwise, naming `tensor`. */
bool moe_cuda_supports_router(const char *tensor, int64_t n_expert, int64_t n_used, char *msg,
                              size_t msg_size);

#ifdef __cplusplus
}
#endif

#endif
