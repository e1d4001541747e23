/* The CPU backend: the vtable over the reference operations (cpu_ops.h) and
 * the reference steps. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cpu/cpu_backend.h"
#include "runtime/cpu/kernels.h"
#include "runtime/cpu_ops.h"

static bool cpu_supports_weight(const moe_backend *be, const moe_weight *w, char *why,
                                size_t cap) {
    (void)be;
    const moe_type_traits *tr = moe_type_get(w->type);
    if (tr && tr->to_f32)
        return true;
    snprintf(why, cap, "tensor '%s' has type %s, which the CPU backend cannot compute with",
             w->name, tr ? tr->name : "(unknown)");
    return false;
}

/* Whether k suits w's shape: whole blocks per row, whole interleave groups. */
static bool kernel_fits(const moe_cpu_kernel *k, const moe_weight *w) {
    return k && w->ne[0] % moe_act_block(k->act) == 0 && w->ne[1] % k->rows == 0;
}

/* The kernel of the active level for w's type where it fits, with
 * run_time_repack the plain type's -rtr kernel first; otherwise none, and the
 * reference path, which decodes any type the type table knows. */
static moe_status cpu_bind_weight(moe_backend *be, moe_weight *w, moe_err *err) {
    (void)err;
    const moe_cpu_level level = moe_cpu_level_active();
    const moe_cpu_kernel *rtr = be->run_time_repack ? moe_cpu_kernel_find_rtr(level, w->type) : NULL;
    const moe_cpu_kernel *k = moe_cpu_kernel_find(level, w->type);
    w->kern = kernel_fits(rtr, w) ? rtr : kernel_fits(k, w) ? k : NULL;
    w->dev = NULL;
    if (be->run_time_repack)
        be->rtr_level = moe_cpu_level_name(level);
    if (w->kern && w->kern == rtr) {
        be->rtr_weights++;
        be->rtr_bytes += moe_weight_nbytes(w);
    }
    return MOE_OK;
}

static void cpu_matmul(moe_backend *be, const moe_weight *w, int64_t e, const float *x, int64_t T,
                       float *y, moe_dot_order order) {
    if (w->kern)
        moe_cpu_matmul_fast(be, w, e, x, T, y, order);
    else
        moe_cpu_matmul(w, e, x, T, y, be->scratch, be->n_threads, order);
}

static void cpu_matmul_n(moe_backend *be, const moe_weight *const *w, int n, const float *x,
                         int64_t T, float *const *y, moe_dot_order order) {
    if (moe_cpu_matmul_fast_n_ok(w, n)) {
        moe_cpu_matmul_fast_n(be, w, n, x, T, y, order);
        return;
    }
    for (int i = 0; i < n; i++)
        cpu_matmul(be, w[i], 0, x, T, y[i], order);
}

static void cpu_experts(moe_backend *be, const moe_expert_step *st) {
    if (moe_cpu_experts_fast_ok(st))
        moe_cpu_experts_fast(be, st);
    else
        moe_cpu_experts_ref(be, st);
}

/* Per-token steps of a batch run on the team from this many tokens on (each
 * token's values are computed as alone, so no bits depend on it); a prompt's
 * norms, RoPE and routing on one thread left the other waiting (perf, pp512:
 * 8% of the samples in OpenMP's wait). Fewer tokens: a plain loop, no
 * region (one with if (false) still cost 1.4 us here, several per layer). */
enum { PAR_TOKENS = 8 };

/* The team of a step that may also run without a backend (NULL: one thread). */
static inline int team(const moe_backend *be) { return be && be->n_threads > 1 ? be->n_threads : 1; }

static void cpu_rms_norm(moe_backend *be, const float *x, int64_t x_stride, const moe_weight *w,
                         int64_t T, int64_t n, float eps, float *out, int64_t out_stride) {
    const float *wf = w ? moe_weight_f32(w) : NULL;
    if (T < PAR_TOKENS) {
        for (int64_t t = 0; t < T; t++)
            moe_cpu_rms_norm(x + t * x_stride, wf, n, eps, out + t * out_stride);
        return;
    }
#pragma omp parallel for num_threads(team(be)) schedule(static)
    for (int64_t t = 0; t < T; t++)
        moe_cpu_rms_norm(x + t * x_stride, wf, n, eps, out + t * out_stride);
}

