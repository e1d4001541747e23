/* cursor — a bounded little-endian reader over untrusted bytes.
 *
 * Owns nothing: the cursor borrows (ptr, len) and never reads past len. Every
 * read checks the bytes left first and fails with MOE_ERR_NEED_MORE when the
 * buffer ends (the caller decides whether a longer prefix exists or the input is
 * truncated). Values are decoded with explicit little-endian loads, so behaviour
 * does not depend on the host byte order or on alignment.
 */
#ifndef MOE_FORMATS_CURSOR_H
#define MOE_FORMATS_CURSOR_H

#include <stddef.h>
#include <stdint.h>

#include "formats/base/status.h"

typedef struct moe_cursor {
    const uint8_t *base;
    size_t len;
    size_t pos;
} moe_cursor;

static inline moe_cursor moe_cursor_make(const void *base, size_t len) {
    moe_cursor c = {(const uint8_t *)base, len, 0};
    return c;
}
static inline size_t moe_cursor_left(const moe_cursor *c) { return c->len - c->pos; }

/* Each reader advances the cursor on success only. `what` names the field for
 * the error message ("n_tensors", "tensor 'x' type"...). */
moe_status moe_cursor_u8(moe_cursor *c, uint8_t *v, const char *what, moe_err *err);
moe_status moe_cursor_u16(moe_cursor *c, uint16_t *v, const char *what, moe_err *err);
moe_status moe_cursor_u32(moe_cursor *c, uint32_t *v, const char *what, moe_err *err);
moe_status moe_cursor_u64(moe_cursor *c, uint64_t *v, const char *what, moe_err *err);
moe_status moe_cursor_i32(moe_cursor *c, int32_t *v, const char *what, moe_err *err);
moe_status moe_cursor_i64(moe_cursor *c, int64_t *v, const char *what, moe_err *err);
/* Borrows n bytes at the cursor into *p (no copy) and advances. */
moe_status moe_cursor_bytes(moe_cursor *c, uint64_t n, const uint8_t **p, const char *what,
                            moe_err *err);
/* Advances by n bytes. */
moe_status moe_cursor_skip(moe_cursor *c, uint64_t n, const char *what, moe_err *err);

/* Explicit little-endian loads/stores for already bounds-checked memory. */
static inline uint16_t moe_load_le16(const void *p) {
    const uint8_t *b = (const uint8_t *)p;
    return (uint16_t)(b[0] | (b[1] << 8));
}
static inline uint32_t moe_load_le32(const void *p) {
    const uint8_t *b = (const uint8_t *)p;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static inline uint64_t moe_load_le64(const void *p) {
    const uint8_t *b = (const uint8_t *)p;
    return (uint64_t)moe_load_le32(b) | (uint64_t)moe_load_le32(b + 4) << 32;
}
static inline void moe_store_le16(void *p, uint16_t v) {
    uint8_t *b = (uint8_t *)p;
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
}
static inline void moe_store_le32(void *p, uint32_t v) {
    uint8_t *b = (uint8_t *)p;
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}
static inline void moe_store_le64(void *p, uint64_t v) {
    moe_store_le32(p, (uint32_t)v);
    moe_store_le32((uint8_t *)p + 4, (uint32_t)(v >> 32));
}

#endif
