/* backend — the one interface between the model graph and the arithmetic.
 *
 * The graph (forward.c) decides which steps run in which order on which
 * activation buffers; a backend owns how each step is computed: every weight
 * product, the routed-expert FFN, norms, RoPE, attention over the KV cache,
 * storing K/V rows and the K-shift. A backend is a vtable (moe_backend_ops)
 * plus its instance data (moe_backend): threads and scratch of one context.
 *
 * Weights are bound to a backend once, at load (bind_weight): the backend
 * checks it can compute with the weight (capability query, with a message
 * when it cannot) and records what it needs per weight — the CPU backend
 * picks the kernel for the weight's type and the machine's ISA level there,
 * so no product looks a kernel up per call; a device backend uploads the
 * bytes and keeps its own pointer (moe_weight.dev) apart from the host
 * mapping (moe_weight.data).
 *
 * Buffers passed to the steps are memory of the backend's device (the graph
 * moves activations between devices with upload/download, device.h); small
 * integer arrays (positions, cells, token ids) are host arrays. Pointer
 * arguments are borrowed for the duration of the call.
 * Does not own: the graph, cell bookkeeping of the KV cache (kv_cache.h),
 * model loading.
 * Shape alphabet: D n_embd, T tokens, E experts, K experts used, F widths.
 */
#ifndef MOE_RUNTIME_BACKEND_H
#define MOE_RUNTIME_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/include/moe.h"
#include "runtime/kv_cache.h"
#include "runtime/model.h"

/* The two summation orders of llama.cpp's x86 AVX-512 build, which the
 * reference arithmetic reproduces (see cpu_ops.h). GEMM: batched dense
 * products; VEC: single tokens and expert products. Fast kernels may ignore
 * the order: it names which llama.cpp product a call stands for. */
typedef enum moe_dot_order { MOE_DOT_GEMM = 0, MOE_DOT_VEC = 1 } moe_dot_order;

typedef struct moe_backend moe_backend;
struct moe_scratch; /* context.h: one device's buffers */

/* ---- LoRA terms of one step (lora.h owns the adapters) ----------------------------------
 * A low-rank term adds s * B_e (A_e x) to a product's output: A [n_in, r, E]
 * (r rows of n_in floats per expert), B [r, n_out, E] (n_out rows of r), F32,
 * borrowed from the model's adapter cache. a == NULL: no term. */
#define MOE_LORA_MAX 8 /* adapters applied to one context at once */

typedef struct moe_lora_mat {
    const float *a, *b;
    int32_t r;
    float s;            /* user scale * alpha / r */
} moe_lora_mat;

/* The applied adapters' terms on the gate, up and down weights of one FFN or
 * expert step, n of each (some may have a == NULL), and r_max floats of
 * scratch per row of the step (T rows for an FFN, T*K for experts). */
typedef struct moe_lora_ffn {
    int32_t n;
    moe_lora_mat gate[MOE_LORA_MAX], up[MOE_LORA_MAX], down[MOE_LORA_MAX];
    float *tmp;
    int32_t r_max;
} moe_lora_ffn;

/* y[o] += m->s * sum_k B_e[o][k] (A_e[k] . x) for one row (n_in -> n_out);
 * tmp holds m->r floats. The reference arithmetic of every LoRA term. */
void moe_lora_row(const moe_lora_mat *m, int64_t e, const float *x, int64_t n_in, int64_t n_out,
                  float *y, float *tmp);
/* The terms ms[0..l->n) (those with a set) of expert e on n rows: x [n][n_in]
 * -> y [n][n_out] += ..., rows split over nth threads; n <= the rows l->tmp
 * was sized for. l NULL: nothing. */
void moe_lora_rows(const moe_lora_ffn *l, const moe_lora_mat *ms, int64_t e, const float *x,
                   int64_t n, int64_t n_in, int64_t n_out, float *y, int nth);

