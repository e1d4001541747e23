/* The fast CPU products: activations quantized once per product to the
 * weight's activation format, then the level's kernel over rows split
 * between threads; and the routed-expert step fused into one parallel region
 * (route -> group tokens by expert -> gate and up of every chosen expert ->
 * SiLU·mul -> down -> weighted sum), in which threads take (expert, row
 * range) units so that no two threads write the same rows and an expert no
 * token chose costs nothing. */
#include <string.h>

#include "runtime/cpu/cpu_backend.h"
#include "runtime/cpu/kernels.h"
#include "runtime/cpu_ops.h"

static const moe_cpu_kernel_table *table(void) { return moe_cpu_kernels(moe_cpu_level_active()); }

/* Expert products take the VEC summation order where a type has one. */
static moe_mm_fn mm_vec(const moe_cpu_kernel *k) { return k->mm_vec ? k->mm_vec : k->mm; }

/* Rows in a work unit of a product of n rows (units of R rows): about
 * UNITS_PER_THREAD units per thread, taken dynamically, so that a thread that
 * streams faster takes more (with two fixed halves per product, the worker
 * thread of a 2-thread decode waited 24% of its time for the master, which
 * also takes the interrupts); whole STRIP_ROWS strips, so that every row goes
 * through the same kernel (512-bit strips or the 256-bit rest) whatever the
 * thread count. */
enum { UNITS_PER_THREAD = 4, STRIP_ROWS = 16 };

static int64_t unit_rows(int64_t n, int64_t R, int64_t want_units) {
    const int64_t q = STRIP_ROWS % R == 0 ? STRIP_ROWS : R; /* R is 1, 4 or 8 */
    int64_t rows = (n + want_units - 1) / want_units;
    rows = (rows + q - 1) / q * q;
    return rows < n ? rows : n;
}

void moe_cpu_matmul_fast(moe_backend *be, const moe_weight *w, int64_t e, const float *x,
                         int64_t T, float *y, moe_dot_order order) {
    const moe_cpu_kernel *kern = w->kern;
    /* llama.cpp: tinyBLAS for batched dense products, vec_dot otherwise */
    const int64_t n_in = w->ne[0], n_out = w->ne[1];
    const moe_mm_fn mm =
        order == MOE_DOT_GEMM && moe_gemm_order(w->type, n_out, T) ? kern->mm : mm_vec(kern);
    const uint64_t as = moe_act_row_bytes(kern->act, n_in);
    const moe_act_quantize_fn quantize = table()->quantize[kern->act];
    const uint8_t *base = w->data + (uint64_t)e * w->expert_bytes;
    uint8_t *act = be->act;
    int nth = be->n_threads < 1 ? 1 : be->n_threads;
    if (nth > n_out / kern->rows)
        nth = (int)(n_out / kern->rows > 0 ? n_out / kern->rows : 1);
    const int64_t rows = unit_rows(n_out, kern->rows, (int64_t)UNITS_PER_THREAD * nth);
    const int64_t n_units = (n_out + rows - 1) / rows;
#pragma omp parallel num_threads(nth)
    {
#pragma omp for schedule(static)
        for (int64_t t = 0; t < T; t++)
            quantize(x + t * n_in, act + (uint64_t)t * as, n_in);
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < n_units; u++) {
            const int64_t r0 = u * rows, r1 = r0 + rows < n_out ? r0 + rows : n_out;
            mm(base, w->row_bytes, n_in, r0, r1, act, as, T, y, n_out);
        }
    }
}

/* ---- the fused routed-expert step -------------------------------------------------------------- */

/* Work units of one phase: active expert a (of n_act) and row chunk c. */
typedef struct units {
    int64_t n_chunks, chunk_rows;
} units;

static units plan_units(int64_t rows, int64_t R, int64_t n_act, int nth) {
    const int64_t want = (UNITS_PER_THREAD * (int64_t)nth + n_act - 1) / n_act; /* enough to balance */
    units u;
    u.chunk_rows = unit_rows(rows, R, want < 1 ? 1 : want);
    u.n_chunks = (rows + u.chunk_rows - 1) / u.chunk_rows;
    return u;
}

/* The expert whose group of positions holds p (groups follow active order). */
static int32_t expert_at(const int32_t *active, const int32_t *offset, int64_t n_act, int64_t p) {
    int64_t lo = 0, hi = n_act - 1;
    while (lo < hi) {
        const int64_t mid = (lo + hi + 1) / 2;
        if (offset[active[mid]] <= p)
            lo = mid;
        else
            hi = mid - 1;
    }
    return active[lo];
}

