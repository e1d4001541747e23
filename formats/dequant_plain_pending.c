/* TEMPORARY during development: placeholders until the real dequantizers land.
 * This file must be deleted by whoever implements these functions. */
#include <stdlib.h>
#include "formats/dequant.h"
void moe_dequant_q4_0(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_q4_1(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_q5_0(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_q5_1(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_q8_0(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_q2_K(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_q3_K(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_q4_K(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_q5_K(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_q6_K(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_iq4_nl(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
void moe_dequant_iq4_xs(const void *src, float *dst, int64_t ne0, int64_t nrows) {
    (void)src; (void)dst; (void)ne0; (void)nrows;
    abort();
}
