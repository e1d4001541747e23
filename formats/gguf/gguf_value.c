/* Typed access to parsed GGUF metadata values. Values are kept as their
 * encoded little-endian bytes (kv->raw) and decoded here on demand. */
#include <string.h>

#include "formats/gguf/cursor.h"
#include "formats/quant/fp16.h"
#include "formats/gguf/gguf.h"

/* Decodes one integer element of type t at p. Returns false if t is not an
 * integer type, or the u64 value does not fit int64. */
static bool load_int(moe_gguf_vtype t, const uint8_t *p, int64_t *out) {
    switch (t) {
    case MOE_GGUF_U8: *out = p[0]; return true;
    case MOE_GGUF_I8: *out = (int8_t)p[0]; return true;
    case MOE_GGUF_U16: *out = moe_load_le16(p); return true;
    case MOE_GGUF_I16: *out = (int16_t)moe_load_le16(p); return true;
    case MOE_GGUF_U32: *out = moe_load_le32(p); return true;
    case MOE_GGUF_I32: *out = (int32_t)moe_load_le32(p); return true;
    case MOE_GGUF_I64: *out = (int64_t)moe_load_le64(p); return true;
    case MOE_GGUF_U64: {
        uint64_t u = moe_load_le64(p);
        if (u > INT64_MAX)
            return false;
        *out = (int64_t)u;
        return true;
    }
    default: return false;
    }
}

static bool load_float(moe_gguf_vtype t, const uint8_t *p, double *out) {
    if (t == MOE_GGUF_F32) {
        *out = moe_bits_to_f32(moe_load_le32(p));
        return true;
    }
    if (t == MOE_GGUF_F64) {
        uint64_t u = moe_load_le64(p);
        memcpy(out, &u, sizeof *out);
        return true;
    }
    int64_t i;
    if (!load_int(t, p, &i))
        return false;
    *out = (double)i;
    return true;
}

moe_status moe_gguf_kv_int(const moe_gguf_kv *kv, int64_t *out, moe_err *err) {
    if (kv->type == MOE_GGUF_ARRAY || !load_int(kv->type, kv->raw, out))
        return moe_fail(err, MOE_ERR_FORMAT, "key '%s' has type %s (expected an integer)",
                        kv->key, moe_gguf_vtype_name(kv->type));
    return MOE_OK;
}

moe_status moe_gguf_kv_float(const moe_gguf_kv *kv, double *out, moe_err *err) {
    if (kv->type == MOE_GGUF_ARRAY || !load_float(kv->type, kv->raw, out))
        return moe_fail(err, MOE_ERR_FORMAT, "key '%s' has type %s (expected a number)",
                        kv->key, moe_gguf_vtype_name(kv->type));
    return MOE_OK;
}

moe_status moe_gguf_kv_bool(const moe_gguf_kv *kv, bool *out, moe_err *err) {
    MOE_FAIL_IF(kv->type != MOE_GGUF_BOOL, err, MOE_ERR_FORMAT,
                "key '%s' has type %s (expected bool)", kv->key,
                moe_gguf_vtype_name(kv->type));
    *out = kv->raw[0] != 0;
    return MOE_OK;
}

/* Start of element i of a numeric array; NULL (with an error) if out of range
 * or not a numeric array. The raw bytes start with elem type (4) + count (8). */
static const uint8_t *numeric_elem(const moe_gguf_kv *kv, uint64_t i, moe_err *err) {
    if (kv->type != MOE_GGUF_ARRAY || kv->elem_type == MOE_GGUF_STRING) {
        moe_fail(err, MOE_ERR_FORMAT, "key '%s' is not a numeric array", kv->key);
        return NULL;
    }
    if (i >= kv->count) {
        moe_fail(err, MOE_ERR_USAGE, "key '%s': index %llu past the %llu elements", kv->key,
                 (unsigned long long)i, (unsigned long long)kv->count);
        return NULL;
    }
    return kv->raw + 12 + i * moe_gguf_vtype_size(kv->elem_type);
}

moe_status moe_gguf_arr_int(const moe_gguf_kv *kv, uint64_t i, int64_t *out, moe_err *err) {
    const uint8_t *p = numeric_elem(kv, i, err);
    if (!p)
        return err ? err->code : MOE_ERR_FORMAT;
    MOE_FAIL_IF(!load_int(kv->elem_type, p, out), err, MOE_ERR_FORMAT,
                "key '%s' is an array of %s (expected integers)", kv->key,
                moe_gguf_vtype_name(kv->elem_type));
    return MOE_OK;
}

moe_status moe_gguf_arr_float(const moe_gguf_kv *kv, uint64_t i, double *out, moe_err *err) {
    const uint8_t *p = numeric_elem(kv, i, err);
    if (!p)
        return err ? err->code : MOE_ERR_FORMAT;
    MOE_FAIL_IF(!load_float(kv->elem_type, p, out), err, MOE_ERR_FORMAT,
                "key '%s' is an array of %s (expected numbers)", kv->key,
                moe_gguf_vtype_name(kv->elem_type));
    return MOE_OK;
}

moe_status moe_gguf_arr_str(const moe_gguf_kv *kv, uint64_t i, const char **s, uint64_t *len,
                            moe_err *err) {
    MOE_FAIL_IF(kv->type != MOE_GGUF_ARRAY || kv->elem_type != MOE_GGUF_STRING, err,
                MOE_ERR_FORMAT, "key '%s' is not a string array", kv->key);
    MOE_FAIL_IF(i >= kv->count, err, MOE_ERR_USAGE, "key '%s': index %llu past the %llu elements",
                kv->key, (unsigned long long)i, (unsigned long long)kv->count);
    const uint8_t *p = kv->raw + kv->str_offsets[i];
    *len = moe_load_le64(p);
    *s = (const char *)p + 8;
    return MOE_OK;
}

static moe_status find(const moe_gguf *g, const char *key, const moe_gguf_kv **kv,
                       moe_err *err) {
    int64_t i = moe_gguf_find_key(g, key);
    MOE_FAIL_IF(i < 0, err, MOE_ERR_FORMAT, "missing key '%s'", key);
    *kv = &g->kv[i];
    return MOE_OK;
}

moe_status moe_gguf_get_int(const moe_gguf *g, const char *key, int64_t *out, moe_err *err) {
    const moe_gguf_kv *kv = NULL;
    MOE_TRY(find(g, key, &kv, err));
    return moe_gguf_kv_int(kv, out, err);
}

moe_status moe_gguf_get_float(const moe_gguf *g, const char *key, double *out, moe_err *err) {
    const moe_gguf_kv *kv = NULL;
    MOE_TRY(find(g, key, &kv, err));
    return moe_gguf_kv_float(kv, out, err);
}

moe_status moe_gguf_get_str(const moe_gguf *g, const char *key, const char **out, moe_err *err) {
    const moe_gguf_kv *kv = NULL;
    MOE_TRY(find(g, key, &kv, err));
    MOE_FAIL_IF(kv->type != MOE_GGUF_STRING, err, MOE_ERR_FORMAT,
                "key '%s' has type %s (expected str)", key, moe_gguf_vtype_name(kv->type));
    *out = kv->str;
    return MOE_OK;
}
