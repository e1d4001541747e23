/* The vectorised quantizer searches (formats/quant/quant_iq4_lanes.inc) against
 * the scalar reference, bit for bit, at every ISA level this machine and
 * build run: the block scales alone on random and adversarial blocks, and
 * whole IQ4_NL / IQ4_XS rows through moe_quantize_rows (MOE_CPU_LEVEL picks
 * the level) at ragged block counts, with and without an importance matrix. */
#include <math.h>
#include <string.h>

#include "formats/quant/quant.h"
#include "formats/quant/quant_iq4_lanes.h"
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

static void check_scales(moe_isa_level level, moe_iq4_scales_fn fn) {
    float x[NBLOCKS * 32], w[NBLOCKS * 32], want[NBLOCKS], got[NBLOCKS];
    for (int round = 0; round < 8; round++) {
        for (int b = 0; b < NBLOCKS; b++)
            fill_block(x + b * 32, b + round);
        fill_weights(w, x, NBLOCKS * 32, round % 3);
        moe_iq4_block_scales_ref(x, w, NBLOCKS, want);
        fn(x, w, NBLOCKS, got);
        int bad = -1;
        for (int b = 0; b < NBLOCKS && bad < 0; b++)
            if (memcmp(&want[b], &got[b], sizeof(float)))
                bad = b;
        CHECK(bad < 0, "%s round %d block %d: %a vs reference %a", moe_isa_level_name(level),
              round, bad, bad < 0 ? 0.0 : (double)got[bad], bad < 0 ? 0.0 : (double)want[bad]);
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
        const moe_iq4_scales_fn fn = moe_iq4_block_scales_for(level);
        if (!fn)
            continue;
        levels++;
        printf("level %s\n", moe_isa_level_name(level));
        check_scales(level, fn);
        check_rows(level, MOE_TYPE_IQ4_NL);
        check_rows(level, MOE_TYPE_IQ4_XS);
    }
    CHECK(levels >= 1, "no level tested");
    unsetenv("MOE_CPU_LEVEL");
    TEST_DONE();
}
