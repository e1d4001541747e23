/* synth_data — random tensor bytes for moe-synth, written straight as blocks.
 *
 * A quantized tensor is a run of block structs (for _Rn types, of interleaved
 * structs covering R rows). We fill each block with random bytes and then
 * overwrite its fp16 scale fields with small positive values chosen so the
 * dequantized weights have a std of about 1/sqrt(n_in): never f32 generation
 * followed by quantization, so a 30B q4_0 model writes at disk speed.
 *
 * Determinism: a tensor is cut into fixed chunks (CHUNK_BYTES rounded down to
 * whole blocks); chunk c of tensor i is a pure function of (seed, i, c). Chunks
 * are generated in parallel into a ring of buffers while one thread writes
 * them out in order, so thread count changes only the speed.
 */
#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "formats/gguf/cursor.h"
#include "formats/quant/fp16.h"
#include "formats/quant/quant_blocks.h"
#include "formats/tools/synth.h"

#define CHUNK_BYTES ((size_t)2 << 20)
#define MAX_SLOTS 32 /* ring of at most 64 MiB */

/* ---- counter-based random numbers -------------------------------------------------- */

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* splitmix64: one add and a mix per 8 bytes, fast enough to outrun a disk */
static inline uint64_t next64(uint64_t *s) {
    *s += 0x9E3779B97F4A7C15ull;
    return mix64(*s);
}

static uint64_t chunk_state(uint64_t seed, uint64_t tensor, uint64_t chunk) {
    uint64_t s = mix64(seed ^ 0x6D6F652D73796E74ull); /* "moe-synt" */
    s = mix64(s + mix64(tensor + 0x1000193ull));
    return mix64(s + mix64(chunk + 0x5851F42D4C957F2Dull));
}

/* ---- block recipes -------------------------------------------------------------------- */

/* One run of fp16 scale fields: `count` consecutive u16 at `off`, each set to
 * sigma * coef * jitter (jitter in [0.75, 1.25] from the field's own random
 * byte). coef = 1 / rms(quant value * sub-scale) for random quant bytes, worked
 * out from each format's dequantization (../shared/spec/quant.md §1), so that
 * rms(weight) ~ sigma. A min field (dmin, m) gets the coefficient that roughly
 * centres the block on 0. */
typedef struct scale_field {
    uint16_t off;
    uint8_t count;
    float coef;
} scale_field;

typedef struct recipe {
    moe_type type;
    size_t unit;            /* bytes of one block struct */
    scale_field f[2];       /* count 0: unused */
    uint16_t i8_off, i8_len; /* int8 quants kept in [-127, 127] (ik's q8 kernels add 127) */
    /* d (field 0) takes a random sign, as llama.cpp's quantizers give it
     * (Q4_0's d = max / -8 has the sign of the block's largest value): for
     * formats without a min field, random quants average off zero (q - 8 of
     * uniform nibbles averages -1/2, the IQ4_NL book -5.9 of 67), and with d
     * always positive every row carried the same offset, the hidden state a
     * large common part, and the router sent every token to the same few
     * experts (Q4_0 benchmark shape: 8-9 of 64 per layer over 32 random
     * tokens, against 59 for Q4_K, whose dmin centres its blocks). */
    bool d_sign;
} recipe;

/* rms of (q - 8), q uniform in 0..15 */
#define C_Q4 (1 / 4.64f)
#define C_Q5 (1 / 9.25f)
#define C_Q8 (1 / 73.6f)
#define C_IQ4NL (1 / 67.4f)
#define C_Q2K (1 / 13.9f)
#define C_Q3K (1 / 43.3f)
#define C_Q4K (1 / 258.0f)
#define C_Q5K (1 / 527.0f)
#define C_Q6K (1 / 1366.0f)
#define C_IQ4XS (1 / 1246.0f)

#define F(st, m, n, c) {(uint16_t)offsetof(st, m), n, c}
#define NOF {0, 0, 0}

