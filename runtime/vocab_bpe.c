/* vocab_bpe.c — byte-level BPE ("gpt2") as llama.cpp runs it: split the text
 * with the pre-tokenizer's regexes, map bytes to the GPT-2 alphabet, merge by
 * rank (../shared/spec/model.md §6.2, §6.4).
 *
 * llama.cpp runs most of these regexes with std::regex over a copy of the
 * text where each non-ASCII code point is collapsed to a byte standing for its
 * Unicode category, and the GPT-2 and LLaMA-3 ones with hand-written
 * splitters. PCRE2 with UTF + UCP gives the same splits directly: \p{L},
 * \p{N}, \p{P}, \s mean the same categories, alternation is leftmost-first in
 * both, and each regex sees one piece at a time, as its whole subject.
 */
#define MOE_VOCAB_INTERNAL
#include "runtime/vocab.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base/checked.h"
#include "formats/base/log.h"

/* ---- pre-tokenizers ------------------------------------------------------------------------ */

/* Regex strings exactly as llama.cpp spells them (C-escaped). */
#define RE_LLAMA3 \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|" \
    "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2 \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|" \
    "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|" \
    "\\s+(?!\\S)|\\s+"
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_TEKKEN \
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|" \
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}|" \
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_PORO " ?[^(\\s|.,!?…。，、।۔،)]+"
#define RE_DSLLM_LETTERS \
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ" \
    "-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-" \
    "ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+"