/* Whether two parameter sets form the same angles (field by field: a
 * struct's padding bytes are not part of its value). */
static bool same_rope(const moe_rope_params *a, const moe_rope_params *b) {
    return a->n_dims == b->n_dims && a->neox == b->neox && a->freq_base == b->freq_base &&
           a->freq_scale == b->freq_scale && a->ext_factor == b->ext_factor &&
           a->attn_factor == b->attn_factor && a->beta_fast == b->beta_fast &&
           a->beta_slow == b->beta_slow && a->corr_lo == b->corr_lo && a->corr_hi == b->corr_hi &&
           a->n_ctx_orig == b->n_ctx_orig && a->fused == b->fused;
}

static void cpu_rope(moe_backend *be, float *v, int64_t T, int64_t token_stride, int64_t n_heads,
                     int64_t head_stride, const int32_t *pos, const moe_rope_params *r) {
    const int half = r->n_dims / 2;
    if (be && T == 1 && half <= (int)(sizeof be->rope_angles.cs / sizeof(float) / 2)) {
        if (!be->rope_angles.valid || be->rope_angles.pos != pos[0] ||
            !same_rope(&be->rope_angles.of, r)) {
            moe_cpu_rope_angles(pos[0], r, 0, half, be->rope_angles.cs);
            be->rope_angles.of = *r;
            be->rope_angles.pos = pos[0];
            be->rope_angles.valid = true;
        }
        moe_cpu_rope_apply(v, n_heads, head_stride, be->rope_angles.cs, 0, half, r);
        return;
    }
    if (T < PAR_TOKENS) {
        for (int64_t t = 0; t < T; t++)
            moe_cpu_rope(v + t * token_stride, n_heads, head_stride, pos[t], r);
        return;
    }
#pragma omp parallel for num_threads(team(be)) schedule(static)
    for (int64_t t = 0; t < T; t++)
        moe_cpu_rope(v + t * token_stride, n_heads, head_stride, pos[t], r);
}

static void cpu_kv_shift(moe_backend *be, moe_kv_cache *kv, const moe_model *m) {
    (void)be;
    moe_kv_apply_shift(kv, m);
}

/* Hands one product's input rows to the step's observer (moe.h), if any. */
static void observe(moe_matmul_observer fn, void *user, const moe_weight *w, int64_t e,
                    const float *x, int64_t n) {
    if (fn)
        fn(user, w->name, (int32_t)e, x, w->ne[0], n);
}

/* g = silu(g) * u over n rows of F values (the SwiGLU gate). */
static void silu_mul(float *g, const float *u, int64_t n, int64_t F) {
    for (int64_t r = 0; r < n; r++)
        moe_cpu_silu(g + r * F, F);
    for (int64_t i = 0; i < n * F; i++)
        g[i] *= u[i];
}

/* out = down(silu(gate x) * up x), llama.cpp's mul_mat order. */
static void cpu_ffn(moe_backend *be, const moe_ffn_step *st) {
    const int64_t F = st->gate->ne[1];
    float *g = be->ge, *u = be->ue;
    observe(st->observer, st->observer_user, st->gate, -1, st->x, st->T);
    cpu_matmul(be, st->gate, 0, st->x, st->T, g, MOE_DOT_GEMM);
    observe(st->observer, st->observer_user, st->up, -1, st->x, st->T);
    cpu_matmul(be, st->up, 0, st->x, st->T, u, MOE_DOT_GEMM);
    if (st->lora) { /* applied adapters' low-rank terms (lora.h) */
        const int64_t D = st->gate->ne[0];
        moe_lora_rows(st->lora, st->lora->gate, 0, st->x, st->T, D, F, g, be->n_threads);
        moe_lora_rows(st->lora, st->lora->up, 0, st->x, st->T, D, F, u, be->n_threads);
    }
    silu_mul(g, u, st->T, F);
    observe(st->observer, st->observer_user, st->down, -1, g, st->T);
    cpu_matmul(be, st->down, 0, g, st->T, st->out, MOE_DOT_GEMM);
    if (st->lora)
        moe_lora_rows(st->lora, st->lora->down, 0, g, st->T, F, st->down->ne[1], st->out,
                      be->n_threads);
}

