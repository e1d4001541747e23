/* test_arch — the architecture schema (formats/model/arch.h).
 *
 *   test_arch            unit: name helpers, validation, enumeration, key
 *                        round trip through the GGUF writer for every arch
 *                        and layout variant.
 *   test_arch golden     the schema enumerated from each conformance model's
 *                        own hyper-parameters equals its tensor table.
 *   test_arch check F..  used by test_synth.sh on moe-synth output: checksums
 *                        verify, schema matches in order, and the data looks
 *                        like weights (std ~ 1/sqrt(n_in), norms ~ 1).
 *   test_arch samekeys PREFIX A B
 *                        every key of A starting with PREFIX is in B with the
 *                        same type and value bytes, and B has no other such key.
 */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/model/arch.h"
#include "formats/gguf/gguf.h"
#include "formats/quant/types.h"
#include "test_util.h"

/* ---- unit ----------------------------------------------------------------------- */

static void test_names(void) {
    moe_split_name sn;
    CHECK(moe_tensor_name_parse_split("blk.12.ffn_up.3.weight", &sn), "parse split");
    CHECK(sn.layer == 12 && sn.family == 2 && sn.expert == 3 && strcmp(sn.suffix, "weight") == 0,
          "fields %d %d %d %s", sn.layer, sn.family, sn.expert, sn.suffix);
    CHECK(moe_tensor_name_parse_split("blk.0.ffn_gate.0.bias", &sn) && sn.family == 0 &&
              strcmp(sn.suffix, "bias") == 0,
          "gate bias");
    CHECK(moe_tensor_name_parse_split("blk.7.ffn_down.63.weight", &sn) && sn.family == 1 &&
              sn.expert == 63,
          "down 63");
    static const char *const bad[] = {
        "blk.1.ffn_up_exps.weight", "blk.1.ffn_up.weight", "blk.x.ffn_up.1.weight",
        "blk.01.ffn_up.1.weight", "blk.1.ffn_up.01.weight", "blk.1.ffn_up.1.", "blk.1.ffn_up.1",
        "blk.1.ffn_up.1.weight.x", "blk.1.attn_q.1.weight", "blk.-1.ffn_up.1.weight",
        "blk.1.ffn_up.-1.weight", "blk.99999999999.ffn_up.1.weight", "output.weight", "",
        "blk.1.ffn_up.1.averyveryverylongsuffix", "blk.1.ffn_gate_shexp.1.weight",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(!moe_tensor_name_parse_split(bad[i], &sn), "'%s' must not parse", bad[i]);

    CHECK(moe_tensor_name_layer("blk.17.attn_q.weight") == 17, "layer 17");
    CHECK(moe_tensor_name_layer("token_embd.weight") == -1, "no layer");
    CHECK(moe_tensor_name_layer("blk.17") == -1, "no dot after index");

    char buf[64];
    moe_err err = {0};
    CHECK(moe_tensor_name_stacked(buf, sizeof(buf), 5, "ffn_down", "weight", &err) == MOE_OK &&
              strcmp(buf, "blk.5.ffn_down_exps.weight") == 0,
          "stacked name %s", buf);
    CHECK(moe_tensor_name_split(buf, sizeof(buf), 5, "ffn_up", 7, "weight", &err) == MOE_OK &&
              strcmp(buf, "blk.5.ffn_up.7.weight") == 0,
          "split name %s", buf);
    CHECK(moe_tensor_name_stacked(buf, sizeof(buf), 5, "attn_q", "weight", &err) == MOE_ERR_USAGE,
          "unknown family");
    CHECK(moe_tensor_name_split(buf, 8, 5, "ffn_up", 7, "weight", &err) == MOE_ERR_USAGE,
          "too small buffer");
    CHECK(moe_tensor_name_split(buf, sizeof(buf), 5, "ffn_up", -1, "weight", &err) ==
              MOE_ERR_USAGE,
          "negative expert");
    /* a split name built from a parsed one round-trips */
    CHECK(moe_tensor_name_parse_split("blk.3.ffn_gate.5.weight", &sn) &&
              moe_tensor_name_split(buf, sizeof(buf), sn.layer, moe_expert_family[sn.family],
                                    sn.expert, sn.suffix, &err) == MOE_OK &&
              strcmp(buf, "blk.3.ffn_gate.5.weight") == 0,
          "round trip");

    moe_arch a;
    CHECK(moe_arch_from_name("deepseek2", &a) && a == MOE_ARCH_DEEPSEEK2, "arch lookup");
    CHECK(!moe_arch_from_name("mixtral", &a), "unknown arch");
    CHECK(strcmp(moe_arch_name(MOE_ARCH_OLMOE), "olmoe") == 0, "arch name");
    CHECK(strcmp(moe_arch_name(MOE_ARCH_COUNT), "unknown") == 0, "bad arch name");
}

/* Small shapes of each arch, the conformance models' structure. */
static void tiny_hparams(moe_arch arch, moe_hparams *hp) {
    moe_hparams_defaults(arch, hp);
    hp->n_vocab = 64;
    hp->n_ctx_train = 128;
    hp->n_embd = 32;
    hp->n_layer = 2;
    hp->n_head = 4;
    hp->n_head_kv = arch == MOE_ARCH_OLMOE ? 4 : 2;
    hp->head_dim_k = hp->head_dim_v = hp->n_rot = 8;
    hp->n_ff = 32;
    hp->n_ff_exp = 32;
    hp->n_expert = 4;
    hp->n_expert_used = 2;
    if (arch == MOE_ARCH_QWEN2MOE) {
        hp->n_ff_exp = 16;
        hp->n_ff_shexp = 48;
        hp->n_expert_shared = 1;
    }
    if (arch == MOE_ARCH_QWEN3MOE)
        hp->head_dim_k = hp->head_dim_v = hp->n_rot = 16; /* != n_embd/n_head */
    if (arch == MOE_ARCH_DEEPSEEK2) {
        hp->n_head_kv = 4;
        hp->n_ff = 64;
        hp->n_ff_exp = 16;
        hp->n_expert_shared = 2;
        hp->n_ff_shexp = 32;
        hp->n_leading_dense = 1;
        hp->q_lora_rank = 24;
        hp->kv_lora_rank = 16;
        hp->head_dim_k = 12; /* nope 8 + rope 4 */
        hp->n_rot = 4;
        hp->head_dim_v = 8;
        hp->gating = MOE_GATING_SIGMOID;
        hp->expert_weights_norm = true;
        hp->expert_weights_scale = 2.5f;
        hp->exp_probs_b = true;
        hp->yarn_log_mul = 0.1f;
    }
}

static int64_t find_spec(const moe_tensor_spec *s, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(s[i].name, name) == 0)
            return (int64_t)i;
    return -1;
}