/* One layer's routed experts: out[t] = sum_k w[t][k] * down_e(silu(gate_e x_t)
 * * up_e x_t) with e = ids[t][k]. Grouping tokens per expert, fusing and
 * splitting the work are the backend's business; an expert no token chose
 * costs nothing. When observer is set, it is called per expert with the
 * expert's input rows (gate, up) and SwiGLU rows (down), as moe.h describes. */
typedef struct moe_expert_step {
    const moe_weight *gate, *up, *down; /* [D, Fe, E], [D, Fe, E], [Fe, D, E] */
    const float *x;                     /* [T][D] normed input */
    int32_t T;
    int32_t K;
    const int32_t *ids;                 /* [T][K] expert per slot */
    const float *w;                     /* [T][K] routing weight per slot */
    float *out;                         /* [T][D] */
    moe_matmul_observer observer;
    void *observer_user;
    const moe_lora_ffn *lora;           /* NULL: no adapter applied */
    /* Experts split between devices: when slots is set, slots with ids < 0
     * belong to another device and are skipped, and the step writes the
     * unweighted output of each of its slots to slots [T][K][D] instead of
     * the weighted sum to out; experts_combine then sums every device's
     * slots in slot order, so a split gives the unsplit bits. */
    float *slots;
} moe_expert_step;

/* A dense SwiGLU FFN (dense blocks, shared experts): out = down(silu(gate x)
 * * up x) for T rows, in llama.cpp's mul_mat order; observer as above (-1). */
typedef struct moe_ffn_step {
    const moe_weight *gate, *up, *down; /* [D, F], [D, F], [F, D] */
    const float *x;                     /* [T][D] */
    int32_t T;
    float *out;                         /* [T][D] */
    moe_matmul_observer observer;
    void *observer_user;
    const moe_lora_ffn *lora;           /* NULL: no adapter applied */
} moe_ffn_step;

/* The router of one layer, after the graph's gate_inp product: probabilities
 * (softmax or sigmoid), top-K selection (on probabilities + bias when bias is
 * set), weights of the chosen experts (renormalised when norm, times scale). */
typedef struct moe_route_step {
    float *probs;           /* [T][E] router logits in, probabilities out */
    int32_t T;
    int32_t E, K;
    bool sigmoid;
    const moe_weight *bias; /* [E] exp_probs_b, or NULL */
    bool norm;
    float scale;            /* 1 = none */
    int32_t *ids;           /* [T][K] out */
    float *w;               /* [T][K] out */
} moe_route_step;

/* One layer's attention: K/V rows of the batch are stored in the cache
 * (cells[t]), then every token attends causally to the cells of its sequence:
 * out = softmax(kq_scale * q k^T) v per head. Token t walks seq_cells[t] (its
 * sequence's n_seq_cells[t] cells in position order, later batch tokens
 * included) up to its own position, so neither a defragmentation nor other
 * sequences' cells change its result. */
typedef struct moe_attn_step {
    moe_kv_cache *kv;
    int64_t layer;
    int32_t T;
    const int32_t *pos, *seq, *cells;   /* [T] */
    const int32_t *const *seq_cells;    /* [T] */
    const int32_t *n_seq_cells;         /* [T] */
    const float *q;                     /* [T][H*dk] */
    const float *k, *v;                 /* [T][row_k], [T][row_v] */
    float *out;                         /* [T][H*dv] */
} moe_attn_step;

