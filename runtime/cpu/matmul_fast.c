/* The fast CPU products: activations quantized once per product to the
 * weight's activation format, then the level's kernel over rows split
 * between threads; and the routed-expert step fused into one parallel region
 * (route -> group tokens by expert -> gate and up of every chosen expert ->
 * SiLU·mul -> down -> weighted sum), in which threads take (expert, row
 * range) units so that no two threads write the same rows and an expert no
 * token chose costs nothing. */
#include <assert.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "runtime/cpu/cpu_backend.h"
#include "runtime/cpu/kernels.h"
#include "runtime/cpu/work_ranges.h"
#include "runtime/cpu_ops.h"

/* The calling thread's number in its team (0 outside one, or without OpenMP). */
#ifdef _OPENMP
static inline int team_thread(void) { return omp_get_thread_num(); }
#else
static inline int team_thread(void) { return 0; }
#endif

static const moe_cpu_kernel_table *table(void) { return moe_cpu_kernels(moe_cpu_level_active()); }

/* Expert products take the VEC summation order where a type has one. */
static moe_mm_fn mm_vec(const moe_cpu_kernel *k) { return k->mm_vec ? k->mm_vec : k->mm; }

/* Rows in a work unit of a batch's product of n rows (units of R rows): about
 * UNITS_PER_THREAD units per thread, taken dynamically, so that a thread that
 * computes faster takes more (with two fixed halves per product, the worker
 * thread of a 2-thread decode waited 24% of its time for the master, which
 * also takes the interrupts); whole STRIP_ROWS strips, so that every row goes
 * through the same kernel (512-bit strips or the 256-bit rest) whatever the
 * thread count. One token's products, memory streams, go by contiguous
 * ranges instead (ONE_UNIT_ROWS below). */
enum { UNITS_PER_THREAD = 4, STRIP_ROWS = 16 };

/* One token's products go by contiguous ranges (work_ranges.h) in units of
 * ONE_UNIT_ROWS rows (whole strips of every kernel, so the same bits whatever
 * the split), a call taking at least ONE_MIN_ROWS: the one-token kernels read
 * a call's rows as eight streams. Against units from one shared counter,
 * alternating every token in one process (tg128, benchmark shape, 2
 * threads, each path on odd and even tokens alike): q, k, v, attn_output and
 * the output head 3.43 -> 2.73 and 3.74 -> 3.08 ms per token for Q4_0_R8,
 * 3.10 -> 2.82 Q4_0, 3.46 -> 3.12 IQ4_NL_R4, 3.62 -> 2.96 Q4_K_R4; the
 * routed-expert step: no change resolved (-4..+4%). */
enum { ONE_UNIT_ROWS = STRIP_ROWS, ONE_MIN_ROWS = 64 };
_Static_assert(ONE_UNIT_ROWS % 8 == 0 && ONE_UNIT_ROWS % 4 == 0, "units of whole groups and strips");

/* Chunk [u0, u1) of units of unit_rows rows (work_ranges.h) as rows [*r0,
 * *r1) of its segment (a product, an expert) of n rows; returns the segment. */
static int64_t chunk_rows(const moe_work_segments *seg, int64_t u0, int64_t u1, int64_t unit_rows,
                          int64_t n, int64_t *r0, int64_t *r1) {
    int64_t first;
    const int64_t i = moe_work_segment(seg, u0, &first);
    *r0 = (u0 - first) * unit_rows;
    *r1 = (u1 - first) * unit_rows < n ? (u1 - first) * unit_rows : n;
    return i;
}

static int64_t strip_rows(int64_t R) { return STRIP_ROWS % R == 0 ? STRIP_ROWS : R; } /* R: 1, 4, 8 */

/* ... in whole multiples of q rows (a multiple of strip_rows). */
static int64_t unit_rows_of(int64_t n, int64_t q, int64_t want_units) {
    int64_t rows = (n + want_units - 1) / want_units;
    rows = (rows + q - 1) / q * q;
    return rows < n ? rows : n;
}

