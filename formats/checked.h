/* checked — overflow-checked size arithmetic for untrusted counts.
 *
 * Every size derived from file bytes goes through these. Each returns true on
 * success and writes the result; on overflow it returns false and leaves *out
 * unspecified. Header-only: they are one builtin each.
 */
#ifndef MOE_FORMATS_CHECKED_H
#define MOE_FORMATS_CHECKED_H

#include <stdbool.h>
#include <stdint.h>

static inline bool moe_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}
static inline bool moe_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool moe_mul_i64(int64_t a, int64_t b, int64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
/* Rounds x up to a multiple of align (align > 0). */
static inline bool moe_pad_u64(uint64_t x, uint64_t align, uint64_t *out) {
    uint64_t t;
    if (!moe_add_u64(x, align - 1, &t))
        return false;
    *out = t - t % align;
    return true;
}

#endif