#define RE_DSLLM_PUNCT "\\s?[!-/:-~！-／：-～‘-‟　-。]+"
#define RE_CJK_KOREAN "[一-龥ࠀ-一가-퟿]+"
#define RE_DSV3_CJK "[一-龥぀-ゟ゠-ヿ]+"
#define RE_DSV3_MAIN \
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|" \
    "[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|" \
    "\\s+(?!\\S)|\\s+"
#define RE_FALCON_PUNCT "[\\p{P}\\$\\+<=>\\^~\\|`]+"
#define RE_DEFAULT_PUNCT "[\\p{P}\\$\\+<=>\\^~\\|]+"

#define MAX_REGEX 6

typedef struct pre_def {
    const char *const *names; /* NULL-terminated */
    const char *regex[MAX_REGEX + 1];
    bool ignore_merges; /* a piece that is a whole token is taken as is */
    bool add_bos;       /* default of tokenizer.ggml.add_bos_token */
} pre_def;

static const char *const N_LLAMA3[] = {"llama3", "llama-v3", "llama-bpe", "falcon3", NULL};
static const char *const N_DBRX[] = {"dbrx", "smaug-bpe", NULL};
static const char *const N_QWEN2[] = {"qwen2", "deepseek-r1-qwen", "megrez", "stablelm2",
                                      "hunyuan", "solar-open", NULL};
static const char *const N_DSLLM[] = {"deepseek-llm", NULL};
static const char *const N_DSV3[] = {"deepseek-v3", NULL};
static const char *const N_DSCODER[] = {"deepseek-coder", NULL};
static const char *const N_GPT2[] = {"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat",
                                     "jina-v1-en", "jina-v2-es", "jina-v2-de", "jina-v2-code",
                                     "roberta-bpe", "mpt", "olmo", "jais", NULL};
static const char *const N_STARCODER[] = {"starcoder", "refact", "command-r", "smollm",
                                          "codeshell", "exaone", "minerva-7b", NULL};
static const char *const N_FALCON[] = {"falcon", NULL};
static const char *const N_TEKKEN[] = {"tekken", NULL};
static const char *const N_PORO[] = {"poro-chat", "bloom", "gpt3-finnish", NULL};
static const char *const N_VIKING[] = {"viking", NULL};
static const char *const N_DEFAULT[] = {"default", NULL};

static const pre_def PRE_DEFS[] = {
    {N_LLAMA3, {RE_LLAMA3}, true, true},
    {N_DBRX, {RE_LLAMA3}, false, false},
    {N_QWEN2, {RE_QWEN2}, false, false},
    {N_DSLLM,
     {"[\r\n]", RE_DSLLM_LETTERS, RE_DSLLM_PUNCT, "\\s+$", RE_CJK_KOREAN, "\\p{N}+"},
     false, false},
    {N_DSV3, {"\\p{N}{1,3}", RE_DSV3_CJK, RE_DSV3_MAIN}, false, false},
    {N_DSCODER, {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_CJK_KOREAN, "\\p{N}"}, false, false},
    {N_GPT2, {RE_GPT2}, false, false},
    {N_STARCODER, {"\\p{N}", RE_GPT2}, false, false},
    {N_FALCON, {RE_FALCON_PUNCT, RE_GPT2, "[0-9][0-9][0-9]"}, false, false},
    {N_TEKKEN, {RE_TEKKEN}, true, true},
    {N_PORO, {RE_PORO}, false, false},
    {N_VIKING, {RE_PORO, "\\p{N}"}, false, false},
    {N_DEFAULT, {RE_DEFAULT_PUNCT, RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}, false, false},
};

static const pre_def *find_pre(const char *name, const char **canonical) {
    for (size_t i = 0; i < sizeof PRE_DEFS / sizeof PRE_DEFS[0]; i++)
        for (const char *const *n = PRE_DEFS[i].names; *n; n++)
            if (strcmp(*n, name) == 0) {
                *canonical = *n;
                return &PRE_DEFS[i];
            }
    return NULL;
}

/* ---- the loaded tokenizer ------------------------------------------------------------------ */

#define N_MAPPED 0x144 /* code points the byte alphabet uses: U+0000..U+0143 */

struct moe_bpe {
    const pre_def *pre;
    const char *pre_name;
    pcre2_code *re[MAX_REGEX];
    int n_re;
    int32_t n_merges;
    char *merges;     /* every merge string "left right", back to back */
    uint32_t *moff;   /* n_merges + 1 offsets */
    uint32_t *msplit; /* bytes of the left operand; 0: no space, never matches */
    moe_vocab_map mmap; /* merge text -> rank; the first (lowest) rank wins */
    char byte_utf8[256][2]; /* byte -> its GPT-2 alphabet character */
    uint8_t byte_len[256];
    int16_t cp_byte[N_MAPPED]; /* inverse: code point -> byte, or -1 */
};

/* GPT-2's byte alphabet: printable Latin-1 bytes stand for themselves, the 68
 * others for U+0100.. in increasing byte order. */
static void build_byte_map(moe_bpe *b) {
    for (int i = 0; i < N_MAPPED; i++)
        b->cp_byte[i] = -1;
    int next = 0x100;
    for (int c = 0; c < 256; c++) {
        bool same = (c >= 0x21 && c <= 0x7e) || (c >= 0xa1 && c <= 0xac) || c >= 0xae;
        int cp = same ? c : next++;
        if (cp < 0x80) {
            b->byte_utf8[c][0] = (char)cp;
            b->byte_len[c] = 1;
        } else {
            b->byte_utf8[c][0] = (char)(0xc0 | (cp >> 6));
            b->byte_utf8[c][1] = (char)(0x80 | (cp & 0x3f));
            b->byte_len[c] = 2;
        }
        b->cp_byte[cp] = (int16_t)c;
    }
}

static int32_t find_merge(const moe_bpe *b, const char *l, size_t ln, const char *r, size_t rn) {
    uint64_t h = moe_vocab_hash(l, ln, MOE_VOCAB_HASH_SEED);
    h = moe_vocab_hash(" ", 1, h);
    h = moe_vocab_hash(r, rn, h);
    for (uint32_t i = (uint32_t)h & b->mmap.mask;; i = (i + 1) & b->mmap.mask) {
        int32_t m = b->mmap.slot[i];
        if (m < 0)
            return -1;
        const char *s = b->merges + b->moff[m];
        if (b->moff[m + 1] - b->moff[m] == ln + 1 + rn && b->msplit[m] == ln &&
            memcmp(s, l, ln) == 0 && memcmp(s + ln + 1, r, rn) == 0)
            return m;
    }
}

static void put_merge(moe_bpe *b, int32_t m) {
    const char *s = b->merges + b->moff[m];
    size_t n = b->moff[m + 1] - b->moff[m];
    uint32_t i = (uint32_t)moe_vocab_hash(s, n, MOE_VOCAB_HASH_SEED) & b->mmap.mask;
    for (;; i = (i + 1) & b->mmap.mask) {
        int32_t old = b->mmap.slot[i];
        if (old < 0)
            break;
        if (b->moff[old + 1] - b->moff[old] == n && memcmp(b->merges + b->moff[old], s, n) == 0)
            return; /* duplicate merge: keep the lower rank */
    }
    b->mmap.slot[i] = m;
}

static moe_status load_merges(moe_bpe *b, const moe_gguf *g, moe_err *err) {
    int64_t k = moe_gguf_find_key(g, "tokenizer.ggml.merges");
    MOE_FAIL_IF(k < 0, err, MOE_ERR_FORMAT,
                "missing key 'tokenizer.ggml.merges' (required by the gpt2 tokenizer)");
    const moe_gguf_kv *kv = &g->kv[k];
    MOE_FAIL_IF(kv->type != MOE_GGUF_ARRAY || kv->elem_type != MOE_GGUF_STRING, err,
                MOE_ERR_FORMAT, "tokenizer.ggml.merges: expected arr[str], found %s",
                moe_gguf_vtype_name(kv->type));
    MOE_FAIL_IF(kv->count >= INT32_MAX, err, MOE_ERR_FORMAT, "tokenizer.ggml.merges: %llu merges",
                (unsigned long long)kv->count);
    b->n_merges = (int32_t)kv->count;
    uint64_t total = 0;
    for (int32_t i = 0; i < b->n_merges; i++) {
        const char *s;
        uint64_t len;
        MOE_TRY(moe_gguf_arr_str(kv, (uint64_t)i, &s, &len, err));
        total += len;
    }
    MOE_FAIL_IF(total >= UINT32_MAX, err, MOE_ERR_FORMAT, "tokenizer.ggml.merges: too long");
    b->merges = malloc(total + 1);
    b->moff = malloc(((size_t)b->n_merges + 1) * sizeof *b->moff);
    b->msplit = malloc(((size_t)b->n_merges + 1) * sizeof *b->msplit);
    MOE_FAIL_IF(!b->merges || !b->moff || !b->msplit, err, MOE_ERR_NOMEM, "out of memory");
    MOE_TRY(moe_vocab_map_init(&b->mmap, (size_t)b->n_merges, err));
    uint32_t at = 0;
    for (int32_t i = 0; i < b->n_merges; i++) {
        const char *s;
        uint64_t len;
        MOE_TRY(moe_gguf_arr_str(kv, (uint64_t)i, &s, &len, err));
        memcpy(b->merges + at, s, len);
        b->moff[i] = at;
        /* Split at the first space after index 0; a merge without one is
         * inert in llama.cpp (it pairs two empty strings). */
        const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        b->msplit[i] = sp ? (uint32_t)(sp - s) : 0;
        at += (uint32_t)len;
    }
    b->moff[b->n_merges] = at;
    for (int32_t i = 0; i < b->n_merges; i++)
        if (b->msplit[i])
            put_merge(b, i);
    return MOE_OK;
}

static moe_status compile_pre(moe_bpe *b, moe_err *err) {
    for (int i = 0; i < MAX_REGEX && b->pre->regex[i]; i++) {
        int code;
        PCRE2_SIZE at;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)b->pre->regex[i], PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &code, &at,
                                       NULL);
        if (!re) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(code, msg, sizeof msg);
            return moe_fail(err, MOE_ERR_INTERNAL,
                            "pre-tokenizer '%s' regex %d does not compile at %zu: %s",
                            b->pre_name, i, (size_t)at, (const char *)msg);
        }
        /* JIT is only a speed-up: without it pcre2_match interprets. */
        (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
        b->re[b->n_re++] = re;
    }
    return MOE_OK;
}