/* The applied adapters' terms ms (lora.h) of expert e on one row. */
static void lora_one(const moe_lora_ffn *l, const moe_lora_mat *ms, int64_t e, const float *x,
                     int64_t n_in, int64_t n_out, float *y, float *tmp) {
    for (int32_t i = 0; i < l->n; i++)
        if (ms[i].a)
            moe_lora_row(&ms[i], e, x, n_in, n_out, y, tmp);
}

bool moe_cpu_experts_fast_ok(const moe_expert_step *st) {
    const moe_weight *g = st->gate, *u = st->up, *d = st->down;
    return g->kern && u->kern && d->kern && g->kern->act == u->kern->act;
}

/* Gate's and up's input rows of each active expert, gathered into xe (T*D
 * floats: an expert takes a token at most once), to the observer. */
static void observe_inputs(const moe_expert_step *st, const int32_t *active, int64_t n_act,
                           const int32_t *offset, const int32_t *count, const int32_t *pos_tok,
                           float *xe) {
    const int64_t D = st->gate->ne[0];
    for (int64_t a = 0; a < n_act; a++) {
        const int32_t e = active[a];
        for (int32_t i = 0; i < count[e]; i++)
            memcpy(xe + (int64_t)i * D, st->x + (int64_t)pos_tok[offset[e] + i] * D,
                   (size_t)D * sizeof *xe);
        st->observer(st->observer_user, st->gate->name, e, xe, D, count[e]);
        st->observer(st->observer_user, st->up->name, e, xe, D, count[e]);
    }
}

