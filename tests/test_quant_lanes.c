/* The vectorised quantizer searches (formats/quant/quant_iq4_lanes.inc and
 * quant_kq_lanes.inc) against the scalar reference, bit for bit, at every ISA
 * level this machine and build run: the searches alone on random and
 * adversarial blocks (ragged sub-block counts, so the reference tail runs
 * too), and whole IQ4_NL / IQ4_XS / Q2_K..Q6_K rows through
 * moe_quantize_rows (MOE_CPU_LEVEL picks the level), with and without an
 * importance matrix. */
#include <math.h>
#include <string.h>

#include "formats/quant/quant.h"
#include "formats/quant/quant_iq4_lanes.h"
#include "formats/quant/quant_kq_lanes.h"
#include "test_util.h"

#define NBLOCKS 101 /* not a multiple of any vector width: the tail goes to the reference */

static float rnd_unit(void) { return (float)(test_rng_next() >> 8) / 16777216.0f; }

/* Block b's 32 values in one of several shapes that stress the search. */
static void fill_block(float *x, int b) {
    static const float specials[] = {0.0f, -0.0f, 1e-40f, -3e-39f, 1e30f, -3e38f, 1.0f, -1.0f};
    const float scale = powf(10.0f, (float)(int)(test_rng_next() % 13) - 6.0f);
    for (int j = 0; j < 32; j++) {
        const float r = rnd_unit() * 2.0f - 1.0f;
        switch (b % 8) {
        case 0: x[j] = 0.0f; break;                              /* all zero */
        case 1: x[j] = r * 1e-39f; break;                        /* denormals */
        case 2: x[j] = r * 3e38f; break;                         /* near FLT_MAX */
        case 3: x[j] = specials[test_rng_next() % 8]; break;     /* mixed extremes */
        case 4: x[j] = (float)((int)(test_rng_next() % 241) - 127); break; /* on codes / midpoints */
        case 5: x[j] = j == 7 ? r * 5.0f : r * 1e-12f; break;   /* one outlier */
        default: x[j] = r * scale; break;
        }
    }
}

static void fill_weights(float *w, const float *x, int n, int kind) {
    for (int j = 0; j < n; j++)
        w[j] = kind == 0 ? x[j] * x[j] : kind == 1 ? rnd_unit() * 4.0f : (j % 3 ? 0.0f : 1.0f);
}

static void check_scales(moe_isa_level level, const moe_iq4_search *s) {
    float x[NBLOCKS * 32], w[NBLOCKS * 32], want[NBLOCKS], got[NBLOCKS];
    for (int round = 0; round < 8; round++) {
        for (int b = 0; b < NBLOCKS; b++)
            fill_block(x + b * 32, b + round);
        fill_weights(w, x, NBLOCKS * 32, round % 3);
        moe_iq4_search_ref.scales(x, w, NBLOCKS, want);
        s->scales(x, w, NBLOCKS, got);
        int bad = -1;
        for (int b = 0; b < NBLOCKS && bad < 0; b++)
            if (memcmp(&want[b], &got[b], sizeof(float)))
                bad = b;
        CHECK(bad < 0, "%s round %d block %d: %a vs reference %a", moe_isa_level_name(level),
              round, bad, bad < 0 ? 0.0 : (double)got[bad], bad < 0 ? 0.0 : (double)want[bad]);
    }
}

/* The K-quant sub-block searches with the argument sets the quantizers use
 * (quant_kquants.c): Q4_K and Q5_K without and with an imatrix, Q2_K both
 * ways (16 values, absolute error without one). */
static const moe_qkx_params qkx_cases[] = {
    {.n = 32, .nmax = 15, .rmin = -1.0f, .rdelta = 0.1f, .nstep = 20},
    {.n = 32, .nmax = 31, .rmin = -0.5f, .rdelta = 0.1f, .nstep = 15},
    {.n = 32, .nmax = 15, .rmin = -0.9f, .rdelta = 0.05f, .nstep = 36, .qkx3 = true},
    {.n = 32, .nmax = 31, .rmin = -0.9f, .rdelta = 0.05f, .nstep = 36, .qkx3 = true},
    {.n = 16, .nmax = 3, .rmin = -0.5f, .rdelta = 0.1f, .nstep = 15, .use_mad = true},
    {.n = 16, .nmax = 3, .rmin = -0.9f, .rdelta = 0.05f, .nstep = 36, .qkx3 = true},
};

#define KQ_NSUB 27 /* three groups of eight and a tail of three */

static void check_kq_search(moe_isa_level level, const moe_kq_search *s) {
    static float x[KQ_NSUB * 32], w[KQ_NSUB * 32];
    float want_s[KQ_NSUB], got_s[KQ_NSUB], want_m[KQ_NSUB], got_m[KQ_NSUB];
    uint8_t want_L[KQ_NSUB * 32], got_L[KQ_NSUB * 32];
    for (int round = 0; round < 8; round++) {
        for (int b = 0; b < KQ_NSUB; b++)
            fill_block(x + b * 32, b + round);
        for (size_t c = 0; c < sizeof qkx_cases / sizeof qkx_cases[0]; c++) {
            const moe_qkx_params *p = &qkx_cases[c];
            fill_weights(w, x, KQ_NSUB * p->n, (round + (int)c) % 3);
            memset(got_L, 0xAA, sizeof got_L);
            moe_kq_search_ref.qkx(p, x, w, KQ_NSUB, want_L, want_s, want_m);
            s->qkx(p, x, w, KQ_NSUB, got_L, got_s, got_m);
            CHECK(!memcmp(want_s, got_s, sizeof want_s) && !memcmp(want_m, got_m, sizeof want_m) &&
                      !memcmp(want_L, got_L, (size_t)(KQ_NSUB * p->n)),
                  "%s qkx case %zu round %d: scales, mins or levels differ from the reference",
                  moe_isa_level_name(level), c, round);
        }
        /* Q6_K (nmax 32) with and without weights, Q3_K's imatrix search (nmax 4) */
        for (int kase = 0; kase < 3; kase++) {
            const int nmax = kase < 2 ? 32 : 4;
            const float *qw = kase == 0 ? NULL : w;
            fill_weights(w, x, KQ_NSUB * 16, 1 + round % 2);
            int8_t want_q[KQ_NSUB * 16], got_q[KQ_NSUB * 16];
            moe_kq_search_ref.qx1(16, nmax, x, qw, KQ_NSUB, want_q, want_s);
            s->qx1(16, nmax, x, qw, KQ_NSUB, got_q, got_s);
            CHECK(!memcmp(want_s, got_s, sizeof want_s) && !memcmp(want_q, got_q, sizeof want_q),
                  "%s qx1 case %d round %d: scales or levels differ from the reference",
                  moe_isa_level_name(level), kase, round);
        }
    }
}