moe_status moe_bpe_load(moe_vocab *v, const moe_gguf *g, moe_err *err) {
    const char *name = "default";
    int64_t k = moe_gguf_find_key(g, "tokenizer.ggml.pre");
    if (k < 0)
        MOE_WARN("tokenizer.ggml.pre is missing: using the 'default' pre-tokenizer, which "
                 "probably splits text differently from the model's own tokenizer");
    else
        MOE_TRY(moe_gguf_get_str(g, "tokenizer.ggml.pre", &name, err));
    const char *canonical = NULL;
    const pre_def *pre = find_pre(name, &canonical);
    MOE_FAIL_IF(!pre, err, MOE_ERR_UNSUPPORTED,
                "tokenizer.ggml.pre '%s' is not a supported pre-tokenizer", name);
    moe_bpe *b = calloc(1, sizeof *b);
    MOE_FAIL_IF(!b, err, MOE_ERR_NOMEM, "out of memory");
    v->bpe = b;
    b->pre = pre;
    b->pre_name = canonical;
    v->add_bos = pre->add_bos;
    build_byte_map(b);
    MOE_TRY(load_merges(b, g, err));
    return compile_pre(b, err);
}

void moe_bpe_free(moe_bpe *b) {
    if (!b)
        return;
    for (int i = 0; i < b->n_re; i++)
        pcre2_code_free(b->re[i]);
    moe_vocab_map_free(&b->mmap);
    free(b->merges);
    free(b->moff);
    free(b->msplit);
    free(b);
}

const char *moe_bpe_pre_name(const moe_bpe *b) { return b->pre_name; }

