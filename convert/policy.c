#include "convert/policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "formats/quant/interleave.h"
#include "formats/base/regex.h"

/* ---- --type names ------------------------------------------------------------------ */

typedef struct qtype_name {
    const char *name;
    moe_ftype ftype;
    moe_type base;
} qtype_name;

static const qtype_name qtype_names[] = {
    {"Q4_0", MOE_FTYPE_Q4_0, MOE_TYPE_Q4_0},         {"Q4_1", MOE_FTYPE_Q4_1, MOE_TYPE_Q4_1},
    {"Q5_0", MOE_FTYPE_Q5_0, MOE_TYPE_Q5_0},         {"Q5_1", MOE_FTYPE_Q5_1, MOE_TYPE_Q5_1},
    {"Q8_0", MOE_FTYPE_Q8_0, MOE_TYPE_Q8_0},         {"F16", MOE_FTYPE_F16, MOE_TYPE_F16},
    {"BF16", MOE_FTYPE_BF16, MOE_TYPE_BF16},         {"F32", MOE_FTYPE_ALL_F32, MOE_TYPE_F32},
    {"Q2_K", MOE_FTYPE_Q2_K, MOE_TYPE_Q2_K},         {"Q2_K_S", MOE_FTYPE_Q2_K_S, MOE_TYPE_Q2_K},
    {"Q3_K", MOE_FTYPE_Q3_K_M, MOE_TYPE_Q3_K},       {"Q3_K_S", MOE_FTYPE_Q3_K_S, MOE_TYPE_Q3_K},
    {"Q3_K_M", MOE_FTYPE_Q3_K_M, MOE_TYPE_Q3_K},     {"Q3_K_L", MOE_FTYPE_Q3_K_L, MOE_TYPE_Q3_K},
    {"Q4_K", MOE_FTYPE_Q4_K_M, MOE_TYPE_Q4_K},       {"Q4_K_S", MOE_FTYPE_Q4_K_S, MOE_TYPE_Q4_K},
    {"Q4_K_M", MOE_FTYPE_Q4_K_M, MOE_TYPE_Q4_K},     {"Q5_K", MOE_FTYPE_Q5_K_M, MOE_TYPE_Q5_K},
    {"Q5_K_S", MOE_FTYPE_Q5_K_S, MOE_TYPE_Q5_K},     {"Q5_K_M", MOE_FTYPE_Q5_K_M, MOE_TYPE_Q5_K},
    {"Q6_K", MOE_FTYPE_Q6_K, MOE_TYPE_Q6_K},         {"IQ4_NL", MOE_FTYPE_IQ4_NL, MOE_TYPE_IQ4_NL},
    {"IQ4_XS", MOE_FTYPE_IQ4_XS, MOE_TYPE_IQ4_XS},
};
#define N_QTYPE_NAMES (sizeof qtype_names / sizeof qtype_names[0])

static const qtype_name *find_mix(moe_type base) {
    for (size_t i = 0; i < N_QTYPE_NAMES; i++)
        if (qtype_names[i].base == base)
            return &qtype_names[i]; /* the first entry of a base is its plain name */
    return NULL;
}

moe_status moe_qtype_parse(const char *name, moe_qtype_choice *out, moe_err *err) {
    for (size_t i = 0; i < N_QTYPE_NAMES; i++) {
        if (!strcasecmp(name, qtype_names[i].name)) {
            *out = (moe_qtype_choice){qtype_names[i].ftype, qtype_names[i].base, false,
                                      qtype_names[i].name};
            return MOE_OK;
        }
    }
    moe_type t;
    const moe_type_traits *tr = moe_type_from_name(name, &t) ? moe_type_get(t) : NULL;
    if (tr && tr->interleave_rows && moe_interleave_supported(t)) {
        const qtype_name *mix = find_mix(tr->base);
        if (mix) {
            *out = (moe_qtype_choice){mix->ftype, mix->base, true, tr->name};
            return MOE_OK;
        }
    }
    return moe_fail(err, MOE_ERR_USAGE,
                    "unknown type '%s' (expected one of Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q2_K_S "
                    "Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K IQ4_NL IQ4_XS F16 "
                    "BF16 F32, or an interleaved q4_0_r8 q8_0_r8 iq4_nl_r4 q5_0_r4 q2_k_r4 "
                    "q3_k_r4 q4_k_r4 q5_k_r4 q6_k_r4 iq4_xs_r8)",
                    name);
}

