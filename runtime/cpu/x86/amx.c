/* The AMX level: the AVX-512 level's kernels, with Q4_0_R8 batches of 16
 * tokens or more through AMX-INT8 tiles (TDPBSSD) where the AVX-512 level
 * runs vpdpbusd. Compiled with the AVX-512 and AMX flags (CMake), reached only
 * when the CPU has AMX-INT8 and the OS granted this process the tile data
 * (formats/base/isa.c).
 *
 * Why: on an Intel Xeon (Sapphire Rapids and later) 512-bit vpdpbusd issues
 * on one port, which bounds a Q4_0_R8 batch tile (8 of its ~12 vector
 * operations per token and block); a tile product does a 16-token x 16-row
 * block at once beside the vector units, which then only scale and add.
 *
 * Numerics: the same as the AVX-512 tiles, bit for bit. Per 32-value block,
 * the weights' nibbles - 8 (signed bytes, B) against the tokens' Q8 bytes (A)
 * give each (token, row) the exact integer the vpdpbusd tile forms (-8 x the
 * block's activation sum, plus the byte products, in another order: integers
 * are exact); the float steps (convert, scale by d_w x d_a, fused add into
 * the row's accumulator, blocks in order) are the AVX-512 tile's. */
#include <immintrin.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "formats/base/isa.h"
#include "formats/quant/quant_blocks.h"
#include "runtime/cpu/kernels.h"

#if defined(__x86_64__) && defined(__AMX_INT8__) && defined(__AMX_TILE__) /* no tiles in 32-bit mode */

/* A strip's blocks decoded per pass: 64 blocks x (512 + 64) bytes, with the
 * products' buffers 38 KB of stack, read by every token tile of the strip. */
enum { AMX_BLOCKS = 64, AMX_TOKENS = 16, AMX_ROWS = 16 };
/* Tokens per pass over the rows (whole tiles): 128 tokens of 2048 values are
 * 352 KB of activations. */
enum { AMX_TOKEN_CHUNK = 128 };

typedef struct amx_tilecfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_tilecfg;

/* Tiles 0 and 3: the block's int32 products (16 tokens x 16 rows); 1 and 4:
 * the tokens' 32 bytes; 2 and 5: the weights, 8 rows of 4-byte groups x 16
 * rows. Two sets, so that one block's product runs while the other's results
 * are scaled. */
static void amx_configure(void) {
    amx_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int set = 0; set < 2; set++) {
        const int c = 3 * set;
        cfg.rows[c] = AMX_TOKENS, cfg.colsb[c] = 64;
        cfg.rows[c + 1] = AMX_TOKENS, cfg.colsb[c + 1] = 32;
        cfg.rows[c + 2] = 8, cfg.colsb[c + 2] = 64;
    }
    _tile_loadconfig(&cfg);
}

typedef struct amx_strip {
    _Alignas(64) int8_t b[AMX_BLOCKS][8][64]; /* block ib's B tile: row c = value group c */
    _Alignas(64) float d[AMX_BLOCKS][16];     /* its 16 rows' scales */
    _Alignas(64) int32_t c[2][AMX_TOKENS][16]; /* products of the block being scaled */
} amx_strip;

/* Blocks [c0, c1) of groups g0, g1 (rows r..r+15) into s: the low nibbles of
 * value group c (values 4c..4c+3 of each row, as the AVX-512 tile pairs them
 * with activation word c) in B row c, the high ones (word 4 + c) in row 4 + c. */
static void amx_decode(const uint8_t *g0, const uint8_t *g1, int64_t c0, int64_t c1, amx_strip *s) {
    const __m512i m4 = _mm512_set1_epi8(15), e8 = _mm512_set1_epi8(8);
    for (int64_t ib = c0; ib < c1; ib++) {
        const block_q4_0_r8 *b0 = (const block_q4_0_r8 *)g0 + ib, *b1 = (const block_q4_0_r8 *)g1 + ib;
        for (int c = 0; c < 4; c++) {
            const __m512i v = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b0->qs + 32 * c))),
                _mm256_loadu_si256((const __m256i *)(b1->qs + 32 * c)), 1);
            _mm512_store_si512(s->b[ib - c0][c], _mm512_sub_epi8(_mm512_and_si512(v, m4), e8));
            _mm512_store_si512(s->b[ib - c0][4 + c],
                               _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(v, 4), m4), e8));
        }
        const __m256i h = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)b0->d)),
            _mm_loadu_si128((const __m128i *)b1->d), 1);
        _mm512_store_ps(s->d[ib - c0], _mm512_cvtph_ps(h));
    }
}

/* Block ib's product into tile set (C, A, B), stored at out. */
#define AMX_PRODUCT(C, A, B, ib, out)                                                             \
    do {                                                                                          \
        _tile_zero(C);                                                                            \
        _tile_loadd(A, at + (uint64_t)(ib) * sizeof(moe_act_q8) + offsetof(moe_act_q8, qs), as); \
        _tile_loadd(B, s->b[(ib) - c0], 64);                                                      \
        _tile_dpbssd(C, A, B);                                                                    \
        _tile_stored(C, out, 64);                                                                 \
    } while (0)

/* The 16 tokens' float steps for block ib, products at cb. */
static inline __attribute__((always_inline)) void amx_scale(const amx_strip *s, int64_t c0,
                                                            int64_t ib, const int32_t (*cb)[16],
                                                            const uint8_t *at, uint64_t as,
                                                            __m512 acc[AMX_TOKENS]) {
    const __m512 d = _mm512_load_ps(s->d[ib - c0]);
    for (int j = 0; j < AMX_TOKENS; j++) {
        const moe_act_q8 *a = (const moe_act_q8 *)(at + (uint64_t)j * as) + ib;
        acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cb[j])),
                                 _mm512_mul_ps(d, _mm512_set1_ps(a->d)), acc[j]);
    }
}

