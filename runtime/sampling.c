/* sampling.c — moe.h's sampler: llama-cli's default chain (spec §8) without
 * the stages that are off by default:
 *
 *   repetition penalty -> top-k -> top-p -> min-p -> temperature -> seeded draw
 *
 * top-p and min-p see the untempered distribution, as in llama.cpp, because
 * temperature comes after them. temp <= 0 is greedy: the penalised argmax
 * (llama.cpp keeps only the largest logit at that point, which no earlier
 * stage can remove). The draw uses our own xoshiro256** stream, so sequences
 * are deterministic per seed but not llama.cpp's. The candidate buffer is
 * allocated on the first call (n_vocab entries) and only grows if a later
 * call passes a larger vocabulary.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/include/moe.h"

#define SEED_RANDOM 0xFFFFFFFFu /* LLAMA_DEFAULT_SEED: pick a seed at creation */

typedef struct cand {
    int32_t id;
    float logit;
    float p; /* before sorting: "already penalised" mark; after softmax: probability */
} cand;

struct moe_sampler {
    moe_sampler_params p;
    uint64_t rng[4];
    int32_t *hist; /* ring of the last repeat_last_n accepted tokens */
    int32_t hist_n, hist_at;
    cand *c;
    int64_t c_cap;
};

moe_sampler_params moe_sampler_default_params(void) {
    return (moe_sampler_params){.temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                                .repeat_penalty = 1.0f, .repeat_last_n = 64,
                                .seed = SEED_RANDOM};
}

/* ---- random numbers ---------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(uint64_t s[4]) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform in [0, 1) with 53 random bits. */
static double next_unit(uint64_t s[4]) { return (double)(next_u64(s) >> 11) * 0x1.0p-53; }

static uint64_t random_seed(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^
                 ((uint64_t)getpid() << 32);
    return splitmix64(&x);
}

/* ---- life cycle -------------------------------------------------------------------------- */

moe_sampler *moe_sampler_create(const moe_sampler_params *params) {
    moe_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->p = params ? *params : moe_sampler_default_params();
    if (s->p.repeat_last_n < 0) /* llama.cpp's -1 (= context size) is the caller's to resolve */
        s->p.repeat_last_n = 0;
    if (s->p.repeat_last_n > 0) {
        s->hist = malloc((size_t)s->p.repeat_last_n * sizeof *s->hist);
        if (!s->hist) {
            free(s);
            return NULL;
        }
    }
    uint64_t x = s->p.seed == SEED_RANDOM ? random_seed() : s->p.seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    return s;
}

void moe_sampler_free(moe_sampler *s) {
    if (!s)
        return;
    free(s->hist);
    free(s->c);
    free(s);
}

void moe_sampler_accept(moe_sampler *s, moe_token t) {
    if (!s || s->p.repeat_last_n <= 0)
        return;
    s->hist[s->hist_at] = t;
    s->hist_at = (s->hist_at + 1) % s->p.repeat_last_n;
    if (s->hist_n < s->p.repeat_last_n)
        s->hist_n++;
}

/* ---- the chain --------------------------------------------------------------------------- */

/* Each token seen in the window is penalised once, however often it occurs:
 * positive logits divided, the others multiplied (llama.cpp's rule). */
static void penalize(moe_sampler *s, cand *c, int64_t n) {
    float r = s->p.repeat_penalty;
    if (r == 1.0f || s->hist_n == 0)
        return;
    for (int32_t i = 0; i < s->hist_n; i++) {
        int32_t t = s->hist[i];
        if (t < 0 || t >= n || c[t].p != 0)
            continue;
        c[t].p = 1;
        c[t].logit = c[t].logit <= 0 ? c[t].logit * r : c[t].logit / r;
    }
}