static const recipe recipes[] = {
    {MOE_TYPE_Q4_0, sizeof(block_q4_0), {F(block_q4_0, d, 1, C_Q4), NOF}, 0, 0, true},
    {MOE_TYPE_Q4_1, sizeof(block_q4_1),
     {F(block_q4_1, d, 1, C_Q4), F(block_q4_1, m, 1, -7.5f * C_Q4)}, 0, 0, false},
    {MOE_TYPE_Q5_0, sizeof(block_q5_0), {F(block_q5_0, d, 1, C_Q5), NOF}, 0, 0, true},
    {MOE_TYPE_Q5_1, sizeof(block_q5_1),
     {F(block_q5_1, d, 1, C_Q5), F(block_q5_1, m, 1, -15.5f * C_Q5)}, 0, 0, false},
    {MOE_TYPE_Q8_0, sizeof(block_q8_0), {F(block_q8_0, d, 1, C_Q8), NOF},
     offsetof(block_q8_0, qs), MOE_QK, false},
    {MOE_TYPE_IQ4_NL, sizeof(block_iq4_nl), {F(block_iq4_nl, d, 1, C_IQ4NL), NOF}, 0, 0, true},
    {MOE_TYPE_Q2_K, sizeof(block_q2_K),
     {F(block_q2_K, d, 1, C_Q2K), F(block_q2_K, dmin, 1, 1.5f * C_Q2K)}, 0, 0, false},
    {MOE_TYPE_Q3_K, sizeof(block_q3_K), {F(block_q3_K, d, 1, C_Q3K), NOF}, 0, 0, true},
    {MOE_TYPE_Q4_K, sizeof(block_q4_K),
     {F(block_q4_K, d, 1, C_Q4K), F(block_q4_K, dmin, 1, 7.5f * C_Q4K)}, 0, 0, false},
    {MOE_TYPE_Q5_K, sizeof(block_q5_K),
     {F(block_q5_K, d, 1, C_Q5K), F(block_q5_K, dmin, 1, 15.5f * C_Q5K)}, 0, 0, false},
    {MOE_TYPE_Q6_K, sizeof(block_q6_K), {F(block_q6_K, d, 1, C_Q6K), NOF}, 0, 0, true},
    {MOE_TYPE_IQ4_XS, sizeof(block_iq4_xs), {F(block_iq4_xs, d, 1, C_IQ4XS), NOF}, 0, 0, true},
    /* interleaved: d[R] (then dmin[R] where the base has one) lead the struct */
    {MOE_TYPE_Q4_0_R8, sizeof(block_q4_0_r8), {F(block_q4_0_r8, d, 8, C_Q4), NOF}, 0, 0, true},
    {MOE_TYPE_Q8_0_R8, sizeof(block_q8_0_r8), {F(block_q8_0_r8, d, 8, C_Q8), NOF},
     offsetof(block_q8_0_r8, qs), 8 * MOE_QK, false},
    {MOE_TYPE_IQ4_NL_R4, sizeof(block_iq4_nl_r4), {F(block_iq4_nl_r4, d, 4, C_IQ4NL), NOF}, 0,
     0, true},
    {MOE_TYPE_Q5_0_R4, sizeof(block_q5_0_r4), {F(block_q5_0_r4, d, 4, C_Q5), NOF}, 0, 0, true},
    {MOE_TYPE_Q2_K_R4, sizeof(block_q2_K_r4),
     {F(block_q2_K_r4, d, 4, C_Q2K), {8, 4, 1.5f * C_Q2K}}, 0, 0, false},
    {MOE_TYPE_Q3_K_R4, sizeof(block_q3_K_r4), {F(block_q3_K_r4, d, 4, C_Q3K), NOF}, 0, 0, true},
    {MOE_TYPE_Q4_K_R4, sizeof(block_q4_K_r4),
     {F(block_q4_K_r4, d, 4, C_Q4K), {8, 4, 7.5f * C_Q4K}}, 0, 0, false},
    {MOE_TYPE_Q5_K_R4, sizeof(block_q5_K_r4),
     {F(block_q5_K_r4, d, 4, C_Q5K), {8, 4, 15.5f * C_Q5K}}, 0, 0, false},
    {MOE_TYPE_Q6_K_R4, sizeof(block_q6_K_r4), {F(block_q6_K_r4, d, 4, C_Q6K), NOF}, 0, 0, true},
    {MOE_TYPE_IQ4_XS_R8, sizeof(block_iq4_xs_r8), {F(block_iq4_xs_r8, d, 8, C_IQ4XS), NOF}, 0,
     0, true},
};
#undef F
#undef NOF
#define N_RECIPES (sizeof(recipes) / sizeof(recipes[0]))

static const recipe *find_recipe(moe_type t) {
    for (size_t i = 0; i < N_RECIPES; i++)
        if (recipes[i].type == t)
            return &recipes[i];
    return NULL;
}

static bool is_float(moe_type t) {
    return t == MOE_TYPE_F32 || t == MOE_TYPE_F16 || t == MOE_TYPE_BF16;
}

bool synth_type_supported(moe_type t) { return is_float(t) || find_recipe(t) != NULL; }

/* Bytes of the unit a chunk is a whole number of. */
static size_t unit_bytes(moe_type t) {
    const recipe *r = find_recipe(t);
    if (r)
        return r->unit;
    return t == MOE_TYPE_F32 ? 4 : 2;
}

/* ---- generating one chunk ---------------------------------------------------------- */

static float tensor_sigma(const moe_tensor_spec *s) {
    return (float)(1.0 / sqrt((double)(s->ne[0] > 0 ? s->ne[0] : 1)));
}

