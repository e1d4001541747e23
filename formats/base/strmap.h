/* strmap — a growable hash map from NUL-terminated strings to int64 values.
 *
 * Owns: its slot array. Does not own the keys: callers keep each key string
 * alive and unchanged while it is in the map (typically it points into the
 * structure whose index the map stores). Used for tensor-name and key lookups
 * where files may hold tens of thousands of names (legacy split experts).
 */
#ifndef MOE_FORMATS_STRMAP_H
#define MOE_FORMATS_STRMAP_H

#include <stdint.h>

#include "formats/base/status.h"

typedef struct moe_strmap {
    uint64_t cap;   /* power of two, 0 before the first insert */
    uint64_t count;
    const char **keys;
    int64_t *values;
} moe_strmap;

/* Value stored for key, or -1 if absent. */
int64_t moe_strmap_get(const moe_strmap *m, const char *key);

/* Inserts key -> value (value >= 0). If key is already present, leaves the map
 * unchanged and returns the existing value in *existing (else *existing = -1). */
moe_status moe_strmap_put(moe_strmap *m, const char *key, int64_t value, int64_t *existing,
                          moe_err *err);

/* Frees the slots; the map is empty afterwards. NULL-safe. */
void moe_strmap_free(moe_strmap *m);

#endif