/* Total order: larger logit first, then smaller id (ties are deterministic). */
static bool better(const cand *a, const cand *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cmp_cand(const void *a, const void *b) {
    const cand *x = a, *y = b;
    return better(x, y) ? -1 : better(y, x) ? 1 : 0;
}

static void sift_down(cand *h, int64_t k, int64_t i) {
    for (;;) {
        int64_t w = i, l = 2 * i + 1, r = l + 1;
        if (l < k && better(&h[w], &h[l]))
            w = l;
        if (r < k && better(&h[w], &h[r]))
            w = r;
        if (w == i)
            return;
        cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* Moves the k best candidates to c[0..k) in order, in O(n log k): a heap
 * whose root is the worst of the best k so far. */
static void top_k(cand *c, int64_t n, int64_t k) {
    for (int64_t i = k / 2; i-- > 0;)
        sift_down(c, k, i);
    for (int64_t i = k; i < n; i++) {
        if (better(&c[i], &c[0])) {
            cand t = c[0];
            c[0] = c[i];
            c[i] = t;
            sift_down(c, k, 0);
        }
    }
    qsort(c, (size_t)k, sizeof *c, cmp_cand);
}

/* Probabilities of c[0..n) at temperature 1 (c sorted: c[0] is the max).
 * Returns their sum before normalising. */
static double softmax(cand *c, int64_t n, float max) {
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        c[i].p = expf(c[i].logit - max);
        sum += c[i].p;
    }
    for (int64_t i = 0; i < n; i++)
        c[i].p = (float)(c[i].p / sum);
    return sum;
}

/* Keeps the smallest prefix whose probability reaches top_p. */
static int64_t top_p(cand *c, int64_t n, float p) {
    softmax(c, n, c[0].logit);
    double cum = 0;
    for (int64_t i = 0; i < n; i++) {
        cum += c[i].p;
        if (cum >= p)
            return i + 1;
    }
    return n;
}

/* Keeps candidates with p >= min_p * p_max, i.e. logit >= max + log(min_p);
 * order is kept. Keeping none (min_p > 1) keeps all, as llama.cpp does. */
static int64_t min_p(cand *c, int64_t n, float mp) {
    float max = c[0].logit;
    for (int64_t i = 1; i < n; i++)
        max = c[i].logit > max ? c[i].logit : max;
    float floor_logit = max + logf(mp);
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        if (c[i].logit >= floor_logit)
            c[k++] = c[i];
    return k ? k : n;
}

static moe_token draw(moe_sampler *s, cand *c, int64_t n) {
    float max = c[0].logit;
    for (int64_t i = 1; i < n; i++)
        max = c[i].logit > max ? c[i].logit : max;
    if (!isfinite(max))
        return c[0].id;
    double total = 0;
    for (int64_t i = 0; i < n; i++) {
        c[i].p = expf((c[i].logit - max) / s->p.temp);
        total += c[i].p;
    }
    double r = next_unit(s->rng) * total, cum = 0;
    for (int64_t i = 0; i < n; i++) {
        cum += c[i].p;
        if (r < cum)
            return c[i].id;
    }
    return c[n - 1].id; /* rounding left r at the very top */
}

moe_token moe_sampler_sample(moe_sampler *s, const float *logits, int64_t n_vocab) {
    if (!s || !logits || n_vocab <= 0 || n_vocab > INT32_MAX)
        return -1;
    if (n_vocab > s->c_cap) {
        cand *c = realloc(s->c, (size_t)n_vocab * sizeof *c);
        if (!c)
            return -1;
        s->c = c;
        s->c_cap = n_vocab;
    }
    cand *c = s->c;
    for (int64_t i = 0; i < n_vocab; i++)
        c[i] = (cand){(int32_t)i, logits[i], 0};
    penalize(s, c, n_vocab);
    if (s->p.temp <= 0) {
        int64_t best = 0;
        for (int64_t i = 1; i < n_vocab; i++)
            if (better(&c[i], &c[best]))
                best = i;
        return c[best].id;
    }
    int64_t n = n_vocab;
    int64_t k = s->p.top_k > 0 && s->p.top_k < n ? s->p.top_k : n;
    if (k < n) {
        top_k(c, n, k);
        n = k;
    } else if (s->p.top_p < 1.0f) {
        qsort(c, (size_t)n, sizeof *c, cmp_cand); /* top-p needs the full order */
    }
    if (s->p.top_p < 1.0f)
        n = top_p(c, n, s->p.top_p);
    if (s->p.min_p > 0.0f)
        n = min_p(c, n, s->p.min_p);
    return draw(s, c, n);
}