/* The units of one row range (a product's rows, or an expert's) of n rows:
 * its head [0, head) in n_big units of big rows, then its tail [head, n) in
 * n_small units of small rows, all multiples of q (a multiple of
 * strip_rows). A phase queues every range's big units before any small one,
 * so the last unit a thread takes is small and the threads run out of work
 * together: with equal units of an eighth of a product per thread, the
 * output head's last unit alone was 4 MB (~100 us of one thread waiting). */
typedef struct split {
    int64_t head, big, n_big, small, n_small;
} split;

enum { TAIL_PART = 8, SMALL_PER_THREAD = 4 }; /* an eighth of the rows, in small units */

/* A range of n rows, one of m that share a phase of nth threads. */
static split plan_split(int64_t n, int64_t q, int64_t m, int nth) {
    split s;
    const int64_t want_big = (UNITS_PER_THREAD * (int64_t)nth + m - 1) / m;
    const int64_t want_small = (SMALL_PER_THREAD * (int64_t)nth + m - 1) / m;
    s.head = n / TAIL_PART * (TAIL_PART - 1) / q * q; /* 0 when n is a few q */
    s.big = s.head ? unit_rows_of(s.head, q, want_big) : 1;
    s.n_big = s.head ? (s.head + s.big - 1) / s.big : 0;
    s.small = unit_rows_of(n - s.head, q, want_small);
    s.n_small = (n - s.head + s.small - 1) / s.small;
    return s;
}

/* Rows [r0, r1) of unit k (< n_big + n_small) of a range of n rows. */
static void split_unit(const split *s, int64_t n, int64_t k, int64_t *r0, int64_t *r1) {
    if (k < s->n_big) {
        *r0 = k * s->big;
        *r1 = *r0 + s->big < s->head ? *r0 + s->big : s->head;
    } else {
        *r0 = s->head + (k - s->n_big) * s->small;
        *r1 = *r0 + s->small < n ? *r0 + s->small : n;
    }
}

/* One product's share of a pass: its kernel, rows and work units (its big
 * ones from first_big in the big queue, its small ones from first_small). */
typedef struct product_plan {
    moe_mm_fn mm;
    const uint8_t *base;
    uint64_t row_bytes;
    int64_t n_out, first_big, first_small;
    split sp;
    float *y;
} product_plan;

bool moe_cpu_matmul_fast_n_ok(const moe_weight *const *ws, int n) {
    for (int i = 0; i < n; i++)
        if (!ws[i]->kern || ws[i]->kern->act != ws[0]->kern->act || ws[i]->ne[0] != ws[0]->ne[0])
            return false;
    return n >= 1 && n <= MOE_MATMUL_N_MAX;
}