/* Descending exchange sort of the first k of n indices by value, strict '>'
 * as ggml's CPU argsort (ties keep the lower index first). */
static void top_k(const float *v, int64_t n, int64_t k, int32_t *idx) {
    int32_t all[MOE_MAX_EXPERTS];
    for (int64_t i = 0; i < n; i++)
        all[i] = (int32_t)i;
    for (int64_t i = 0; i < k; i++)
        for (int64_t j = i + 1; j < n; j++)
            if (v[all[j]] > v[all[i]]) {
                int32_t tmp = all[i];
                all[i] = all[j];
                all[j] = tmp;
            }
    memcpy(idx, all, (size_t)k * sizeof *idx);
}

/* Token t's expert choice and weights. */
static void route_token(const moe_route_step *st, const float *bias, int32_t t) {
    const int64_t E = st->E, K = st->K;
    float *p = st->probs + t * E;
    if (st->sigmoid)
        for (int64_t e = 0; e < E; e++)
            p[e] = 1.0f / (1.0f + expf(-p[e]));
    else
        moe_cpu_softmax(p, E);
    float sel[MOE_MAX_EXPERTS];
    for (int64_t e = 0; e < E; e++)
        sel[e] = bias ? p[e] + bias[e] : p[e];
    int32_t *ids = st->ids + t * K;
    float *w = st->w + t * K;
    top_k(sel, E, K, ids);
    /* llama.cpp sums the chosen weights in double (ggml_sum_rows) and
     * clamps the sum to F16's smallest normal before dividing */
    double sum = 0.0;
    for (int64_t k = 0; k < K; k++)
        sum += (double)(w[k] = p[ids[k]]);
    const float norm = (float)sum > 6.103515625e-5f ? (float)sum : 6.103515625e-5f;
    for (int64_t k = 0; k < K; k++) {
        if (st->norm)
            w[k] /= norm;
        if (st->scale != 1.0f)
            w[k] *= st->scale;
    }
}

static void cpu_route(moe_backend *be, const moe_route_step *st) {
    const float *bias = st->bias ? moe_weight_f32(st->bias) : NULL;
    if (st->T < PAR_TOKENS) {
        for (int32_t t = 0; t < st->T; t++)
            route_token(st, bias, t);
        return;
    }
#pragma omp parallel for num_threads(team(be)) schedule(static)
    for (int32_t t = 0; t < st->T; t++)
        route_token(st, bias, t);
}

/* ---- element-wise steps ------------------------------------------------------------------ */

static void cpu_get_rows(moe_backend *be, const moe_weight *w, const int32_t *ids, int32_t T,
                         float *out) {
    (void)be;
    const moe_type_traits *tr = moe_type_get(w->type);
    for (int32_t t = 0; t < T; t++)
        tr->to_f32(w->data + (uint64_t)ids[t] * w->row_bytes, out + t * w->ne[0], w->ne[0], 1);
}

static void cpu_add_bias(moe_backend *be, float *x, const moe_weight *b, int64_t T, int64_t n) {
    (void)be;
    const float *bias = moe_weight_f32(b);
    for (int64_t t = 0; bias && t < T; t++)
        moe_cpu_add_bias(x + t * n, bias, n);
}

static void cpu_add_gated(moe_backend *be, float *x, const float *y, const float *gate,
                          int64_t T, int64_t n) {
    (void)be;
    for (int64_t t = 0; t < T; t++) {
        float g = 1.0f;
        if (gate) { /* llama.cpp computes this sigmoid as silu(v)/v */
            const float v = gate[t];
            g = v / (1.0f + expf(-v)) / v;
        }
        for (int64_t i = 0; i < n; i++)
            x[t * n + i] += g * y[t * n + i];
    }
}

