/* policy — which type each tensor gets, the way llama-quantize decides.
 *
 * Owns: the --type names (plain types and llama-quantize's mixes such as
 * Q4_K_M, with llama.cpp's ftype ids), which tensors may be quantized at all,
 * llama.cpp's per-tensor rules for mixes (attn_v/attn_k/ffn_down/attn_output/
 * output/token_embd, use_more_bits, n_expert == 8), user overrides
 * (--tensor-type REGEX=TYPE, first match wins; output and token-embedding
 * types), the block-size fallback, and the choice of row-interleaved variants.
 * Does not own: the quantizers (formats/quant/quant.h) or file I/O (quantize.h).
 * Facts: ../shared/spec/quant.md §4.3–4.5 (llama.cpp, Feb 2025).
 */
#ifndef MOE_CONVERT_POLICY_H
#define MOE_CONVERT_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/gguf/gguf.h"
#include "formats/base/regex.h"
#include "formats/base/status.h"
#include "formats/quant/types.h"

/* llama_ftype ids (general.file_type). */
typedef enum moe_ftype {
    MOE_FTYPE_ALL_F32 = 0, MOE_FTYPE_F16 = 1, MOE_FTYPE_Q4_0 = 2, MOE_FTYPE_Q4_1 = 3,
    MOE_FTYPE_Q8_0 = 7, MOE_FTYPE_Q5_0 = 8, MOE_FTYPE_Q5_1 = 9, MOE_FTYPE_Q2_K = 10,
    MOE_FTYPE_Q3_K_S = 11, MOE_FTYPE_Q3_K_M = 12, MOE_FTYPE_Q3_K_L = 13, MOE_FTYPE_Q4_K_S = 14,
    MOE_FTYPE_Q4_K_M = 15, MOE_FTYPE_Q5_K_S = 16, MOE_FTYPE_Q5_K_M = 17, MOE_FTYPE_Q6_K = 18,
    MOE_FTYPE_Q2_K_S = 21, MOE_FTYPE_IQ4_NL = 25, MOE_FTYPE_IQ4_XS = 30, MOE_FTYPE_BF16 = 32,
} moe_ftype;

typedef struct moe_qtype_choice {
    moe_ftype ftype;      /* the mix */
    moe_type base;        /* its default tensor type */
    bool interleave;      /* the name was an interleaved type (q4_0_r8...) */
    const char *name;     /* canonical name, e.g. "Q4_K_M" */
} moe_qtype_choice;

/* Parses a --type name as llama-quantize does, case-insensitively: Q4_0 ...
 * Q8_0, F16, BF16, F32, Q2_K, Q2_K_S, Q3_K (= Q3_K_M), Q3_K_S/M/L, Q4_K (=
 * Q4_K_M), Q4_K_S/M, Q5_K (= Q5_K_M), Q5_K_S/M, Q6_K, IQ4_NL, IQ4_XS, and the
 * interleaved names q4_0_r8, q8_0_r8, iq4_nl_r4, q5_0_r4, q2_k_r4 ... q6_k_r4,
 * iq4_xs_r8 (the plain mix plus interleaving). Usage error listing the valid
 * names otherwise. */
moe_status moe_qtype_parse(const char *name, moe_qtype_choice *out, moe_err *err);

/* One --tensor-type override. */
typedef struct moe_type_rule {
    char *pattern;          /* PCRE2 pattern searched in the tensor name */
    moe_regex *compiled;
    moe_type type;
} moe_type_rule;

typedef struct moe_policy {
    moe_qtype_choice choice;
    bool pure;                /* one type for every quantizable tensor */
    bool has_imatrix;
    moe_type output_type;     /* MOE_TYPE_ID_LIMIT = not set */
    moe_type token_embd_type; /* likewise */
    moe_type_rule *rules;
    int n_rules;
    bool interleave;          /* --interleave or an interleaved --type */
    moe_regex *interleave_re; /* tensors eligible for interleaving */
    char *interleave_pattern;
    /* model facts the rules read */
    int64_t n_layer, n_expert, n_head, n_head_kv;
    bool has_output;          /* output.weight exists (else token_embd is tied) */
    int n_attention_wv;       /* attn_v-like tensors, counted over the model */
    int i_attention_wv, i_ffn_down, i_ffn_gate, i_ffn_up; /* running counters */
} moe_policy;

/* Sets up a policy for a model. rules_spec: "REGEX=TYPE" strings (n of them);
 * interleave_pattern: NULL for the default (routed expert tensors). Reads
 * n_layer, n_expert and heads from g's metadata, and the tensor list from
 * tensors (n_tensors of them): the model as it will be written, which is not
 * g's own table when a legacy file is stacked on the way (source.h). */
moe_status moe_policy_init(moe_policy *p, const moe_gguf *g, const moe_gguf_tensor *tensors,
                           uint64_t n_tensors, const moe_qtype_choice *choice, bool pure,
                           bool has_imatrix, const char *const *rules_spec, int n,
                           bool interleave, const char *interleave_pattern, moe_err *err);

void moe_policy_free(moe_policy *p);

/* Why a tensor got its type (for --dry-run and --json). */
typedef enum moe_type_reason {
    MOE_REASON_KEEP = 0,     /* not quantizable: stays as it is */
    MOE_REASON_DEFAULT,      /* the mix's base type */
    MOE_REASON_MIX_RULE,     /* a llama-quantize per-tensor rule */
    MOE_REASON_USER,         /* --tensor-type / --output-tensor-type / --token-embedding-type */
    MOE_REASON_FALLBACK,     /* row length not a multiple of the block size */
} moe_type_reason;

typedef struct moe_tensor_choice {
    moe_type type;           /* final type, interleaved variant included */
    moe_type plain;          /* before interleaving */
    moe_type_reason reason;
    bool fallback;           /* the block-size fallback changed it */
    bool interleaved;
    const char *note;        /* static text: why interleaving was skipped, etc. */
} moe_tensor_choice;

/* Decides tensor t's type. Must be called once per tensor, in file order (the
 * mix rules count attn_v and ffn_down tensors as llama.cpp does). */
moe_status moe_policy_choose(moe_policy *p, const moe_gguf_tensor *t, moe_tensor_choice *out,
                             moe_err *err);

/* Whether llama-quantize would quantize this tensor at all. */
bool moe_policy_quantizable(const moe_gguf_tensor *t);

const char *moe_type_reason_name(moe_type_reason r);

#endif