void moe_cpu_matmul_fast_n(moe_backend *be, const moe_weight *const *ws, int n, const float *x,
                           int64_t T, float *const *ys, moe_dot_order order) {
    const moe_cpu_kernel *k0 = ws[0]->kern;
    const int64_t n_in = ws[0]->ne[0];
    const uint64_t as = moe_act_row_bytes(k0->act, n_in);
    const moe_act_quantize_fn quantize = table()->quantize[k0->act];
    uint8_t *act = be->act;
    int64_t strips = 0; /* the most threads with a pass of rows each */
    for (int i = 0; i < n; i++)
        strips += ws[i]->ne[1] / ws[i]->kern->rows;
    int nth = be->n_threads < 1 ? 1 : be->n_threads;
    if (nth > strips)
        nth = (int)(strips > 0 ? strips : 1);
    product_plan pp[MOE_MATMUL_N_MAX + 1];
    int64_t n_big = 0, n_small = 0;
    for (int i = 0; i < n; i++) {
        const moe_weight *w = ws[i];
        const moe_cpu_kernel *kern = w->kern;
        /* llama.cpp: tinyBLAS for batched dense products, vec_dot otherwise */
        pp[i].mm = order == MOE_DOT_GEMM && moe_gemm_order(w->type, w->ne[1], T) ? kern->mm
                                                                                 : mm_vec(kern);
        pp[i].base = w->data;
        pp[i].row_bytes = w->row_bytes;
        pp[i].n_out = w->ne[1];
        pp[i].sp = plan_split(w->ne[1], strip_rows(kern->rows), n, nth);
        pp[i].first_big = n_big;
        pp[i].first_small = n_small;
        pp[i].y = ys[i];
        n_big += pp[i].sp.n_big;
        n_small += pp[i].sp.n_small;
    }
    pp[n].first_big = n_big;
    pp[n].first_small = n_small;
    /* one token: every thread quantizes it into a row of its own and starts
     * on its units at once (a shared row would wait for one thread at a
     * barrier, ~1.5 us on the 2-vCPU host, before every product) */
    const bool own_row = T == 1 && (uint64_t)nth * as <= be->act_bytes;
    /* one token: each thread walks a contiguous range of the products' units
     * (a batch's tiles are compute: they keep the dynamic queue) */
    const bool by_range = T == 1;
    int64_t seg_start[MOE_MATMUL_N_MAX + 1] = {0};
    if (by_range) {
        for (int i = 0; i < n; i++) {
            assert(ONE_UNIT_ROWS % ws[i]->kern->rows == 0); /* a unit of whole groups */
            seg_start[i + 1] = seg_start[i] + (ws[i]->ne[1] + ONE_UNIT_ROWS - 1) / ONE_UNIT_ROWS;
        }
        moe_work_deal(be->ranges, nth, seg_start[n]);
    }
#pragma omp parallel num_threads(nth)
    {
        const uint8_t *a_t = act;
        if (own_row) {
            uint8_t *mine = act + (uint64_t)team_thread() * as;
            quantize(x, mine, n_in);
            a_t = mine;
        } else {
#pragma omp for schedule(static)
            for (int64_t t = 0; t < T; t++)
                quantize(x + t * n_in, act + (uint64_t)t * as, n_in);
        }
        if (by_range) {
            const moe_work_segments seg = {.seg_start = seg_start, .n_seg = n};
            int64_t u0, u1;
            while (moe_work_take(be->ranges, nth, team_thread(), ONE_MIN_ROWS / ONE_UNIT_ROWS,
                                 &seg, &u0, &u1)) {
                int64_t r0, r1;
                const product_plan *p =
                    &pp[chunk_rows(&seg, u0, u1, ONE_UNIT_ROWS, INT64_MAX, &r0, &r1)];
                p->mm(p->base, p->row_bytes, n_in, r0, r1 < p->n_out ? r1 : p->n_out, a_t, as, T,
                      p->y, p->n_out);
            }
        } else {
#pragma omp for schedule(dynamic, 1)
            for (int64_t u = 0; u < n_big + n_small; u++) {
                const bool big = u < n_big;
                const int64_t v = big ? u : u - n_big; /* in its queue */
                int i = 0;
                while (v >= (big ? pp[i + 1].first_big : pp[i + 1].first_small))
                    i++;
                const product_plan *p = &pp[i];
                int64_t r0, r1;
                split_unit(&p->sp, p->n_out,
                           big ? v - p->first_big : p->sp.n_big + v - p->first_small, &r0, &r1);
                p->mm(p->base, p->row_bytes, n_in, r0, r1, a_t, as, T, p->y, p->n_out);
            }
        }
    }
}

void moe_cpu_matmul_fast(moe_backend *be, const moe_weight *w, int64_t e, const float *x,
                         int64_t T, float *y, moe_dot_order order) {
    if (e == 0) {
        moe_cpu_matmul_fast_n(be, &w, 1, x, T, &y, order);
        return;
    }
    moe_weight one = *w; /* an expert's matrix of a 3-D weight: a 2-D weight of its own */
    one.data = w->data + (uint64_t)e * w->expert_bytes;
    const moe_weight *wp = &one;
    moe_cpu_matmul_fast_n(be, &wp, 1, x, T, &y, order);
}

/* ---- the fused routed-expert step -------------------------------------------------------------- */