static void cpu_mla_kv(moe_backend *be, const float *kv, const float *kpe, int64_t kpe_stride,
                       int64_t T, int64_t H, int64_t nope, int64_t n_rope, int64_t dv, float *k,
                       float *v) {
    (void)be;
    const int64_t dk = nope + n_rope;
    for (int64_t t = 0; t < T; t++) {
        const float *kvt = kv + t * H * (nope + dv), *pe = kpe + t * kpe_stride;
        float *kt = k + t * H * dk, *vt = v + t * H * dv;
        for (int64_t h = 0; h < H; h++) {
            memcpy(kt + h * dk, kvt + h * (nope + dv), (size_t)nope * sizeof(float));
            memcpy(kt + h * dk + nope, pe, (size_t)n_rope * sizeof(float));
            memcpy(vt + h * dv, kvt + h * (nope + dv) + nope, (size_t)dv * sizeof(float));
        }
    }
}

static void cpu_copy_runs(moe_backend *be, float *dst, int64_t dst_a, int64_t dst_b,
                          const float *src, int64_t src_a, int64_t src_b, int64_t na, int64_t nb,
                          int64_t n) {
    (void)be;
    for (int64_t a = 0; a < na; a++)
        for (int64_t b = 0; b < nb; b++)
            memcpy(dst + a * dst_a + b * dst_b, src + a * src_a + b * src_b,
                   (size_t)n * sizeof(float));
}

/* ---- memory: plain host memory, copies are memcpy ------------------------------------------ */

static void *cpu_alloc(moe_backend *be, size_t bytes) {
    (void)be;
    return malloc(bytes ? bytes : 1);
}

static void cpu_free(moe_backend *be, void *p) {
    (void)be;
    free(p);
}

static void cpu_copy(moe_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    memcpy(dst, src, bytes);
}

static void cpu_synchronize(moe_backend *be) { (void)be; }

/* The members CPU and CPU1 share: the same kernels and plain host memory. */
#define MOE_CPU_OPS_COMMON                                                                      \
    .host_memory = true, .interleaved = true, .supports_weight = cpu_supports_weight,           \
    .alloc = cpu_alloc, .free = cpu_free, .upload = cpu_copy, .download = cpu_copy,             \
    .synchronize = cpu_synchronize, .mul_mat = cpu_matmul, .mul_mat_n = cpu_matmul_n, \
    .experts = cpu_experts,              \
    .experts_combine = moe_cpu_experts_combine, .ffn = cpu_ffn, .route = cpu_route,           \
    .rms_norm = cpu_rms_norm, .rope = cpu_rope,                                                 \
    .attention = moe_cpu_attention_ref, .kv_shift = cpu_kv_shift, .get_rows = cpu_get_rows,     \
    .add_bias = cpu_add_bias, .add_gated = cpu_add_gated, .mla_kv = cpu_mla_kv,             \
    .copy_runs = cpu_copy_runs

static const moe_backend_ops cpu_ops = {
    .name = "CPU",
    .bind_weight = cpu_bind_weight,
    MOE_CPU_OPS_COMMON,
};

const moe_backend_ops *moe_backend_cpu(void) { return &cpu_ops; }

/* ---- CPU1: a second CPU device with memory of its own ----------------------------------------
 * The same kernels as CPU, but every weight placed on it is copied into
 * memory CPU1 owns at load, and activations reach it only through the
 * graph's explicit copies: the split, copy and synchronisation logic of the
 * scheduler runs (and is tested) on machines without a GPU. Any placement
 * over CPU and CPU1 gives the single-device logits bit for bit. */

