#include "formats/gguf/cursor.h"

static moe_status need(moe_cursor *c, uint64_t n, const char *what, moe_err *err) {
    if (n > moe_cursor_left(c))
        return moe_fail(err, MOE_ERR_NEED_MORE,
                        "%s: needs %llu bytes at offset %zu but only %zu remain", what,
                        (unsigned long long)n, c->pos, moe_cursor_left(c));
    return MOE_OK;
}

moe_status moe_cursor_u8(moe_cursor *c, uint8_t *v, const char *what, moe_err *err) {
    MOE_TRY(need(c, 1, what, err));
    *v = c->base[c->pos++];
    return MOE_OK;
}

moe_status moe_cursor_u16(moe_cursor *c, uint16_t *v, const char *what, moe_err *err) {
    MOE_TRY(need(c, 2, what, err));
    *v = moe_load_le16(c->base + c->pos);
    c->pos += 2;
    return MOE_OK;
}

moe_status moe_cursor_u32(moe_cursor *c, uint32_t *v, const char *what, moe_err *err) {
    MOE_TRY(need(c, 4, what, err));
    *v = moe_load_le32(c->base + c->pos);
    c->pos += 4;
    return MOE_OK;
}

moe_status moe_cursor_u64(moe_cursor *c, uint64_t *v, const char *what, moe_err *err) {
    MOE_TRY(need(c, 8, what, err));
    *v = moe_load_le64(c->base + c->pos);
    c->pos += 8;
    return MOE_OK;
}

moe_status moe_cursor_i32(moe_cursor *c, int32_t *v, const char *what, moe_err *err) {
    uint32_t u;
    MOE_TRY(moe_cursor_u32(c, &u, what, err));
    *v = (int32_t)u;
    return MOE_OK;
}

moe_status moe_cursor_i64(moe_cursor *c, int64_t *v, const char *what, moe_err *err) {
    uint64_t u;
    MOE_TRY(moe_cursor_u64(c, &u, what, err));
    *v = (int64_t)u;
    return MOE_OK;
}

moe_status moe_cursor_bytes(moe_cursor *c, uint64_t n, const uint8_t **p, const char *what,
                            moe_err *err) {
    MOE_TRY(need(c, n, what, err));
    *p = c->base + c->pos;
    c->pos += (size_t)n;
    return MOE_OK;
}

moe_status moe_cursor_skip(moe_cursor *c, uint64_t n, const char *what, moe_err *err) {
    MOE_TRY(need(c, n, what, err));
    c->pos += (size_t)n;
    return MOE_OK;
}