typedef struct moe_backend_ops {
    const char *name;
    /* Whether the device's memory is host memory the CPU may read and write
     * (CPU, CPU1): LoRA terms and matmul observers need it. */
    bool host_memory;
    /* Whether the device computes with row-interleaved types (_R4/_R8). */
    bool interleaved;
    /* Capability query: true when the backend computes with w exactly as the
     * reference does (within its documented numerics). Otherwise false with a
     * message naming the tensor and the reason in why (cap bytes). */
    bool (*supports_weight)(const moe_backend *be, const moe_weight *w, char *why, size_t cap);
    /* Prepares w once at load: kernel choice, upload of its bytes into the
     * device's own memory (w->dev). May change only the backend-owned fields
     * of w (kern, dev, and data for a host-memory device that keeps its own
     * copy). unbind_weight releases what bind_weight made (NULL: nothing). */
    moe_status (*bind_weight)(moe_backend *be, moe_weight *w, moe_err *err);
    void (*unbind_weight)(moe_weight *w);

    /* ---- memory: buffers of the device, explicit copies, ordering ---- */
    void *(*alloc)(moe_backend *be, size_t bytes);   /* NULL when out of memory */
    void (*free)(moe_backend *be, void *p);
    /* Host -> device and device -> host copies; a device with queues may
     * return before the copy is done (the host buffer must stay untouched
     * until synchronize). */
    void (*upload)(moe_backend *be, void *dst, const void *host_src, size_t bytes);
    void (*download)(moe_backend *be, void *host_dst, const void *src, size_t bytes);
    /* Waits for everything queued on the device. */
    void (*synchronize)(moe_backend *be);
    /* Host memory the device copies from and to asynchronously (pinned), for
     * the CPU's activation buffers when this device is in use; NULL: the
     * device needs none (plain host memory is used). */
    void *(*host_alloc)(moe_backend *be, size_t bytes);
    void (*host_free)(moe_backend *be, void *p);

    /* ---- steps; every float buffer is memory of this device ---- */
    /* y[t][r] = sum_i W[e][r][i] x[t][i], r < ne[1], t < T (e = 0 for 2-D w). */
    void (*mul_mat)(moe_backend *be, const moe_weight *w, int64_t e, const float *x, int64_t T,
                    float *y, moe_dot_order order);
    /* The products of n <= 4 weights of this device that read the same x (a
     * layer's q, k and v), each y[i] as mul_mat(w[i], 0, ...) gives it, in one
     * pass (one hand-over of the threads instead of n); NULL: the caller makes
     * the n mul_mat calls. */
    void (*mul_mat_n)(moe_backend *be, const moe_weight *const *w, int n, const float *x,
                      int64_t T, float *const *y, moe_dot_order order);
    void (*experts)(moe_backend *be, const moe_expert_step *step);
    /* out[t] = sum_k w[t][k] * slots[t][k] over k in order, for T rows of D
     * (the routed experts' weighted sum, llama.cpp's order). */
    void (*experts_combine)(moe_backend *be, const float *slots, const float *w, int64_t T,
                            int64_t K, int64_t D, float *out);
    void (*ffn)(moe_backend *be, const moe_ffn_step *step);
    void (*route)(moe_backend *be, const moe_route_step *step);
    /* out[t] = x[t] / rms(x[t]) * w for T rows of n, rows x_stride / out_stride
     * floats apart (w may be absent; out may be x). */
    void (*rms_norm)(moe_backend *be, const float *x, int64_t x_stride, const moe_weight *w,
                     int64_t T, int64_t n, float eps, float *out, int64_t out_stride);
    /* Rotates the first n_dims values of each of n_heads heads (head_stride
     * floats apart) of T tokens (token_stride apart), token t by pos[t] (a
     * host array). */
    void (*rope)(moe_backend *be, float *v, int64_t T, int64_t token_stride, int64_t n_heads,
                 int64_t head_stride, const int32_t *pos, const moe_rope_params *r);
    void (*attention)(moe_backend *be, const moe_model *m, const moe_attn_step *step);
    /* Applies the cache's pending K-shift (re-rotates shifted keys). */
    void (*kv_shift)(moe_backend *be, moe_kv_cache *kv, const moe_model *m);
    /* Rows ids[0..T) (a host array) of w, as f32, into out [T][ne[0]]. */
    void (*get_rows)(moe_backend *be, const moe_weight *w, const int32_t *ids, int32_t T,
                     float *out);
    /* x[t][i] += b[i] for T rows of n (b a 1-D weight). */
    void (*add_bias)(moe_backend *be, float *x, const moe_weight *b, int64_t T, int64_t n);
    /* x[i] += g_t * y[i] over T rows of n, g_t = sigmoid(gate[t]) computed as
     * llama.cpp does (silu(v) / v), or 1 when gate is NULL. */
    void (*add_gated)(moe_backend *be, float *x, const float *y, const float *gate, int64_t T,
                      int64_t n);
    /* deepseek2 MLA: per token, K = [kv nope part | the shared rope head kpe]
     * and V = kv's value part for each of H heads. kv [T][H*(nope+dv)], kpe
     * rows kpe_stride floats apart, k [T][H*(nope+n_rope)], v [T][H*dv]. */
    void (*mla_kv)(moe_backend *be, const float *kv, const float *kpe, int64_t kpe_stride,
                   int64_t T, int64_t H, int64_t nope, int64_t n_rope, int64_t dv, float *k,
                   float *v);
    /* Copies na x nb runs of n floats: run (a, b) from src + a*src_a + b*src_b
     * to dst + a*dst_a + b*dst_b (strides in floats; the runs do not overlap).
     * Reorders [T][H][d] rows into per-head [H][T][d] blocks and back, and
     * concatenates row parts (absorbed MLA). */
    void (*copy_runs)(moe_backend *be, float *dst, int64_t dst_a, int64_t dst_b,
                      const float *src, int64_t src_a, int64_t src_b, int64_t na, int64_t nb,
                      int64_t n);
} moe_backend_ops;