/* ---- splitting ----------------------------------------------------------------------------- */

/* Decodes one code point the way llama.cpp does: structure is checked, but
 * overlong forms pass; a bad lead or missing continuation byte costs one byte
 * and yields U+FFFD. */
static uint32_t decode_utf8(const unsigned char *s, size_t n, size_t *i) {
    unsigned char c = s[*i];
    size_t need;
    uint32_t cp;
    if (c < 0x80) {
        (*i)++;
        return c;
    }
    if ((c & 0xe0) == 0xc0) {
        need = 1;
        cp = c & 0x1fu;
    } else if ((c & 0xf0) == 0xe0) {
        need = 2;
        cp = c & 0x0fu;
    } else if ((c & 0xf8) == 0xf0) {
        need = 3;
        cp = c & 0x07u;
    } else { /* a continuation byte or 0xf8.. as lead */
        (*i)++;
        return 0xfffd;
    }
    for (size_t k = 1; k <= need; k++) {
        if (*i + k >= n || (s[*i + k] & 0xc0) != 0x80) {
            (*i)++;
            return 0xfffd;
        }
        cp = (cp << 6) | (s[*i + k] & 0x3fu);
    }
    *i += need + 1;
    return cp;
}

static size_t encode_utf8(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Re-encodes text as valid UTF-8 (what llama.cpp's code-point round trip
 * produces; surrogates and values past U+10FFFF, which PCRE2 cannot take,
 * become U+FFFD). At most 3 bytes out per byte in. */
static size_t sanitize(const char *text, size_t len, char *out) {
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp = decode_utf8((const unsigned char *)text, len, &i);
        if ((cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
            cp = 0xfffd;
        n += encode_utf8(cp, out + n);
    }
    return n;
}

typedef struct span {
    size_t off, len;
} span;

typedef struct spanvec {
    span *d;
    size_t n, cap;
} spanvec;

static bool span_push(spanvec *sv, size_t off, size_t len) {
    span *d = moe_grow(sv->d, &sv->cap, sv->n + 1, 64, sizeof *d);
    if (!d)
        return false;
    sv->d = d;
    sv->d[sv->n++] = (span){off, len};
    return true;
}

static int run_match(const pcre2_code *re, const char *s, size_t n, size_t at,
                     pcre2_match_data *md) {
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* long whitespace runs: interpret instead */
        rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
    return rc;
}

/* Splits one piece with one regex: matches and the gaps between them all
 * become pieces, in order (llama.cpp's unicode_regex_split). */
static bool split_piece(const pcre2_code *re, const char *t, span p, pcre2_match_data *md,
                        spanvec *out) {
    const char *s = t + p.off;
    size_t at = 0, gap = 0;
    while (at < p.len) {
        int rc = run_match(re, s, p.len, at, md);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0)
            return false;
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (ms > gap && !span_push(out, p.off + gap, ms - gap))
            return false;
        if (me > ms && !span_push(out, p.off + ms, me - ms))
            return false;
        gap = me;
        if (me == ms) { /* empty match: step over one character */
            me++;
            while (me < p.len && ((unsigned char)s[me] & 0xc0) == 0x80)
                me++;
        }
        at = me;
    }
    return gap >= p.len || span_push(out, p.off + gap, p.len - gap);
}

static bool pre_split(const moe_bpe *b, const char *t, size_t n, spanvec *cur, spanvec *tmp) {
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    bool ok = md && span_push(cur, 0, n);
    for (int r = 0; ok && r < b->n_re; r++) {
        tmp->n = 0;
        for (size_t i = 0; ok && i < cur->n; i++)
            ok = split_piece(b->re[r], t, cur->d[i], md, tmp);
        spanvec swap = *cur;
        *cur = *tmp;
        *tmp = swap;
    }
    pcre2_match_data_free(md);
    return ok;
}

/* ---- merging ------------------------------------------------------------------------------- */

typedef struct sym {
    int32_t prev, next;
    uint32_t off, n;
} sym;

typedef struct bpe_work {
    const moe_vocab *v;
    char *word;   /* the piece in the byte alphabet */
    sym *syms;
    moe_bigram_heap q;
} bpe_work;

static void try_pair(bpe_work *w, int32_t left, int32_t right) {
    if (left < 0 || right < 0)
        return;
    const sym *l = &w->syms[left], *r = &w->syms[right];
    int32_t rank = find_merge(w->v->bpe, w->word + l->off, l->n, w->word + r->off, r->n);
    if (rank >= 0)
        moe_bigram_push(&w->q, (moe_bigram){-(double)rank, left, right, l->n + r->n});
}

/* Tokens of one byte-alphabet word of n bytes. */
static void merge_word(bpe_work *w, size_t n, moe_tokvec *out) {
    const moe_vocab *v = w->v;
    if (v->bpe->pre->ignore_merges) {
        int32_t id = moe_vocab_find(v, w->word, n);
        if (id >= 0) {
            moe_tokvec_push(out, id);
            return;
        }
    }
    int32_t count = 0;
    for (uint32_t off = 0; off < n; count++) {
        uint32_t k = ((unsigned char)w->word[off] & 0x80) && off + 1 < n ? 2 : 1; /* < U+0800 */
        w->syms[count] = (sym){count - 1, off + k >= n ? -1 : count + 1, off, k};
        off += k;
    }
    w->q.n = 0;
    for (int32_t i = 1; i < count; i++)
        try_pair(w, i - 1, i);
    while (w->q.n > 0) {
        moe_bigram b = moe_bigram_pop(&w->q);
        sym *l = &w->syms[b.left], *r = &w->syms[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
            continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            w->syms[r->next].prev = b.left;
        try_pair(w, l->prev, b.left);
        try_pair(w, b.left, l->next);
    }
    out->failed |= w->q.failed;
    for (int32_t i = 0; i != -1; i = w->syms[i].next) {
        const sym *s = &w->syms[i];
        int32_t id = moe_vocab_find(v, w->word + s->off, s->n);
        if (id >= 0) {
            moe_tokvec_push(out, id);
            continue;
        }
        /* Not a token: llama.cpp emits whichever single bytes are tokens. */
        for (uint32_t j = 0; j < s->n; j++) {
            int32_t b = moe_vocab_find(v, w->word + s->off + j, 1);
            if (b >= 0)
                moe_tokvec_push(out, b);
        }
    }
}

bool moe_bpe_tokenize(const moe_vocab *v, const char *text, size_t len, moe_tokvec *out) {
    const moe_bpe *b = v->bpe;
    bpe_work w = {v, NULL, NULL, {0}};
    spanvec cur = {0}, tmp = {0};
    char *clean = malloc(3 * len + 1);
    bool ok = clean != NULL;
    size_t n = ok ? sanitize(text, len, clean) : 0;
    ok = ok && pre_split(b, clean, n, &cur, &tmp);
    size_t longest = 0;
    for (size_t i = 0; ok && i < cur.n; i++)
        longest = cur.d[i].len > longest ? cur.d[i].len : longest;
    if (ok) {
        w.word = malloc(2 * longest + 1);
        w.syms = malloc((2 * longest + 1) * sizeof *w.syms);
        out->failed |= !w.word || !w.syms;
    }
    for (size_t i = 0; ok && w.word && w.syms && i < cur.n; i++) {
        size_t wn = 0;
        for (size_t j = 0; j < cur.d[i].len; j++) {
            unsigned char c = (unsigned char)clean[cur.d[i].off + j];
            memcpy(w.word + wn, b->byte_utf8[c], b->byte_len[c]);
            wn += b->byte_len[c];
        }
        if (wn)
            merge_word(&w, wn, out);
    }
    free(w.word);
    free(w.syms);
    free(w.q.d);
    free(cur.d);
    free(tmp.d);
    free(clean);
    return ok;
}

int32_t moe_bpe_split(const moe_vocab *v, const char *text, size_t len, size_t *ends,
                      int32_t cap) {
    spanvec cur = {0}, tmp = {0};
    char *clean = malloc(3 * len + 1);
    int32_t n = -1;
    if (clean && pre_split(v->bpe, clean, sanitize(text, len, clean), &cur, &tmp)) {
        n = 0;
        for (size_t i = 0; i < cur.n; i++, n++)
            if (n < cap)
                ends[n] = cur.d[i].off + cur.d[i].len;
    }
    free(cur.d);
    free(tmp.d);
    free(clean);
    return n;
}

size_t moe_bpe_piece(const moe_vocab *v, int32_t tok, char *buf) {
    const moe_bpe *b = v->bpe;
    size_t len;
    const char *s = moe_vocab_token_text(v, tok, &len);
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        size_t start = i;
        uint32_t cp = decode_utf8((const unsigned char *)s, len, &i);
        if (cp < N_MAPPED && b->cp_byte[cp] >= 0) {
            if (buf)
                buf[n] = (char)b->cp_byte[cp];
            n++;
        } else { /* outside the alphabet: keep the character as it is */
            if (buf)
                memcpy(buf + n, s + start, i - start);
            n += i - start;
        }
    }
    return n;
}