static void fill_random(uint8_t *p, size_t n, uint64_t *st) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t r = next64(st);
        memcpy(p + i, &r, 8);
    }
    if (i < n) {
        uint64_t r = next64(st);
        memcpy(p + i, &r, n - i);
    }
}

static void gen_quant(const recipe *r, float sigma, uint8_t *p, size_t n, uint64_t *st) {
    fill_random(p, n, st);
    /* 256 jitter levels per field, picked by the random byte already there */
    uint16_t levels[2][256];
    for (int f = 0; f < 2; f++)
        for (int k = 0; k < 256 && r->f[f].count; k++)
            levels[f][k] = moe_f32_to_f16(sigma * r->f[f].coef * (0.75f + 0.5f * (float)k / 255));
    for (size_t u = 0; u + r->unit <= n; u += r->unit) {
        uint8_t *b = p + u;
        for (int f = 0; f < 2; f++)
            for (int j = 0; j < r->f[f].count; j++) {
                uint8_t *q = b + r->f[f].off + 2 * j;
                const uint16_t sign = f == 0 && r->d_sign ? (uint16_t)(q[1] & 0x80) << 8 : 0;
                moe_store_le16(q, levels[f][q[0]] | sign);
            }
        for (int j = 0; j < r->i8_len; j++)
            if (b[r->i8_off + j] == 0x80)
                b[r->i8_off + j] = 0x81;
    }
}

/* Value from a uniform u in [0, 1) for a tensor of the given init kind. */
static inline float init_value(moe_tensor_init init, float amp, float u) {
    float c = 2 * u - 1;
    switch (init) {
    case MOE_INIT_NORM: return 1 + 0.05f * c;
    case MOE_INIT_BIAS: return 0.02f * c;
    default: return amp * c;
    }
}

static void gen_float(moe_type t, const moe_tensor_spec *s, uint8_t *p, size_t n,
                      uint64_t *st) {
    /* uniform in [-a, a] has std a/sqrt(3) */
    const float amp = tensor_sigma(s) * 1.7320508f;
    if (t == MOE_TYPE_F32) {
        for (size_t i = 0; i + 8 <= n; i += 8) {
            uint64_t r = next64(st);
            float v0 = init_value(s->init, amp, (float)(r >> 40) * 0x1p-24f);
            float v1 = init_value(s->init, amp, (float)(r & 0xFFFFFF) * 0x1p-24f);
            moe_store_le32(p + i, moe_f32_to_bits(v0));
            moe_store_le32(p + i + 4, moe_f32_to_bits(v1));
        }
        if (n % 8) {
            uint64_t r = next64(st);
            moe_store_le32(p + n - 4,
                           moe_f32_to_bits(init_value(s->init, amp, (float)(r >> 40) * 0x1p-24f)));
        }
        return;
    }
    for (size_t i = 0; i < n; i += 8) {
        uint64_t r = next64(st);
        for (size_t k = 0; k < 4 && i + 2 * k < n; k++) {
            float u = ((float)((r >> (16 * k)) & 0xFFFF) + 0.5f) * 0x1p-16f;
            float v = init_value(s->init, amp, u);
            moe_store_le16(p + i + 2 * k, t == MOE_TYPE_F16 ? moe_f32_to_f16(v) : moe_f32_to_bf16(v));
        }
    }
}

/* ---- chunk schedule and the pipeline ------------------------------------------------- */

typedef struct chunk {
    size_t tensor;
    uint64_t index; /* chunk number inside the tensor */
    size_t len;
} chunk;

static size_t chunk_size(moe_type t) {
    size_t u = unit_bytes(t);
    return CHUNK_BYTES / u * u;
}

/* Every chunk of every tensor in file order; *out is malloc'd. */
static moe_status list_chunks(const synth_tensor *t, size_t n, chunk **out, size_t *count,
                              moe_err *err) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t cs = chunk_size(t[i].type);
        total += (size_t)((t[i].nbytes + cs - 1) / cs);
    }
    chunk *c = malloc((total ? total : 1) * sizeof(*c));
    MOE_FAIL_IF(!c, err, MOE_ERR_NOMEM, "out of memory for %zu chunks", total);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t cs = chunk_size(t[i].type);
        for (uint64_t off = 0, j = 0; off < t[i].nbytes; off += cs, j++) {
            uint64_t left = t[i].nbytes - off;
            c[k++] = (chunk){.tensor = i, .index = j, .len = (size_t)(left < cs ? left : cs)};
        }
    }
    *out = c;
    *count = total;
    return MOE_OK;
}

