/* text — UTF-8 and stop-string helpers of moe-server; see server.h. */
#include <stdlib.h>
#include <string.h>

#include "runtime/server/server.h"

/* Bytes a sequence starting with lead b has (0: b cannot start one), and the
 * range its second byte must lie in (shortest forms only, no surrogates,
 * nothing above U+10FFFF). */
static int utf8_lead(unsigned char b, unsigned char *lo, unsigned char *hi) {
    *lo = 0x80, *hi = 0xBF;
    if (b < 0x80)
        return 1;
    if (b >= 0xC2 && b <= 0xDF)
        return 2;
    if (b >= 0xE0 && b <= 0xEF) {
        if (b == 0xE0)
            *lo = 0xA0;
        if (b == 0xED)
            *hi = 0x9F;
        return 3;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        if (b == 0xF0)
            *lo = 0x90;
        if (b == 0xF4)
            *hi = 0x8F;
        return 4;
    }
    return 0;
}

/* How many bytes from s[0] form a valid (possibly incomplete) start of a
 * sequence, and the length it needs in *need (0 for a bad lead). */
static size_t utf8_valid_prefix(const unsigned char *s, size_t n, int *need) {
    unsigned char lo, hi;
    *need = utf8_lead(s[0], &lo, &hi);
    if (*need <= 1)
        return *need ? 1 : 0;
    size_t k = 1;
    while (k < (size_t)*need && k < n) {
        unsigned char c = s[k];
        if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF))
            break;
        k++;
    }
    return k;
}

char *srv_utf8_clean(const char *s, size_t n, size_t *out_len) {
    char *out = malloc(n * 3 + 1); /* a lone byte becomes 3 bytes at most */
    if (!out)
        return NULL;
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        int need;
        size_t k = utf8_valid_prefix(u + i, n - i, &need);
        if (need > 0 && k == (size_t)need) {
            memcpy(out + o, u + i, k);
            o += k;
            i += k;
            continue;
        }
        memcpy(out + o, "\xEF\xBF\xBD", 3);
        o += 3;
        i += k ? k : 1;
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

size_t srv_utf8_complete(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    /* a trailing incomplete sequence starts within the last 3 bytes */
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        size_t at = n - back;
        if ((u[at] & 0xC0) == 0x80)
            continue;
        int need;
        size_t k = utf8_valid_prefix(u + at, back, &need);
        return need > 1 && k == back && back < (size_t)need ? at : n;
    }
    return n;
}

size_t srv_stop_partial(const char *s, size_t n, char *const *stop, int n_stop) {
    size_t best = 0;
    for (int i = 0; i < n_stop; i++) {
        size_t m = strlen(stop[i]);
        for (size_t k = (m - 1 < n ? m - 1 : n); k > best; k--)
            if (!memcmp(s + n - k, stop[i], k)) {
                best = k;
                break;
            }
    }
    return best;
}

ptrdiff_t srv_stop_find(const char *s, size_t n, size_t from, char *const *stop, int n_stop) {
    ptrdiff_t best = -1;
    for (int i = 0; i < n_stop; i++) {
        size_t m = strlen(stop[i]);
        for (size_t p = from; p + m <= n; p++)
            if (!memcmp(s + p, stop[i], m)) {
                if (best < 0 || (ptrdiff_t)p < best)
                    best = (ptrdiff_t)p;
                break;
            }
    }
    return best;
}

bool srv_secret_equal(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    /* every byte of the expected secret b is read whatever a holds, so the
     * time says nothing about how much of it matched */
    unsigned diff = (unsigned)(na != nb);
    for (size_t i = 0; i < nb; i++)
        diff |= (unsigned char)b[i] ^ (unsigned char)(i < na ? a[i] : 0);
    return diff == 0;
}