/* ---- setup --------------------------------------------------------------------------- */

static int64_t arch_int(const moe_gguf *g, const char *arch, const char *suffix, int64_t def) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int64_t v;
    return moe_gguf_get_int(g, key, &v, NULL) == MOE_OK ? v : def;
}

static moe_status parse_rules(moe_policy *p, const char *const *spec, int n, moe_err *err) {
    p->rules = calloc(n ? (size_t)n : 1, sizeof *p->rules);
    MOE_FAIL_IF(!p->rules, err, MOE_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        const char *eq = strrchr(spec[i], '=');
        MOE_FAIL_IF(!eq || eq == spec[i] || !eq[1], err, MOE_ERR_USAGE,
                    "--tensor-type '%s': expected REGEX=TYPE", spec[i]);
        moe_type_rule *r = &p->rules[p->n_rules++];
        r->pattern = strndup(spec[i], (size_t)(eq - spec[i]));
        MOE_FAIL_IF(!r->pattern, err, MOE_ERR_NOMEM, "out of memory");
        MOE_FAIL_IF(!moe_type_from_name(eq + 1, &r->type) || !moe_type_get(r->type) ||
                        moe_type_get(r->type)->interleave_rows,
                    err, MOE_ERR_USAGE, "--tensor-type '%s': '%s' is not a plain tensor type",
                    spec[i], eq + 1);
        MOE_TRY(moe_regex_compile(r->pattern, "--tensor-type", &r->compiled, err));
    }
    return MOE_OK;
}

moe_status moe_policy_init(moe_policy *p, const moe_gguf *g, const moe_gguf_tensor *tensors,
                           uint64_t n_tensors, const moe_qtype_choice *choice, bool pure,
                           bool has_imatrix, const char *const *rules_spec, int n,
                           bool interleave, const char *interleave_pattern, moe_err *err) {
    memset(p, 0, sizeof *p);
    p->choice = *choice;
    p->pure = pure;
    p->has_imatrix = has_imatrix;
    p->output_type = p->token_embd_type = (moe_type)MOE_TYPE_ID_LIMIT;
    p->interleave = interleave || choice->interleave;
    const char *arch = "llama";
    moe_gguf_get_str(g, "general.architecture", &arch, NULL);
    p->n_layer = arch_int(g, arch, "block_count", 0);
    p->n_expert = arch_int(g, arch, "expert_count", 0);
    p->n_head = arch_int(g, arch, "attention.head_count", 1);
    p->n_head_kv = arch_int(g, arch, "attention.head_count_kv", p->n_head);
    for (uint64_t i = 0; i < n_tensors; i++) {
        const char *nm = tensors[i].name;
        p->has_output |= !strcmp(nm, "output.weight");
        if (strstr(nm, "attn_v.weight") || strstr(nm, "attn_qkv.weight") ||
            strstr(nm, "attn_kv_b.weight"))
            p->n_attention_wv++;
    }
    MOE_TRY(parse_rules(p, rules_spec, n, err));
    if (p->interleave) {
        /* an explicit _rN type interleaves every eligible tensor, as ik_llama.cpp's
         * llama-quantize does; --interleave alone keeps non-expert tensors plain
         * because interleaved tensors are slow or unsupported on GPUs */
        const char *pat = interleave_pattern ? interleave_pattern
                          : choice->interleave ? "."
                                               : "_exps\\.";
        p->interleave_pattern = strdup(pat);
        MOE_FAIL_IF(!p->interleave_pattern, err, MOE_ERR_NOMEM, "out of memory");
        MOE_TRY(moe_regex_compile(pat, "--interleave-pattern", &p->interleave_re, err));
    }
    return MOE_OK;
}