static void gen_chunk(const synth_tensor *t, const chunk *c, uint64_t seed, uint8_t *dst) {
    const synth_tensor *ts = &t[c->tensor];
    uint64_t st = chunk_state(seed, c->tensor, c->index);
    const recipe *r = find_recipe(ts->type);
    if (r)
        gen_quant(r, tensor_sigma(ts->spec), dst, c->len, &st);
    else
        gen_float(ts->type, ts->spec, dst, c->len, &st);
}

/* Generators claim chunks in order and fill ring slot (chunk % n_slots); one
 * writer drains the slots in order. Waiting is by short sleeps, not OpenMP
 * barriers: a barrier spins for milliseconds, and the writer spends most of
 * its time in write(), so spinning teammates would burn every core the kernel
 * wants for writeback. */
typedef struct pipeline {
    const synth_tensor *t;
    const chunk *c;
    size_t n_chunks, n_slots;
    uint64_t seed;
    uint8_t *slots;          /* n_slots * CHUNK_BYTES */
    atomic_size_t *ready;    /* per slot: index + 1 of the chunk generated into it */
    atomic_size_t next;      /* next chunk to claim */
    atomic_size_t written;   /* chunks written so far */
    atomic_bool stop;        /* the writer failed */
    moe_gguf_writer *w;
    moe_err *err;
    moe_status st;
} pipeline;

static void nap_us(long us) {
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

static void run_generator(pipeline *p) {
    for (;;) {
        size_t g = atomic_fetch_add(&p->next, 1);
        if (g >= p->n_chunks)
            return;
        /* the slot is free once the chunk n_slots before g is written; the
         * oldest unwritten chunk always has a free slot, so this cannot deadlock */
        while (g >= atomic_load_explicit(&p->written, memory_order_acquire) + p->n_slots) {
            if (atomic_load(&p->stop))
                return;
            nap_us(50);
        }
        size_t slot = g % p->n_slots;
        gen_chunk(p->t, &p->c[g], p->seed, p->slots + slot * CHUNK_BYTES);
        atomic_store_explicit(&p->ready[slot], g + 1, memory_order_release);
    }
}

static void run_writer(pipeline *p) {
    for (size_t g = 0; g < p->n_chunks; g++) {
        size_t slot = g % p->n_slots;
        while (atomic_load_explicit(&p->ready[slot], memory_order_acquire) != g + 1)
            nap_us(20);
        p->st = moe_gguf_writer_write(p->w, p->slots + slot * CHUNK_BYTES, p->c[g].len, p->err);
        if (p->st != MOE_OK) {
            atomic_store(&p->stop, true);
            return;
        }
        atomic_store_explicit(&p->written, g + 1, memory_order_release);
    }
}

/* One thread: generate and write each chunk in turn. */
static void run_serial(pipeline *p) {
    for (size_t g = 0; g < p->n_chunks && p->st == MOE_OK; g++) {
        gen_chunk(p->t, &p->c[g], p->seed, p->slots);
        p->st = moe_gguf_writer_write(p->w, p->slots, p->c[g].len, p->err);
    }
}

#ifdef _OPENMP
static void run_pipeline(pipeline *p, int n_threads) {
    /* n_threads generators plus the writer */
#pragma omp parallel num_threads(n_threads + 1)
    {
        if (omp_get_num_threads() < 2)
            run_serial(p); /* the runtime gave us one thread */
        else if (omp_get_thread_num() == 0)
            run_writer(p);
        else
            run_generator(p);
    }
}
#else
static void run_pipeline(pipeline *p, int n_threads) {
    (void)n_threads;
    (void)run_writer;
    (void)run_generator;
    run_serial(p);
}
#endif

moe_status synth_write_data(moe_gguf_writer *w, const synth_tensor *t, size_t n, uint64_t seed,
                            int n_threads, moe_err *err) {
    if (n_threads < 1)
        n_threads = 1;
    pipeline p = {.t = t, .seed = seed, .w = w, .err = err, .st = MOE_OK};
    chunk *c = NULL;
    MOE_TRY(list_chunks(t, n, &c, &p.n_chunks, err));
    p.c = c;
    p.n_slots = 2 * (size_t)n_threads < MAX_SLOTS ? 2 * (size_t)n_threads : MAX_SLOTS;
    p.slots = malloc(p.n_slots * CHUNK_BYTES);
    p.ready = malloc(p.n_slots * sizeof(*p.ready));
    if (!p.slots || !p.ready) {
        free(p.slots);
        free(p.ready);
        free(c);
        return moe_fail(err, MOE_ERR_NOMEM, "out of memory for %zu chunk buffers", p.n_slots);
    }
    for (size_t i = 0; i < p.n_slots; i++)
        atomic_init(&p.ready[i], 0);
    atomic_init(&p.next, 0);
    atomic_init(&p.written, 0);
    atomic_init(&p.stop, false);
    run_pipeline(&p, n_threads);
    free(p.slots);
    free(p.ready);
    free(c);
    return p.st;
}