/* Work units of one phase: active expert a (of n_act) and row chunk c. */
typedef struct units {
    int64_t n_chunks, chunk_rows;
} units;

/* Chunks in multiples of q rows (a multiple of strip_rows). */
static units plan_units(int64_t rows, int64_t q, int64_t n_act, int nth) {
    const int64_t want = (UNITS_PER_THREAD * (int64_t)nth + n_act - 1) / n_act; /* enough to balance */
    units u;
    u.chunk_rows = unit_rows_of(rows, q, want < 1 ? 1 : want);
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

/* out[d] = sum over k of w[k] * the output of slot k (at o + pos[k] * D), in
 * slot order, for d in [d0, d1): the routed experts' weighted sum. */
static void sum_slots(const float *o, const int32_t *pos, const float *w, int64_t K, int64_t D,
                      int64_t d0, int64_t d1, float *out) {
    const float *o0 = o + (int64_t)pos[0] * D;
    for (int64_t d = d0; d < d1; d++)
        out[d] = o0[d] * w[0];
    for (int64_t k = 1; k < K; k++) {
        const float *ok = o + (int64_t)pos[k] * D;
        for (int64_t d = d0; d < d1; d++)
            out[d] += ok[d] * w[k];
    }
}

/* Whether one token's step can run as experts_one_token: no adapter terms,
 * no observer, its own sum (not a split), and a quantized x row for every
 * thread in the room of the K gathered rows. */
static bool one_token_ok(const moe_expert_step *st, int nth) {
    return st->T == 1 && !st->lora && !st->observer && !st->slots && nth <= st->K;
}

/* Rows [r0, r1) of expert e's gate and up for one token (xq), SiLU(gate)·up
 * into g's rows, quantized for down into act_d at r0 (whole blocks of its
 * format). */
static void gate_up_rows(const moe_weight *gate, const moe_weight *up, const moe_weight *down,
                         int32_t e, int64_t r0, int64_t r1, const uint8_t *xq, uint64_t ax,
                         float *g, float *u, uint8_t *act_d, moe_act_quantize_fn quantize_d) {
    const int64_t D = gate->ne[0], F = gate->ne[1];
    mm_vec(gate->kern)(gate->data + (uint64_t)e * gate->expert_bytes, gate->row_bytes, D, r0, r1,
                       xq, ax, 1, g, F);
    mm_vec(up->kern)(up->data + (uint64_t)e * up->expert_bytes, up->row_bytes, D, r0, r1, xq, ax,
                     1, u, F);
    moe_cpu_silu(g + r0, r1 - r0);
    for (int64_t r = r0; r < r1; r++)
        g[r] *= u[r];
    quantize_d(g + r0, act_d + moe_act_row_bytes(down->kern->act, r0), r1 - r0);
}

/* The step for one token (decoding) in three hand-overs instead of seven:
 * each thread quantizes x into a row of its own (no gathering: the token is
 * every expert's only row); a gate/up chunk also applies SiLU·mul to its rows
 * and quantizes them for down (its units are whole blocks of down's
 * activation format, and so whole 16-value runs: SiLU's vector part,
 * moe_cpu_silu, is the whole row's); the weighted sum is split by output
 * rows, not by tokens. Gate/up and down go by contiguous ranges of the
 * active experts' rows (work_ranges.h), a thread walking whole experts in
 * turn. (Down units that took a range of output rows of all K experts and
 * summed it there, one hand-over fewer, were slower: eight streams at once
 * per thread.) Each value is computed as the general path computes it: the
 * same kernels on the same rows, the same sum. */
static void experts_one_token(moe_backend *be, const moe_expert_step *st, const int32_t *active,
                              int64_t n_act, const int32_t *offset, int nth) {
    const moe_weight *gate = st->gate, *up = st->up, *down = st->down;
    const int64_t D = gate->ne[0], F = gate->ne[1], K = st->K;
    const moe_cpu_kernel_table *tab = table();
    const moe_act_quantize_fn quantize_x = tab->quantize[gate->kern->act];
    const moe_act_quantize_fn quantize_d = tab->quantize[down->kern->act];
    const uint64_t ax = moe_act_row_bytes(gate->kern->act, D);
    const uint64_t ad = moe_act_row_bytes(down->kern->act, F);
    uint8_t *act_x = be->act, *act_d = act_x + (uint64_t)K * ax; /* one x row per thread */
    float *g = be->fg, *u = be->fu, *o = be->slot_out;
    enum { SUM_ROWS = 256 };
    const int64_t n_sum = (D + SUM_ROWS - 1) / SUM_ROWS;
    const moe_mm_fn mm_down = mm_vec(down->kern);
    int32_t pos[MOE_MAX_EXPERTS];
    for (int64_t k = 0; k < K; k++)
        pos[k] = offset[st->ids[k]]; /* an expert takes the token once: its group's first row */
    /* an expert a segment; gate/up in units of qg rows, down of ONE_UNIT_ROWS */
    const int64_t qg = moe_act_block(down->kern->act);
    assert(qg % gate->kern->rows == 0 && qg % up->kern->rows == 0 &&
           ONE_UNIT_ROWS % down->kern->rows == 0); /* units of whole groups */
    const moe_work_segments gu_seg = {.seg_units = (F + qg - 1) / qg};
    const moe_work_segments dn_seg = {.seg_units = (D + ONE_UNIT_ROWS - 1) / ONE_UNIT_ROWS};
    const int64_t gu_min = qg < ONE_MIN_ROWS ? ONE_MIN_ROWS / qg : 1;
    moe_work_range *gu_ranges = be->ranges, *dn_ranges = be->ranges + nth; /* [2][n_threads] */
    moe_work_deal(gu_ranges, nth, n_act * gu_seg.seg_units);
    moe_work_deal(dn_ranges, nth, n_act * dn_seg.seg_units);
#pragma omp parallel num_threads(nth)
    {
        const int me = team_thread();
        uint8_t *xq = act_x + (uint64_t)me * ax;
        quantize_x(st->x, xq, D);
        int64_t u0, u1, r0, r1;
        while (moe_work_take(gu_ranges, nth, me, gu_min, &gu_seg, &u0, &u1)) {
            const int32_t e = active[chunk_rows(&gu_seg, u0, u1, qg, F, &r0, &r1)];
            gate_up_rows(gate, up, down, e, r0, r1, xq, ax, g + (int64_t)offset[e] * F,
                         u + (int64_t)offset[e] * F, act_d + (uint64_t)offset[e] * ad, quantize_d);
        }
#pragma omp barrier
        while (moe_work_take(dn_ranges, nth, me, ONE_MIN_ROWS / ONE_UNIT_ROWS, &dn_seg, &u0, &u1)) {
            const int32_t e = active[chunk_rows(&dn_seg, u0, u1, ONE_UNIT_ROWS, D, &r0, &r1)];
            mm_down(down->data + (uint64_t)e * down->expert_bytes, down->row_bytes, F, r0, r1,
                    act_d + (uint64_t)offset[e] * ad, ad, 1, o + (int64_t)offset[e] * D, D);
        }
#pragma omp barrier
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n_sum; i++) {
            const int64_t d0 = i * SUM_ROWS, d1 = d0 + SUM_ROWS < D ? d0 + SUM_ROWS : D;
            sum_slots(o, pos, st->w, K, D, d0, d1, st->out);
        }
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
    const int64_t R_gu = gate->kern->rows > up->kern->rows ? gate->kern->rows : up->kern->rows;
    const units gu = plan_units(F, strip_rows(R_gu), n_act, be->n_threads);
    const units du = plan_units(D, strip_rows(down->kern->rows), n_act, be->n_threads);
    const int nth = be->n_threads < 1 ? 1 : be->n_threads;
    if (one_token_ok(st, nth) && n_pos == K) {
        experts_one_token(be, st, active, n_act, offset, nth);
        return;
    }
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
            sum_slots(o, slot_pos + (int64_t)t * K, wt, K, D, 0, D, out);
        }
    }
}