void moe_policy_free(moe_policy *p) {
    if (!p)
        return;
    for (int i = 0; i < p->n_rules; i++) {
        free(p->rules[i].pattern);
        moe_regex_free(p->rules[i].compiled);
    }
    free(p->rules);
    moe_regex_free(p->interleave_re);
    free(p->interleave_pattern);
    memset(p, 0, sizeof *p);
}

/* ---- llama-quantize's rules ------------------------------------------------------ */

bool moe_policy_quantizable(const moe_gguf_tensor *t) {
    const char *n = t->name;
    size_t len = strlen(n);
    if (t->n_dims < 2 || len < 6 || strcmp(n + len - 6, "weight") != 0)
        return false;
    static const char *const never[] = {"_norm.weight", "ffn_gate_inp.weight", "ssm_conv1d",
                                        "attn_rel_b.weight", "time_mix_"};
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++)
        if (strstr(n, never[i]))
            return false;
    return strcmp(n, "position_embd.weight") != 0 && strcmp(n, "token_types.weight") != 0;
}

static bool use_more_bits(int64_t i, int64_t n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* Layer of an ffn tensor: parsed from the name in MoE models (experts are not
 * stored in layer order), else the running counter. */
static int64_t ffn_layer(const moe_policy *p, const char *name, int counter) {
    int layer;
    if (p->n_expert > 1 && sscanf(name, "blk.%d.", &layer) == 1)
        return layer;
    return counter;
}

static moe_type output_rule(const moe_policy *p, const moe_gguf_tensor *t, moe_type cur) {
    if (t->ne[0] % 256 != 0)
        return MOE_TYPE_Q8_0;
    return cur != MOE_TYPE_Q8_0 ? MOE_TYPE_Q6_K : cur;
}

static moe_type attn_v_rule(moe_policy *p, moe_type cur) {
    moe_ftype f = p->choice.ftype;
    int64_t gqa = p->n_head_kv > 0 ? p->n_head / p->n_head_kv : 1;
    if (f == MOE_FTYPE_Q2_K)
        cur = gqa >= 4 ? MOE_TYPE_Q4_K : MOE_TYPE_Q3_K;
    else if (f == MOE_FTYPE_Q2_K_S && gqa >= 4)
        cur = MOE_TYPE_Q4_K;
    else if (f == MOE_FTYPE_Q3_K_M)
        cur = p->i_attention_wv < 2 ? MOE_TYPE_Q5_K : MOE_TYPE_Q4_K;
    else if (f == MOE_FTYPE_Q3_K_L)
        cur = MOE_TYPE_Q5_K;
    else if ((f == MOE_FTYPE_IQ4_NL || f == MOE_FTYPE_IQ4_XS) && gqa >= 4)
        cur = MOE_TYPE_Q5_K;
    else if ((f == MOE_FTYPE_Q4_K_M || f == MOE_FTYPE_Q5_K_M) &&
             use_more_bits(p->i_attention_wv, p->n_attention_wv))
        cur = MOE_TYPE_Q6_K;
    else if (f == MOE_FTYPE_Q4_K_S && p->i_attention_wv < 4)
        cur = MOE_TYPE_Q5_K;
    if (p->n_expert == 8) /* llama.cpp: "trades just ~128MB" for 8-expert models */
        cur = MOE_TYPE_Q8_0;
    p->i_attention_wv++;
    return cur;
}

static moe_type ffn_down_rule(moe_policy *p, const char *name, moe_type cur) {
    moe_ftype f = p->choice.ftype;
    int64_t i = ffn_layer(p, name, p->i_ffn_down), n = p->n_layer;
    if (f == MOE_FTYPE_Q2_K)
        cur = MOE_TYPE_Q3_K;
    else if (f == MOE_FTYPE_Q2_K_S) {
        if (i < n / 8)
            cur = MOE_TYPE_Q4_K;
    } else if (f == MOE_FTYPE_Q3_K_M)
        cur = i < n / 16 ? MOE_TYPE_Q5_K : MOE_TYPE_Q4_K;
    else if (f == MOE_FTYPE_Q3_K_L)
        cur = MOE_TYPE_Q5_K;
    else if (f == MOE_FTYPE_Q4_K_M) {
        if (use_more_bits(i, n))
            cur = MOE_TYPE_Q6_K;
    } else if (i < n / 8 && (f == MOE_FTYPE_IQ4_NL || f == MOE_FTYPE_IQ4_XS) && !p->has_imatrix)
        cur = MOE_TYPE_Q5_K;
    else if (f == MOE_FTYPE_Q5_K_M && use_more_bits(i, n))
        cur = MOE_TYPE_Q6_K;
    else if (f == MOE_FTYPE_Q4_K_S && i < n / 8)
        cur = MOE_TYPE_Q5_K;
    else if ((f == MOE_FTYPE_Q4_0 || f == MOE_FTYPE_Q5_0) && p->has_imatrix && i < n / 8)
        cur = f == MOE_FTYPE_Q4_0 ? MOE_TYPE_Q4_1 : MOE_TYPE_Q5_1;
    p->i_ffn_down++;
    return cur;
}

static moe_type attn_output_rule(const moe_policy *p, moe_type cur) {
    moe_ftype f = p->choice.ftype;
    if (p->n_expert == 8) {
        if (f == MOE_FTYPE_Q2_K || f == MOE_FTYPE_Q3_K_S || f == MOE_FTYPE_Q3_K_M ||
            f == MOE_FTYPE_IQ4_NL || f == MOE_FTYPE_Q4_K_S || f == MOE_FTYPE_Q4_K_M ||
            f == MOE_FTYPE_IQ4_XS)
            cur = MOE_TYPE_Q5_K;
    } else if (f == MOE_FTYPE_Q2_K) {
        cur = MOE_TYPE_Q3_K;
    } else if (f == MOE_FTYPE_Q3_K_M) {
        cur = MOE_TYPE_Q4_K;
    } else if (f == MOE_FTYPE_Q3_K_L) {
        cur = MOE_TYPE_Q5_K;
    }
    return cur;
}

/* llama.cpp's llama_tensor_get_type (Feb 2025) for the mixes we produce; the
 * branch order matters (first substring match wins). */
static moe_type mix_rules(moe_policy *p, const moe_gguf_tensor *t, moe_type cur) {
    const char *n = t->name;
    moe_ftype f = p->choice.ftype;
    if (!strcmp(n, "output.weight") || (!p->has_output && !strcmp(n, "token_embd.weight")))
        return output_rule(p, t, cur);
    if (!strcmp(n, "token_embd.weight"))
        return cur;
    if (strstr(n, "attn_v.weight"))
        return attn_v_rule(p, cur);
    if (strstr(n, "attn_k.weight"))
        return p->n_expert == 8 ? MOE_TYPE_Q8_0 : cur;
    if (strstr(n, "attn_q.weight"))
        return cur;
    if (strstr(n, "ffn_down"))
        return ffn_down_rule(p, n, cur);
    if (strstr(n, "attn_output.weight"))
        return attn_output_rule(p, cur);
    if (strstr(n, "attn_qkv.weight")) {
        if (f == MOE_FTYPE_Q3_K_M || f == MOE_FTYPE_Q3_K_L)
            return MOE_TYPE_Q4_K;
        if (f == MOE_FTYPE_Q4_K_M)
            return MOE_TYPE_Q5_K;
        if (f == MOE_FTYPE_Q5_K_M)
            return MOE_TYPE_Q6_K;
        return cur;
    }
    if (strstr(n, "ffn_gate"))
        p->i_ffn_gate++;
    else if (strstr(n, "ffn_up"))
        p->i_ffn_up++;
    return cur;
}

/* Row length not a multiple of the block size: llama.cpp's substitutes. */
static moe_type fallback(moe_type t, int64_t ne0) {
    moe_type sub = t;
    switch (t) {
    case MOE_TYPE_Q2_K: case MOE_TYPE_Q3_K: case MOE_TYPE_IQ4_XS: sub = MOE_TYPE_IQ4_NL; break;
    case MOE_TYPE_Q4_K: sub = MOE_TYPE_Q5_0; break;
    case MOE_TYPE_Q5_K: sub = MOE_TYPE_Q5_1; break;
    case MOE_TYPE_Q6_K: sub = MOE_TYPE_Q8_0; break;
    default: sub = MOE_TYPE_F16; break;
    }
    return ne0 % moe_type_get(sub)->block_size == 0 ? sub : MOE_TYPE_F16;
}

static void choose_interleave(const moe_policy *p, const moe_gguf_tensor *t,
                              moe_tensor_choice *c) {
    if (!p->interleave || !moe_regex_search(p->interleave_re, t->name))
        return;
    moe_type v = moe_interleaved_variant(c->plain);
    if (v == c->plain)
        return;
    if (!strcmp(t->name, "token_embd.weight")) {
        c->note = "token embeddings are never interleaved (rows are looked up one by one)";
        return;
    }
    int R = moe_type_get(v)->interleave_rows;
    if (t->ne[1] % R != 0) {
        c->note = "rows are not a multiple of the interleave factor: kept plain";
        return;
    }
    c->type = v;
    c->interleaved = true;
}

moe_status moe_policy_choose(moe_policy *p, const moe_gguf_tensor *t, moe_tensor_choice *out,
                             moe_err *err) {
    memset(out, 0, sizeof *out);
    out->type = out->plain = t->type;
    if (!moe_policy_quantizable(t))
        return MOE_OK; /* MOE_REASON_KEEP */
    moe_type ty = p->choice.base;
    moe_type_reason why = MOE_REASON_DEFAULT;
    bool quantized_base = ty != MOE_TYPE_F32 && ty != MOE_TYPE_F16 && ty != MOE_TYPE_BF16;
    bool manual = false;
    for (int i = 0; i < p->n_rules && !manual; i++) {
        if (moe_regex_search(p->rules[i].compiled, t->name)) {
            ty = p->rules[i].type;
            why = MOE_REASON_USER;
            manual = true;
        }
    }
    if (!manual && !p->pure && quantized_base) {
        moe_type mixed = mix_rules(p, t, ty);
        if (mixed != ty)
            why = MOE_REASON_MIX_RULE;
        ty = mixed;
    }
    if (p->token_embd_type != (moe_type)MOE_TYPE_ID_LIMIT && !strcmp(t->name, "token_embd.weight"))
        ty = p->token_embd_type, why = MOE_REASON_USER;
    if (p->output_type != (moe_type)MOE_TYPE_ID_LIMIT && !strcmp(t->name, "output.weight"))
        ty = p->output_type, why = MOE_REASON_USER;
    if (t->ne[0] % moe_type_get(ty)->block_size != 0) {
        ty = fallback(ty, t->ne[0]);
        why = MOE_REASON_FALLBACK;
        out->fallback = true;
    }
    out->type = out->plain = ty;
    out->reason = why;
    choose_interleave(p, t, out);
    (void)err;
    return MOE_OK;
}

const char *moe_type_reason_name(moe_type_reason r) {
    static const char *const names[] = {"keep", "default", "mix rule", "user", "fallback"};
    return names[r];
}