static void test_validate(void) {
    moe_hparams hp;
    moe_err err = {0};
    for (int a = 0; a < MOE_ARCH_COUNT; a++) {
        tiny_hparams((moe_arch)a, &hp);
        CHECK(moe_hparams_validate(&hp, &err) == MOE_OK, "%s valid: %s", moe_arch_name(a),
              err.msg);
    }
#define BAD(arch, stmt, needle)                                                          \
    do {                                                                                 \
        tiny_hparams(arch, &hp);                                                         \
        stmt;                                                                            \
        moe_err e = {0};                                                                 \
        moe_status st = moe_hparams_validate(&hp, &e);                                   \
        CHECK(st == MOE_ERR_USAGE && strstr(e.msg, needle), "%s: got %d '%s'", #stmt,    \
              (int)st, e.msg);                                                           \
    } while (0)
    BAD(MOE_ARCH_LLAMA, hp.n_expert_used = 5, "n_expert_used");
    BAD(MOE_ARCH_LLAMA, hp.n_expert_used = 0, "n_expert_used");
    BAD(MOE_ARCH_LLAMA, hp.n_head_kv = 3, "n_head_kv");
    BAD(MOE_ARCH_LLAMA, hp.n_rot = 6, "rope");
    BAD(MOE_ARCH_LLAMA, hp.n_expert = 513, "n_expert");
    BAD(MOE_ARCH_LLAMA, hp.n_layer = 0, "n_layer");
    BAD(MOE_ARCH_LLAMA, hp.n_ff_exp = 16, "n_ff_exp");
    BAD(MOE_ARCH_LLAMA, hp.n_vocab = 0, "n_vocab");
    BAD(MOE_ARCH_LLAMA, hp.q_lora_rank = 8, "latent");
    BAD(MOE_ARCH_LLAMA, hp.n_leading_dense = 1, "dense");
    BAD(MOE_ARCH_LLAMA, hp.rms_eps = 0, "epsilon");
    BAD(MOE_ARCH_QWEN2MOE, hp.n_expert = 0; hp.n_expert_used = 0, "needs experts");
    BAD(MOE_ARCH_QWEN2MOE, hp.tied_output = true, "output");
    BAD(MOE_ARCH_QWEN2MOE, hp.n_ff_shexp = 0, "shared");
    BAD(MOE_ARCH_QWEN3MOE, hp.n_ff_shexp = 8, "shared");
    BAD(MOE_ARCH_OLMOE, hp.n_head_kv = 2, "olmoe");
    BAD(MOE_ARCH_DEEPSEEK2, hp.kv_lora_rank = 0, "kv_lora_rank");
    BAD(MOE_ARCH_DEEPSEEK2, hp.n_rot = 12, "key_length");
    BAD(MOE_ARCH_DEEPSEEK2, hp.n_ff_shexp = 16, "n_ff_shexp");
    BAD(MOE_ARCH_DEEPSEEK2, hp.n_leading_dense = 3, "n_dense_lead");
    BAD(MOE_ARCH_DEEPSEEK2, hp.gating = MOE_GATING_NONE, "gating");
#undef BAD
    /* dense llama: no experts at all is fine, and then there is no router */
    tiny_hparams(MOE_ARCH_LLAMA, &hp);
    hp.n_expert = hp.n_expert_used = 0;
    hp.n_ff_exp = 0;
    CHECK(moe_hparams_validate(&hp, &err) == MOE_OK, "dense llama: %s", err.msg);
}

