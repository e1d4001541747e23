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
#include <stdlib.h>

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

/* Room for at least need elements of elem_size bytes in an array that grows
 * an element at a time: returns items, reallocated with *cap doubled (from
 * first_cap) as often as needed, or NULL on failure (out of memory or a size
 * past SIZE_MAX), leaving items and *cap as they were. */
static inline void *moe_grow(void *items, size_t *cap, size_t need, size_t first_cap,
                             size_t elem_size) {
    if (need <= *cap)
        return items;
    size_t c = *cap ? *cap : first_cap;
    while (c < need) {
        if (c > SIZE_MAX / 2)
            return NULL;
        c *= 2;
    }
    if (c > SIZE_MAX / elem_size)
        return NULL;
    void *grown = realloc(items, c * elem_size);
    if (grown)
        *cap = c;
    return grown;
}

#endif