void moe_cpu_experts_fast(moe_backend *be, const moe_expert_step *st) {
    const moe_weight *gate = st->gate, *up = st->up, *down = st->down;
    const int64_t D = gate->ne[0], F = gate->ne[1], E = gate->ne[2], K = st->K;
    const int32_t T = st->T;
    const int64_t TK = (int64_t)T * K;
    /* group the T*K slots by expert, slot-major inside an expert (first
     * choices in token order, then second ones...): the order the observer's
     * sums need (moe.h); no row's product depends on where it sits */
    int32_t *count = be->e_count, *offset = be->e_offset, *active = be->e_active;
    int32_t *slot_pos = be->slot_pos, *pos_tok = be->pos_tok;
    memset(count, 0, (size_t)E * sizeof *count);
    for (int64_t s = 0; s < TK; s++)
        if (st->ids[s] >= 0) /* < 0: a slot another device computes */
            count[st->ids[s]]++;
    int64_t n_act = 0;
    for (int64_t e = 0, off = 0; e < E; e++) {
        offset[e] = (int32_t)off;
        off += count[e];
        if (count[e])
            active[n_act++] = (int32_t)e;
    }
    for (int64_t e = 0; e < E; e++)
        count[e] = 0;
    int64_t n_pos = 0; /* slots computed here */
    for (int64_t k = 0; k < K; k++)
        for (int32_t t = 0; t < T; t++) {
            const int64_t s = (int64_t)t * K + k;
            const int32_t e = st->ids[s];
            if (e < 0) {
                slot_pos[s] = -1;
                continue;
            }
            const int32_t p = offset[e] + count[e]++;
            slot_pos[s] = p;
            pos_tok[p] = t;
            n_pos++;
        }
    if (st->observer)
        observe_inputs(st, active, n_act, offset, count, pos_tok, be->xe);
    const moe_cpu_kernel_table *tab = table();
    const uint64_t ax = moe_act_row_bytes(gate->kern->act, D);
    const uint64_t ad = moe_act_row_bytes(down->kern->act, F);
    uint8_t *act_x = be->act, *act_g = act_x + (uint64_t)T * ax;
    uint8_t *act_d = act_g + (uint64_t)TK * ax;
    float *g = be->fg, *u = be->fu, *o = be->slot_out;
    const units gu = plan_units(F, gate->kern->rows > up->kern->rows ? gate->kern->rows : up->kern->rows,
                                n_act, be->n_threads);
    const units du = plan_units(D, down->kern->rows, n_act, be->n_threads);
    const int nth = be->n_threads < 1 ? 1 : be->n_threads;
    const int32_t T_sum = st->slots ? 0 : T; /* rows summed here (a split sums later) */
    const int64_t TK_slots = st->slots ? TK : 0;
#pragma omp parallel num_threads(nth)
    {
#pragma omp for schedule(static)
        for (int32_t t = 0; t < T; t++)
            tab->quantize[gate->kern->act](st->x + (int64_t)t * D, act_x + (uint64_t)t * ax, D);
#pragma omp for schedule(static)
        for (int64_t p = 0; p < n_pos; p++)
            memcpy(act_g + (uint64_t)p * ax, act_x + (uint64_t)pos_tok[p] * ax, ax);
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < n_act * gu.n_chunks; i++) {
            const int32_t e = active[i / gu.n_chunks];
            const int64_t r0 = i % gu.n_chunks * gu.chunk_rows;
            const int64_t r1 = r0 + gu.chunk_rows < F ? r0 + gu.chunk_rows : F;
            const uint8_t *a = act_g + (uint64_t)offset[e] * ax;
            mm_vec(gate->kern)(gate->data + (uint64_t)e * gate->expert_bytes, gate->row_bytes, D, r0,
                           r1, a, ax, count[e], g + (int64_t)offset[e] * F, F);
            mm_vec(up->kern)(up->data + (uint64_t)e * up->expert_bytes, up->row_bytes, D, r0, r1, a,
                         ax, count[e], u + (int64_t)offset[e] * F, F);
        }
#pragma omp for schedule(static)
        for (int64_t p = 0; p < n_pos; p++) {
            float *gp = g + p * F, *up_row = u + p * F;
            if (st->lora) { /* fused: the low-rank terms of gate and up, before SiLU·mul */
                const int32_t e = expert_at(active, offset, n_act, p);
                const float *xt = st->x + (int64_t)pos_tok[p] * D;
                float *tmp = st->lora->tmp + p * st->lora->r_max;
                lora_one(st->lora, st->lora->gate, e, xt, D, F, gp, tmp);
                lora_one(st->lora, st->lora->up, e, xt, D, F, up_row, tmp);
            }
            moe_cpu_silu(gp, F);
            for (int64_t i = 0; i < F; i++)
                gp[i] *= up_row[i];
            tab->quantize[down->kern->act](gp, act_d + (uint64_t)p * ad, F);
        }
        if (st->observer) { /* the SwiGLU rows, on the decoding thread (moe.h) */
#pragma omp master
            for (int64_t a = 0; a < n_act; a++)
                st->observer(st->observer_user, down->name, active[a],
                             g + (int64_t)offset[active[a]] * F, F, count[active[a]]);
#pragma omp barrier
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < n_act * du.n_chunks; i++) {
            const int32_t e = active[i / du.n_chunks];
            const int64_t r0 = i % du.n_chunks * du.chunk_rows;
            const int64_t r1 = r0 + du.chunk_rows < D ? r0 + du.chunk_rows : D;
            mm_vec(down->kern)(down->data + (uint64_t)e * down->expert_bytes, down->row_bytes, F, r0,
                           r1, act_d + (uint64_t)offset[e] * ad, ad, count[e],
                           o + (int64_t)offset[e] * D, D);
        }
#pragma omp for schedule(static)
        for (int64_t s = 0; s < TK_slots; s++) /* a split: the slots, unweighted */
            if (slot_pos[s] >= 0)
                memcpy(st->slots + s * D, o + (int64_t)slot_pos[s] * D, (size_t)D * sizeof *o);
#pragma omp for schedule(static)
        for (int32_t t = 0; t < T_sum; t++) {
            float *out = st->out + (int64_t)t * D;
            const float *wt = st->w + (int64_t)t * K;
            for (int64_t k = 0; st->lora && k < K; k++) { /* fused: down's terms */
                const int64_t p = slot_pos[(int64_t)t * K + k];
                lora_one(st->lora, st->lora->down, st->ids[(int64_t)t * K + k], g + p * F, F, D,
                         o + p * D, st->lora->tmp + p * st->lora->r_max);
            }
            const float *o0 = o + (int64_t)slot_pos[(int64_t)t * K] * D;
            for (int64_t d = 0; d < D; d++)
                out[d] = o0[d] * wt[0];
            for (int64_t k = 1; k < K; k++) {
                const float *ok = o + (int64_t)slot_pos[(int64_t)t * K + k] * D;
                for (int64_t d = 0; d < D; d++)
                    out[d] += ok[d] * wt[k];
            }
        }
    }
}