static void test_enumerate(void) {
    moe_hparams hp;
    moe_err err = {0};
    moe_tensor_spec *s = NULL;
    size_t n = 0;

    tiny_hparams(MOE_ARCH_LLAMA, &hp);
    CHECK(moe_arch_tensors(&hp, &s, &n, &err) == MOE_OK, "%s", err.msg);
    CHECK(n == 1 + 2 * 10 + 2, "llama count %zu", n);
    CHECK(strcmp(s[0].name, "token_embd.weight") == 0 && s[0].ne[0] == 32 && s[0].ne[1] == 64,
          "token_embd first");
    CHECK(strcmp(s[n - 1].name, "output.weight") == 0 && s[n - 1].optional, "output last");
    int64_t i = find_spec(s, n, "blk.1.ffn_down_exps.weight");
    CHECK(i >= 0 && s[i].n_dims == 3 && s[i].ne[0] == 32 && s[i].ne[1] == 32 &&
              s[i].ne[2] == 4 && s[i].layer == 1 && s[i].expert == -1,
          "down_exps");
    i = find_spec(s, n, "blk.0.ffn_gate_inp.weight");
    CHECK(i >= 0 && s[i].keep_f32 && s[i].ne[1] == 4, "router F32");
    i = find_spec(s, n, "blk.0.attn_k.weight");
    CHECK(i >= 0 && s[i].ne[1] == 16 && !s[i].keep_f32, "attn_k GQA");
    free(s);

    hp.layout = MOE_LAYOUT_SPLIT;
    hp.tied_output = true;
    CHECK(moe_arch_tensors(&hp, &s, &n, &err) == MOE_OK, "%s", err.msg);
    CHECK(n == 1 + 2 * (7 + 3 * 4) + 1, "split count %zu", n);
    i = find_spec(s, n, "blk.1.ffn_up.3.weight");
    CHECK(i >= 0 && s[i].n_dims == 2 && s[i].ne[0] == 32 && s[i].ne[1] == 32 &&
              s[i].expert == 3 && s[i].role == MOE_T_FFN_UP_EXP,
          "split up");
    CHECK(find_spec(s, n, "output.weight") < 0, "tied: no output");
    /* experts of one family are consecutive, families in gate, down, up order */
    i = find_spec(s, n, "blk.0.ffn_gate.0.weight");
    CHECK(i >= 0 && strcmp(s[i + 3].name, "blk.0.ffn_gate.3.weight") == 0 &&
              strcmp(s[i + 4].name, "blk.0.ffn_down.0.weight") == 0,
          "split order");
    free(s);

    hp.layout = MOE_LAYOUT_STACKED;
    hp.n_expert = hp.n_expert_used = hp.n_ff_exp = 0;
    CHECK(moe_arch_tensors(&hp, &s, &n, &err) == MOE_OK, "%s", err.msg);
    CHECK(find_spec(s, n, "blk.0.ffn_up.weight") >= 0 &&
              find_spec(s, n, "blk.0.ffn_gate_inp.weight") < 0,
          "dense llama has a dense FFN");
    free(s);

    tiny_hparams(MOE_ARCH_DEEPSEEK2, &hp);
    CHECK(moe_arch_tensors(&hp, &s, &n, &err) == MOE_OK, "%s", err.msg);
    CHECK(find_spec(s, n, "blk.0.ffn_gate.weight") >= 0 &&
              find_spec(s, n, "blk.0.ffn_gate_exps.weight") < 0 &&
              find_spec(s, n, "blk.1.ffn_gate_exps.weight") >= 0,
          "leading dense block");
    i = find_spec(s, n, "blk.1.attn_kv_b.weight");
    CHECK(i >= 0 && s[i].ne[0] == 16 && s[i].ne[1] == 4 * (8 + 8), "kv_b");
    i = find_spec(s, n, "blk.1.attn_kv_a_mqa.weight");
    CHECK(i >= 0 && s[i].ne[1] == 16 + 4, "kv_a_mqa");
    i = find_spec(s, n, "blk.1.exp_probs_b.bias");
    CHECK(i >= 0 && s[i].optional && s[i].keep_f32 && s[i].init == MOE_INIT_BIAS, "probs_b");
    i = find_spec(s, n, "blk.1.ffn_down_shexp.weight");
    CHECK(i >= 0 && s[i].ne[0] == 32 && s[i].ne[1] == 32, "shexp width");
    CHECK(find_spec(s, n, "blk.0.attn_q.weight") < 0, "q_lora: no attn_q");
    free(s);

    hp.q_lora_rank = 0;
    hp.mla = MOE_MLA_3D;
    CHECK(moe_arch_tensors(&hp, &s, &n, &err) == MOE_OK, "%s", err.msg);
    i = find_spec(s, n, "blk.0.attn_k_b.weight");
    CHECK(i >= 0 && s[i].n_dims == 3 && s[i].ne[0] == 8 && s[i].ne[1] == 16 && s[i].ne[2] == 4,
          "3-D k_b");
    i = find_spec(s, n, "blk.0.attn_v_b.weight");
    CHECK(i >= 0 && s[i].ne[0] == 16 && s[i].ne[1] == 8 && s[i].ne[2] == 4, "3-D v_b");
    CHECK(find_spec(s, n, "blk.0.attn_kv_b.weight") < 0, "3-D: no kv_b");
    i = find_spec(s, n, "blk.0.attn_q.weight");
    CHECK(i >= 0 && s[i].ne[1] == 4 * 12, "lite attn_q");
    free(s);
}

