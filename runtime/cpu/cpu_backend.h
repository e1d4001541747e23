/* cpu_backend — the CPU backend's internal pieces (backend.h has the interface).
 *
 * Owns: the reference steps (attention, routed experts) that reproduce
 * llama.cpp's arithmetic, and the per-weight kernel binding of the fast
 * kernels. Does not own: the graph (forward.c) or cell bookkeeping.
 */
#ifndef MOE_RUNTIME_CPU_BACKEND_H
#define MOE_RUNTIME_CPU_BACKEND_H

#include "runtime/backend.h"

/* Floats of attention workspace one thread needs. */
int64_t moe_attention_workspace(const moe_model *m, int64_t row_k, int64_t row_v,
                                int32_t n_cells);

/* The reference attention step (llama.cpp's non-flash order). */
void moe_cpu_attention_ref(moe_backend *be, const moe_model *m, const moe_attn_step *st);

/* The reference routed-expert step: tokens grouped per expert, each expert's
 * SwiGLU in the VEC order, outputs summed per token in slot order. */
void moe_cpu_experts_ref(moe_backend *be, const moe_expert_step *st);

/* The routed experts' weighted sum over slot outputs, in slot order. */
void moe_cpu_experts_combine(moe_backend *be, const float *slots, const float *w, int64_t T,
                             int64_t K, int64_t D, float *out);

/* The fast product: w->kern bound (kernels.h), activations quantized into
 * be->act, rows split between be->n_threads. */
void moe_cpu_matmul_fast(moe_backend *be, const moe_weight *w, int64_t e, const float *x,
                         int64_t T, float *y, moe_dot_order order);

/* The fast products of n <= MOE_MATMUL_N_MAX weights that read the same x
 * (q, k and v), in one pass: x quantized once, the work units of all of them
 * taken from one queue; each y as moe_cpu_matmul_fast gives it (the same row
 * split, so the same bits). Usable when moe_cpu_matmul_fast_n_ok: all bound,
 * one activation format, one input width. */
enum { MOE_MATMUL_N_MAX = 4 };
bool moe_cpu_matmul_fast_n_ok(const moe_weight *const *ws, int n);
void moe_cpu_matmul_fast_n(moe_backend *be, const moe_weight *const *ws, int n, const float *x,
                           int64_t T, float *const *ys, moe_dot_order order);

/* The fused routed-expert step on the fast kernels; usable when
 * moe_cpu_experts_fast_ok (all three weights bound, gate and up sharing an
 * activation format, no observer). */
bool moe_cpu_experts_fast_ok(const moe_expert_step *st);
void moe_cpu_experts_fast(moe_backend *be, const moe_expert_step *st);

#endif