/* The final code picking at inverse scales that put values on, next to and
 * between the code book's midpoints, at the clamps and beyond, and from the
 * blocks' own scales; with a stride, as IQ4_NL's 18-byte blocks use it. */
static void check_codes(moe_isa_level level, const moe_iq4_search *s) {
    enum { STRIDE = 18 };
    float x[NBLOCKS * 32], w[NBLOCKS * 32], id[NBLOCKS];
    uint8_t want[NBLOCKS * STRIDE], got[NBLOCKS * STRIDE];
    for (int round = 0; round < 8; round++) {
        for (int b = 0; b < NBLOCKS; b++)
            fill_block(x + b * 32, b + round);
        fill_weights(w, x, NBLOCKS * 32, round % 3);
        moe_iq4_search_ref.scales(x, w, NBLOCKS, id);
        for (int b = 0; b < NBLOCKS; b++) {
            const float picks[] = {id[b] != 0.0f ? 1.0f / id[b] : 0.0f, 0.5f, 1.0f, 1e30f,
                                   -2.0f, 1e-30f};
            id[b] = picks[(b + round) % 6];
        }
        memset(want, 0, sizeof want);
        memset(got, 0, sizeof got);
        moe_iq4_search_ref.codes(x, id, NBLOCKS, want, STRIDE);
        s->codes(x, id, NBLOCKS, got, STRIDE);
        CHECK(!memcmp(want, got, sizeof want), "%s codes round %d differ from the reference",
              moe_isa_level_name(level), round);
    }
}

/* Whole rows: nrow x n_per_row through moe_quantize_rows at `level`. */
static void quantize_at(moe_isa_level level, moe_type t, const float *x, void *out, int64_t nrow,
                        int64_t n, const float *imatrix) {
    setenv("MOE_CPU_LEVEL", moe_isa_level_name(level), 1);
    moe_err err = {0};
    CHECK(moe_quantize_rows(t, x, out, nrow, n, imatrix, &err) == MOE_OK, "quantize: %s",
          err.msg);
}

static void check_rows(moe_isa_level level, moe_type t) {
    enum { NROW = 3, N = 256 * 7 }; /* 56 blocks / 7 super-blocks per row: ragged for 16 lanes */
    static float x[NROW * N], imatrix[N];
    static uint8_t want[NROW * N], got[NROW * N];
    for (int b = 0; b < NROW * N / 32; b++)
        fill_block(x + b * 32, (int)(test_rng_next() % 8));
    fill_weights(imatrix, x, N, 1);
    for (int with_imatrix = 0; with_imatrix < 2; with_imatrix++) {
        const float *im = with_imatrix ? imatrix : NULL;
        quantize_at(MOE_ISA_REF, t, x, want, NROW, N, im);
        quantize_at(level, t, x, got, NROW, N, im);
        uint64_t row;
        moe_err err = {0};
        CHECK(moe_type_row_size(t, N, &row, &err) == MOE_OK, "row size");
        CHECK(!memcmp(want, got, (size_t)(row * NROW)), "%s %s imatrix=%d: bytes differ",
              moe_isa_level_name(level), moe_type_name(t), with_imatrix);
    }
}

int main(void) {
    test_rng_state = 0x5eed1234u;
    const moe_isa_level best = moe_isa_detected();
    int levels = 0;
    for (moe_isa_level level = MOE_ISA_SCALAR; level <= best; level++) {
        const moe_iq4_search *s = moe_iq4_search_for(level);
        if (!s)
            continue;
        levels++;
        printf("level %s\n", moe_isa_level_name(level));
        check_scales(level, s);
        check_codes(level, s);
        check_rows(level, MOE_TYPE_IQ4_NL);
        check_rows(level, MOE_TYPE_IQ4_XS);
    }
    for (moe_isa_level level = MOE_ISA_SCALAR; level <= best; level++) {
        const moe_kq_search *s = moe_kq_search_for(level);
        if (!s)
            continue;
        levels++;
        printf("level %s: K-quant searches\n", moe_isa_level_name(level));
        check_kq_search(level, s);
        const moe_type kq[] = {MOE_TYPE_Q2_K, MOE_TYPE_Q3_K, MOE_TYPE_Q4_K, MOE_TYPE_Q5_K,
                               MOE_TYPE_Q6_K};
        for (size_t k = 0; k < sizeof kq / sizeof kq[0]; k++)
            check_rows(level, kq[k]);
    }
    CHECK(levels >= 2, "no level tested");
    unsetenv("MOE_CPU_LEVEL");
    TEST_DONE();
}