/* ---- key round trip --------------------------------------------------------------- */

static char tmp_dir[256];

static void make_tmp_dir(void) {
    const char *base = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof(tmp_dir), "%s/test_arch.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        exit(1);
    }
}

/* Writes a model with these hparams (zero data) and the given extra keys. */
static moe_status write_model(const char *path, const moe_hparams *hp, moe_err *err) {
    moe_gguf_writer *w = NULL;
    moe_gguf_writer_opts opts = {.overwrite = true};
    MOE_TRY(moe_gguf_writer_create(path, &opts, &w, err));
    moe_tensor_spec *s = NULL;
    size_t n = 0;
    moe_status st = moe_hparams_write(w, hp, err);
    if (st == MOE_OK)
        st = moe_arch_tensors(hp, &s, &n, err);
    uint64_t total = 0;
    for (size_t i = 0; i < n && st == MOE_OK; i++) {
        uint64_t b = 0;
        st = moe_gguf_writer_add_tensor(w, s[i].name, MOE_TYPE_F32, s[i].n_dims, s[i].ne, err);
        if (st == MOE_OK)
            st = moe_type_tensor_size(MOE_TYPE_F32, s[i].ne, &b, err);
        total += b;
    }
    free(s);
    if (st == MOE_OK)
        st = moe_gguf_writer_begin_data(w, err);
    static const char zeros[4096];
    while (st == MOE_OK && total > 0) {
        size_t k = total < sizeof(zeros) ? (size_t)total : sizeof(zeros);
        st = moe_gguf_writer_write(w, zeros, k, err);
        total -= k;
    }
    if (st != MOE_OK) {
        moe_gguf_writer_abort(w);
        return st;
    }
    return moe_gguf_writer_finish(w, err);
}

