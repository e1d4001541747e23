/* TEMPORARY during development: placeholders until the real dequantizers land.
 * This file must be deleted by whoever implements these functions. */
#include <stdlib.h>
#include "formats/dequant.h"
void moe_dequant_q4_0_r8(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_q5_0_r4(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_q8_0_r8(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_q2_K_r4(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_q3_K_r4(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_q4_K_r4(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_q5_K_r4(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_q6_K_r4(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_iq4_nl_r4(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_iq4_xs_r8(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