static moe_status cpu1_bind_weight(moe_backend *be, moe_weight *w, moe_err *err) {
    const uint64_t bytes = w->expert_bytes * (uint64_t)(w->ne[2] * w->ne[3]);
    void *copy = malloc(bytes ? bytes : 1);
    MOE_FAIL_IF(!copy, err, MOE_ERR_NOMEM, "out of memory copying tensor '%s' (%.1f MiB) to CPU1",
                w->name, (double)bytes / 1048576.0);
    memcpy(copy, w->data, bytes);
    w->data = copy;
    moe_status st = w->ne[1] == 1 ? MOE_OK /* 1-D weights: F32 values for the graph */
                                  : cpu_bind_weight(be, w, err);
    w->dev = copy; /* after the CPU's binding, which clears it: unbind frees it */
    return st;
}

static void cpu1_unbind_weight(moe_weight *w) {
    free(w->dev);
    w->dev = NULL;
    w->data = NULL;
}

static const moe_backend_ops cpu1_ops = {
    .name = "CPU1",
    .bind_weight = cpu1_bind_weight,
    .unbind_weight = cpu1_unbind_weight,
    MOE_CPU_OPS_COMMON,
};

const moe_backend_ops *moe_backend_cpu1(void) { return &cpu1_ops; }

/* ---- the reference routed experts -------------------------------------------------------- */

void moe_cpu_experts_ref(moe_backend *be, const moe_expert_step *st) {
    const int64_t D = st->gate->ne[0], F = st->gate->ne[1], E = st->gate->ne[2], K = st->K;
    const int32_t T = st->T;
    for (int64_t e = 0; e < E; e++) {
        int64_t n = 0;
        /* slot-major: the observer's sums (llama-imatrix's) add an expert's
         * rows all first choices first, each slot in token order; each row's
         * product is independent of where it sits */
        for (int64_t k = 0; k < K; k++)
            for (int32_t t = 0; t < T; t++)
                if (st->ids[t * K + k] == e) {
                    be->members[n] = (int32_t)(t * K + k);
                    memcpy(be->xe + n * D, st->x + t * D, (size_t)D * sizeof(float));
                    n++;
                }
        if (!n)
            continue;
        observe(st->observer, st->observer_user, st->gate, e, be->xe, n);
        moe_cpu_matmul(st->gate, e, be->xe, n, be->ge, be->scratch, be->n_threads, MOE_DOT_VEC);
        observe(st->observer, st->observer_user, st->up, e, be->xe, n);
        moe_cpu_matmul(st->up, e, be->xe, n, be->ue, be->scratch, be->n_threads, MOE_DOT_VEC);
        if (st->lora) {
            moe_lora_rows(st->lora, st->lora->gate, e, be->xe, n, D, F, be->ge, be->n_threads);
            moe_lora_rows(st->lora, st->lora->up, e, be->xe, n, D, F, be->ue, be->n_threads);
        }
        silu_mul(be->ge, be->ue, n, F);
        observe(st->observer, st->observer_user, st->down, e, be->ge, n);
        moe_cpu_matmul(st->down, e, be->ge, n, be->oe, be->scratch, be->n_threads, MOE_DOT_VEC);
        if (st->lora)
            moe_lora_rows(st->lora, st->lora->down, e, be->ge, n, F, D, be->oe, be->n_threads);
        float *slots = st->slots ? st->slots : be->slot_out;
        for (int64_t i = 0; i < n; i++)
            memcpy(slots + (int64_t)be->members[i] * D, be->oe + i * D,
                   (size_t)D * sizeof(float));
    }
    if (!st->slots) /* a split sums every device's slots later */
        moe_cpu_experts_combine(be, be->slot_out, st->w, T, K, D, st->out);
}

void moe_cpu_experts_combine(moe_backend *be, const float *slots, const float *w, int64_t T,
                             int64_t K, int64_t D, float *out) {
    (void)be;
    for (int64_t t = 0; t < T; t++) {
        float *o = out + t * D;
        const float *wt = w + t * K;
        for (int64_t d = 0; d < D; d++)
            o[d] = slots[(t * K) * D + d] * wt[0];
        for (int64_t k = 1; k < K; k++)
            for (int64_t d = 0; d < D; d++)
                o[d] += slots[(t * K + k) * D + d] * wt[k];
    }
}