static bool same_hparams(const moe_hparams *a, const moe_hparams *b, char *why, size_t cap) {
#define F(f)                                                                        \
    if (a->f != b->f) {                                                             \
        snprintf(why, cap, "%s: %g vs %g", #f, (double)a->f, (double)b->f);         \
        return false;                                                               \
    }
    F(arch) F(n_vocab) F(n_ctx_train) F(n_embd) F(n_layer) F(n_head) F(n_head_kv)
    F(head_dim_k) F(head_dim_v) F(n_rot) F(n_ff) F(n_ff_exp) F(n_ff_shexp) F(n_expert)
    F(n_expert_used) F(n_expert_shared) F(n_leading_dense) F(q_lora_rank) F(kv_lora_rank)
    F(rope_freq_base) F(rms_eps) F(gating) F(expert_weights_norm) F(expert_weights_scale)
    F(yarn_log_mul) F(rope_scaling) F(rope_scaling_factor) F(n_ctx_orig) F(tied_output)
    F(exp_probs_b) F(mla) F(layout)
#undef F
    return true;
}

static void round_trip(const char *label, const moe_hparams *hp) {
    char path[320];
    snprintf(path, sizeof(path), "%s/rt.gguf", tmp_dir);
    moe_err err = {0};
    moe_status st = write_model(path, hp, &err);
    CHECK(st == MOE_OK, "%s: write: %s", label, err.msg);
    if (st != MOE_OK)
        return;
    moe_gguf_file *f = NULL;
    st = moe_gguf_file_open(path, false, &f, &err);
    CHECK(st == MOE_OK, "%s: open: %s", label, err.msg);
    if (st != MOE_OK)
        return;
    moe_hparams back;
    st = moe_hparams_from_gguf(f->g, &back, &err);
    CHECK(st == MOE_OK, "%s: read: %s", label, err.msg);
    char why[128] = "";
    CHECK(st == MOE_OK && same_hparams(hp, &back, why, sizeof(why)), "%s: differs: %s", label,
          why);
    st = moe_arch_check_gguf(hp, f->g, true, &err);
    CHECK(st == MOE_OK, "%s: check: %s", label, err.msg);
    moe_gguf_file_close(f);
    unlink(path);
}

static void test_round_trip(void) {
    moe_hparams hp;
    char label[64];
    for (int a = 0; a < MOE_ARCH_COUNT; a++) {
        for (int layout = 0; layout < 2; layout++) {
            tiny_hparams((moe_arch)a, &hp);
            hp.layout = (moe_expert_layout)layout;
            snprintf(label, sizeof(label), "%s/%s", moe_arch_name(a),
                     layout ? "split" : "stacked");
            round_trip(label, &hp);
        }
    }
    tiny_hparams(MOE_ARCH_LLAMA, &hp);
    hp.tied_output = true;
    hp.rope_scaling = MOE_ROPE_SCALING_YARN;
    hp.rope_scaling_factor = 4;
    hp.n_ctx_orig = 64;
    hp.rope_freq_base = 1e6f;
    round_trip("llama tied + yarn", &hp);
    hp.n_expert = hp.n_expert_used = hp.n_ff_exp = 0;
    round_trip("dense llama", &hp);
    for (int m = MOE_MLA_KV_B; m <= MOE_MLA_3D; m++) {
        tiny_hparams(MOE_ARCH_DEEPSEEK2, &hp);
        hp.mla = (moe_mla_layout)m;
        hp.q_lora_rank = m % 2 ? 0 : 24;
        hp.exp_probs_b = m % 2 == 0;
        snprintf(label, sizeof(label), "deepseek2 mla %d", m);
        round_trip(label, &hp);
    }
    tiny_hparams(MOE_ARCH_DEEPSEEK2, &hp);
    hp.gating = MOE_GATING_SOFTMAX;
    hp.expert_weights_norm = false;
    hp.n_leading_dense = 0;
    round_trip("deepseek2 all moe", &hp);
}

/* A file that lacks a tensor, has an extra one or a wrong shape is refused. */
static void test_check_mismatch(void) {
    moe_hparams hp, other;
    tiny_hparams(MOE_ARCH_QWEN3MOE, &hp);
    char path[320];
    snprintf(path, sizeof(path), "%s/mm.gguf", tmp_dir);
    moe_err err = {0};
    if (write_model(path, &hp, &err) != MOE_OK) {
        CHECK(0, "write: %s", err.msg);
        return;
    }
    moe_gguf_file *f = NULL;
    if (moe_gguf_file_open(path, false, &f, &err) != MOE_OK) {
        CHECK(0, "open: %s", err.msg);
        return;
    }
    other = hp;
    other.n_ff_exp = 48;
    CHECK(moe_arch_check_gguf(&other, f->g, false, &err) == MOE_ERR_FORMAT &&
              strstr(err.msg, "blk.0.ffn_gate_exps.weight") && strstr(err.msg, "shape"),
          "wrong shape: %s", err.msg);
    other = hp;
    other.tied_output = true;
    CHECK(moe_arch_check_gguf(&other, f->g, false, &err) == MOE_ERR_FORMAT &&
              strstr(err.msg, "unexpected tensor 'output.weight'"),
          "extra: %s", err.msg);
    other = hp;
    other.n_layer = 3;
    CHECK(moe_arch_check_gguf(&other, f->g, false, &err) == MOE_ERR_FORMAT &&
              strstr(err.msg, "missing tensor 'blk.2."),
          "missing: %s", err.msg);
    other = hp;
    other.layout = MOE_LAYOUT_SPLIT;
    CHECK(moe_arch_check_gguf(&other, f->g, false, &err) == MOE_ERR_FORMAT &&
              strstr(err.msg, "ffn_gate.0.weight"),
          "split vs stacked: %s", err.msg);
    moe_gguf_file_close(f);
    unlink(path);
}

/* ---- golden: the conformance models ------------------------------------------------ */

static void golden_one(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/models/%s", dir, name);
    moe_err err = {0};
    moe_gguf_file *f = NULL;
    moe_status st = moe_gguf_file_open(path, false, &f, &err);
    CHECK(st == MOE_OK, "%s: open: %s", name, err.msg);
    if (st != MOE_OK)
        return;
    moe_hparams hp;
    st = moe_hparams_from_gguf(f->g, &hp, &err);
    CHECK(st == MOE_OK, "%s: hparams: %s", name, err.msg);
    if (st == MOE_OK) {
        /* llama-quantize sorts tensors by name: compare order only for the
         * converter's own output */
        bool order = moe_gguf_find_key(f->g, "general.quantization_version") < 0;
        st = moe_arch_check_gguf(&hp, f->g, order, &err);
        CHECK(st == MOE_OK, "%s: schema: %s", name, err.msg);
        printf("%-28s %-9s L=%lld D=%lld E=%lld %s %s: %s\n", name, moe_arch_name(hp.arch),
               (long long)hp.n_layer, (long long)hp.n_embd, (long long)hp.n_expert,
               hp.layout == MOE_LAYOUT_SPLIT ? "split" : "stacked",
               order ? "ordered" : "by name", st == MOE_OK ? "ok" : "MISMATCH");
    }
    /* facts the README states about each model */
    if (strcmp(name, "tiny-llama-split.gguf") == 0)
        CHECK(hp.layout == MOE_LAYOUT_SPLIT && hp.n_expert == 8, "split layout detected");
    if (strcmp(name, "tiny-llama.gguf") == 0)
        CHECK(hp.arch == MOE_ARCH_LLAMA && hp.layout == MOE_LAYOUT_STACKED && hp.n_head == 4 &&
                  hp.n_head_kv == 2 && hp.head_dim_k == 64 && hp.n_ff_exp == 256 &&
                  hp.n_vocab == 512 && !hp.tied_output && hp.gating == MOE_GATING_SOFTMAX,
              "tiny-llama hparams");
    if (strcmp(name, "tiny-qwen2moe.gguf") == 0)
        CHECK(hp.n_ff_shexp == 256 && hp.n_expert_shared == 1 && hp.n_vocab == 512 &&
                  !hp.expert_weights_norm,
              "qwen2moe hparams");
    if (strcmp(name, "tiny-deepseek2.gguf") == 0)
        CHECK(hp.q_lora_rank == 128 && hp.kv_lora_rank == 64 && moe_hp_qk_nope(&hp) == 32 &&
                  moe_hp_qk_rope(&hp) == 32 && moe_hp_v_head(&hp) == 32 &&
                  hp.n_leading_dense == 1 && hp.n_expert_shared == 1 && hp.exp_probs_b &&
                  hp.gating == MOE_GATING_SIGMOID && hp.expert_weights_norm &&
                  hp.expert_weights_scale == 2.5f && hp.mla == MOE_MLA_KV_B,
              "deepseek2 hparams");
    if (strcmp(name, "tiny-deepseek2-lite.gguf") == 0)
        CHECK(hp.q_lora_rank == 0 && hp.n_layer == 27 && hp.n_expert_shared == 2 &&
                  hp.n_ff_shexp == 128 && !hp.exp_probs_b && hp.gating == MOE_GATING_SOFTMAX &&
                  !hp.expert_weights_norm,
              "deepseek2-lite hparams");
    moe_gguf_file_close(f);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void test_golden(void) {
    const char *dir = test_conformance_dir();
    char models[1024];
    snprintf(models, sizeof(models), "%s/models", dir);
    DIR *d = opendir(models);
    CHECK(d != NULL, "open %s", models);
    if (!d)
        return;
    char *names[64];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 64) {
        size_t len = strlen(de->d_name);
        if (strncmp(de->d_name, "tiny-", 5) == 0 && len > 5 &&
            strcmp(de->d_name + len - 5, ".gguf") == 0 && !strstr(de->d_name, "-lora"))
            names[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof(names[0]), cmp_str);
    CHECK(n >= 8, "found %d conformance models", n);
    for (int i = 0; i < n; i++) {
        golden_one(dir, names[i]);
        free(names[i]);
    }
}

/* ---- check: moe-synth output ------------------------------------------------------- */

/* Dequantizes up to 64 rows of t and returns their mean and std. */
static bool tensor_stats(const moe_gguf_file *f, uint64_t ti, double *mean, double *std) {
    const moe_gguf_tensor *t = &f->g->tensors[ti];
    const moe_type_traits *tr = moe_type_get(t->type);
    if (!tr || !tr->to_f32)
        return false;
    int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
    int64_t take = rows < 64 ? rows : 64;
    if (tr->interleave_rows)
        take -= take % tr->interleave_rows;
    if (take <= 0)
        return false;
    float *out = malloc(sizeof(float) * (size_t)(take * t->ne[0]));
    moe_err err = {0};
    bool ok = out && moe_dequantize_rows(t->type, moe_gguf_file_tensor_data(f, ti), out,
                                         t->ne[0], take, &err) == MOE_OK;
    if (ok) {
        double s = 0, s2 = 0;
        int64_t cnt = take * t->ne[0];
        for (int64_t i = 0; i < cnt; i++) {
            ok = ok && isfinite(out[i]);
            s += out[i];
            s2 += (double)out[i] * out[i];
        }
        *mean = s / (double)cnt;
        *std = sqrt(fmax(0, s2 / (double)cnt - *mean * *mean));
    }
    free(out);
    return ok;
}

static void check_stats(const char *path, const moe_gguf_file *f, const moe_hparams *hp) {
    moe_tensor_spec *s = NULL;
    size_t n = 0;
    moe_err err = {0};
    if (moe_arch_tensors(hp, &s, &n, &err) != MOE_OK)
        return;
    int n_checked = 0;
    for (size_t i = 0; i < n && i < f->g->n_tensors; i++) {
        double mean = 0, std = 0;
        if (!tensor_stats(f, i, &mean, &std))
            continue;
        n_checked++;
        const char *tn = s[i].name;
        const char *type = moe_type_name(f->g->tensors[i].type);
        if (s[i].init == MOE_INIT_NORM) {
            CHECK(fabs(mean - 1) < 0.2 && std < 0.2, "%s: %s (%s) norm mean %g std %g", path,
                  tn, type, mean, std);
        } else if (s[i].init == MOE_INIT_WEIGHT) {
            double want = 1 / sqrt((double)s[i].ne[0]);
            if (getenv("TEST_ARCH_VERBOSE"))
                printf("%-36s %-9s std/want %.3f mean/want %+.3f\n", tn, type, std / want,
                       mean / want);
            CHECK(std > want / 1.5 && std < want * 1.5 && fabs(mean) < 0.3 * want,
                  "%s: %s (%s) std %g mean %g, want std ~%g", path, tn, type, std, mean, want);
        } else {
            CHECK(fabs(mean) < 0.1 && std < 0.2, "%s: %s bias mean %g std %g", path, tn, mean,
                  std);
        }
    }
    CHECK(n_checked > 0, "%s: no tensor could be dequantized", path);
    free(s);
}

static int check_files(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        moe_err err = {0};
        moe_gguf_file *f = NULL;
        moe_status st = moe_gguf_file_open(argv[i], true, &f, &err);
        CHECK(st == MOE_OK, "open: %s", err.msg);
        if (st != MOE_OK)
            continue;
        moe_gguf_verify_result vr = {0};
        st = moe_gguf_file_verify(f, false, &vr, &err);
        CHECK(st == MOE_OK && vr.had_checksums && vr.n_checked == f->g->n_tensors &&
                  vr.n_mismatch == 0,
              "%s: verify: %s (checksums %d, %llu checked)", argv[i], err.msg,
              (int)vr.had_checksums, (unsigned long long)vr.n_checked);
        moe_hparams hp;
        st = moe_hparams_from_gguf(f->g, &hp, &err);
        CHECK(st == MOE_OK, "%s: hparams: %s", argv[i], err.msg);
        if (st == MOE_OK) {
            st = moe_arch_check_gguf(&hp, f->g, true, &err);
            CHECK(st == MOE_OK, "%s: schema: %s", argv[i], err.msg);
            if (st == MOE_OK)
                check_stats(argv[i], f, &hp);
        }
        moe_gguf_file_close(f);
    }
    TEST_DONE();
}

static bool same_kv(const moe_gguf_kv *a, const moe_gguf_kv *b) {
    return a->type == b->type && a->elem_type == b->elem_type && a->count == b->count &&
           a->raw_len == b->raw_len && memcmp(a->raw, b->raw, (size_t)a->raw_len) == 0;
}

static int same_keys(const char *prefix, const char *pa, const char *pb) {
    moe_err err = {0};
    moe_gguf_file *fa = NULL, *fb = NULL;
    if (moe_gguf_file_open(pa, false, &fa, &err) != MOE_OK ||
        moe_gguf_file_open(pb, false, &fb, &err) != MOE_OK) {
        CHECK(0, "open: %s", err.msg);
        moe_gguf_file_close(fa);
        TEST_DONE();
    }
    size_t plen = strlen(prefix);
    uint64_t n_a = 0, n_b = 0;
    for (uint64_t i = 0; i < fa->g->n_kv; i++) {
        const moe_gguf_kv *kv = &fa->g->kv[i];
        if (strncmp(kv->key, prefix, plen) != 0)
            continue;
        n_a++;
        int64_t j = moe_gguf_find_key(fb->g, kv->key);
        CHECK(j >= 0 && same_kv(kv, &fb->g->kv[j]), "key '%s' missing or different in %s",
              kv->key, pb);
    }
    for (uint64_t i = 0; i < fb->g->n_kv; i++)
        n_b += strncmp(fb->g->kv[i].key, prefix, plen) == 0;
    CHECK(n_a > 0 && n_a == n_b, "%llu '%s' keys in %s, %llu in %s", (unsigned long long)n_a,
          prefix, pa, (unsigned long long)n_b, pb);
    moe_gguf_file_close(fa);
    moe_gguf_file_close(fb);
    TEST_DONE();
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "samekeys") == 0)
        return same_keys(argv[2], argv[3], argv[4]);
    if (argc >= 2 && strcmp(argv[1], "check") == 0)
        return check_files(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "golden") == 0) {
        test_golden();
        TEST_DONE();
    }
    make_tmp_dir();
    test_names();
    test_validate();
    test_enumerate();
    test_round_trip();
    test_check_mismatch();
    rmdir(tmp_dir);
    TEST_DONE();
}