/* Rows [r0, r1) (whole strips of 16) x tokens [0, T16) (whole tiles of 16). */
static void amx_q4_0_r8(const uint8_t *w, uint64_t row_bytes, int64_t nb, int64_t r0, int64_t r1,
                        const uint8_t *act, uint64_t as, int64_t T16, float *y, int64_t ldy,
                        amx_strip *s) {
    for (int64_t r = r0; r < r1; r += AMX_ROWS) {
        const uint8_t *g0 = w + (uint64_t)r * row_bytes, *g1 = g0 + 8 * row_bytes;
        for (int64_t c0 = 0; c0 < nb; c0 += AMX_BLOCKS) {
            const int64_t c1 = c0 + AMX_BLOCKS < nb ? c0 + AMX_BLOCKS : nb;
            amx_decode(g0, g1, c0, c1, s);
            for (int64_t t0 = 0; t0 < T16; t0 += AMX_TOKENS) {
                const uint8_t *at = act + (uint64_t)t0 * as;
                __m512 acc[AMX_TOKENS];
                for (int j = 0; j < AMX_TOKENS; j++) /* the sums so far travel in y */
                    acc[j] = c0 ? _mm512_loadu_ps(y + (t0 + j) * ldy + r) : _mm512_setzero_ps();
                AMX_PRODUCT(0, 1, 2, c0, s->c[0]);
                int64_t ib = c0;
                for (; ib + 2 <= c1; ib += 2) {
                    AMX_PRODUCT(3, 4, 5, ib + 1, s->c[1]);
                    amx_scale(s, c0, ib, s->c[0], at, as, acc);
                    if (ib + 2 < c1)
                        AMX_PRODUCT(0, 1, 2, ib + 2, s->c[0]);
                    amx_scale(s, c0, ib + 1, s->c[1], at, as, acc);
                }
                if (ib < c1)
                    amx_scale(s, c0, ib, s->c[0], at, as, acc);
                for (int j = 0; j < AMX_TOKENS; j++)
                    _mm512_storeu_ps(y + (t0 + j) * ldy + r, acc[j]);
            }
        }
    }
}

static moe_mm_fn avx512_q4_0_r8; /* the AVX-512 level's kernel: every other case */

static void mm_q4_0_r8_amx(const uint8_t *w, uint64_t row_bytes, int64_t n_in, int64_t r0,
                           int64_t r1, const uint8_t *act, uint64_t as, int64_t T, float *y,
                           int64_t ldy) {
    const int64_t T16 = T / AMX_TOKENS * AMX_TOKENS;
    const int64_t rs = r0 + (r1 - r0) / AMX_ROWS * AMX_ROWS;
    if (T16 == 0 || rs == r0) {
        avx512_q4_0_r8(w, row_bytes, n_in, r0, r1, act, as, T, y, ldy);
        return;
    }
    amx_strip s;
    amx_configure();
    for (int64_t t = 0; t < T16; t += AMX_TOKEN_CHUNK) /* a chunk's activations stay in L2 */
        amx_q4_0_r8(w, row_bytes, n_in / 32, r0, rs, act + (uint64_t)t * as, as,
                    T16 - t < AMX_TOKEN_CHUNK ? T16 - t : AMX_TOKEN_CHUNK, y + t * ldy, ldy, &s);
    _tile_release();
    if (rs < r1) /* rows left: every token */
        avx512_q4_0_r8(w, row_bytes, n_in, rs, r1, act, as, T, y, ldy);
    if (T16 < T) /* tokens left: the strips' rows */
        avx512_q4_0_r8(w, row_bytes, n_in, r0, rs, act + (uint64_t)T16 * as, as, T - T16,
                       y + T16 * ldy, ldy);
}

enum { AMX_MAX_KERNELS = 64 };
static moe_cpu_kernel amx_kernels[AMX_MAX_KERNELS];
static moe_cpu_kernel_table amx_table;
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;
static bool amx_ok;

static void amx_build(void) {
    const moe_cpu_kernel_table *base = moe_cpu_kernels_avx512();
    if (!base)
        return;
    bool ended = false;
    for (int n = 0; n < AMX_MAX_KERNELS && !ended; n++) {
        const moe_cpu_kernel *k = base->kernels + n;
        amx_kernels[n] = *k;
        ended = k->type == MOE_TYPE_F32;
        if (k->type == MOE_TYPE_Q4_0_R8) {
            avx512_q4_0_r8 = k->mm;
            amx_kernels[n].mm = mm_q4_0_r8_amx;
        }
    }
    if (!ended)
        return; /* more kernels than room: keep to the AVX-512 level */
    amx_table = *base;
    amx_table.level = MOE_CPU_AMX;
    amx_table.kernels = amx_kernels;
    amx_ok = true;
}

/* NULL unless the CPU has the tiles and the OS granted them (the first tile
 * instruction would fault otherwise). */
const moe_cpu_kernel_table *moe_cpu_kernels_amx(void) {
    if (moe_isa_detected() < MOE_ISA_AMX)
        return NULL;
    pthread_once(&amx_once, amx_build);
    return amx_ok ? &amx_table : NULL;
}

#else
/* A compiler without the AMX flags: no AMX level (dispatch keeps AVX-512). */
const moe_cpu_kernel_table *moe_cpu_kernels_amx(void) { return NULL; }
#endif
