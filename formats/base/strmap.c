#include "formats/base/strmap.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static uint64_t slot_of(const moe_strmap *m, const char *key) {
    uint64_t h = XXH3_64bits(key, strlen(key)) & (m->cap - 1);
    while (m->keys[h] && strcmp(m->keys[h], key) != 0)
        h = (h + 1) & (m->cap - 1);
    return h;
}

int64_t moe_strmap_get(const moe_strmap *m, const char *key) {
    if (!m->cap)
        return -1;
    uint64_t h = slot_of(m, key);
    return m->keys[h] ? m->values[h] : -1;
}

static moe_status grow(moe_strmap *m, moe_err *err) {
    moe_strmap bigger = {.cap = m->cap ? m->cap * 2 : 64, .count = m->count};
    bigger.keys = calloc(bigger.cap, sizeof *bigger.keys);
    bigger.values = malloc(bigger.cap * sizeof *bigger.values);
    if (!bigger.keys || !bigger.values) {
        free(bigger.keys);
        free(bigger.values);
        return moe_fail(err, MOE_ERR_NOMEM, "out of memory growing a name index");
    }
    for (uint64_t i = 0; i < m->cap; i++) {
        if (m->keys[i]) {
            uint64_t h = slot_of(&bigger, m->keys[i]);
            bigger.keys[h] = m->keys[i];
            bigger.values[h] = m->values[i];
        }
    }
    moe_strmap_free(m);
    *m = bigger;
    return MOE_OK;
}

moe_status moe_strmap_put(moe_strmap *m, const char *key, int64_t value, int64_t *existing,
                          moe_err *err) {
    *existing = -1;
    if (2 * (m->count + 1) > m->cap)
        MOE_TRY(grow(m, err));
    uint64_t h = slot_of(m, key);
    if (m->keys[h]) {
        *existing = m->values[h];
        return MOE_OK;
    }
    m->keys[h] = key;
    m->values[h] = value;
    m->count++;
    return MOE_OK;
}

void moe_strmap_free(moe_strmap *m) {
    if (!m)
        return;
    free(m->keys);
    free(m->values);
    m->keys = NULL;
    m->values = NULL;
    m->cap = m->count = 0;
}