/* A backend instance: one per context (threads and scratch are per context). */
struct moe_backend {
    const moe_backend_ops *ops;
    int n_threads;
    /* for bind_weight: plain weights take kernels that compute as their
     * interleaved twin's would (moe_model_params.run_time_repack); it counts
     * the weights and bytes so bound in rtr_weights, rtr_bytes, and names
     * the kernel level in rtr_level */
    bool run_time_repack;
    int64_t rtr_weights;
    uint64_t rtr_bytes;
    const char *rtr_level;
    float *scratch;          /* matmul scratch (moe_cpu_matmul_scratch floats) */
    float *attn_ws;          /* [n_threads][moe_attention_workspace()] */
    int64_t attn_ws_floats;  /* per thread */
    /* expert-step buffers sized for the context's largest batch (borrowed
     * from the context's arena) */
    float *xe, *ge, *ue, *oe, *slot_out;
    int32_t *members;
    /* owned by the backend (moe_backend_init / moe_backend_release): quantized
     * activations, and the fast expert step's [T*K][F] buffers and grouping */
    uint8_t *act;
    uint64_t act_bytes; /* act's size */
    /* two phases' per-thread work ranges, [2][n_threads] (cpu/work_ranges.h) */
    struct moe_work_range *ranges;
    float *fg, *fu;
    int32_t *e_count, *e_offset, *e_active, *slot_pos, *pos_tok;
    /* RoPE angles of the last position rotated alone (a decoded token's q
     * and k in every layer share them: sinf and cosf were 1.3% of a token) */
    struct {
        bool valid;
        moe_rope_params of; /* the parameters they were formed with */
        int32_t pos;
        float cs[2 * 256];
    } rope_angles;
};

/* Points be at ops with the context's threads and scratch (its arena) and
 * allocates the backend's own buffers for the context's batch size. */
moe_status moe_backend_init(moe_backend *be, const moe_backend_ops *ops, moe_context *ctx,
                            struct moe_scratch *s, moe_err *err);
/* Frees what moe_backend_init allocated; be may be zeroed or NULL. */
void moe_backend_release(moe_backend *be);

/* The CPU backend. Its kernels come from the dispatch level chosen at start
 * (moe_cpu_level); the reference level reproduces llama.cpp's arithmetic. */
const moe_backend_ops *moe_backend_cpu(void);

/* CPU1: a second CPU device with memory of its own (the same kernels), so the
 * scheduler's split, copies and synchronisation run without a GPU. */
const moe_backend_ops *moe_backend_cpu1(void);

#endif
