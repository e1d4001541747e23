/* TEMPORARY during development: placeholders until the real quantizers land.
 * Deleted by whoever implements each family (remove the functions you implement). */
#include <stdlib.h>

#include "formats/quant_impl.h"

#define PENDING(name)                                                                    \
    MOE_QUANT_FN(name) {                                                                 \
        (void)src, (void)dst, (void)nrow, (void)n_per_row, (void)imatrix;                \
        abort();                                                                          \
    }
PENDING(q4_0)
PENDING(q4_1)
PENDING(q5_0)
PENDING(q5_1)
PENDING(q8_0)
PENDING(iq4_nl)
PENDING(iq4_xs)
PENDING(q2_K)
PENDING(q3_K)
PENDING(q4_K)
PENDING(q5_K)
PENDING(q6_K)
