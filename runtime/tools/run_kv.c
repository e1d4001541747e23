/* moe-run's KV cache features (run_kv.h): --kv operations, the context
 * shift, the prompt cache. */
#include "runtime/tools/run_kv.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/base/log.h"

static const struct {
    const char *name;
    run_kv_kind kind;
    int n_args;
} KV_OPS[] = {
    {"rm", RUN_KV_RM, 3},   {"add", RUN_KV_ADD, 4}, {"cp", RUN_KV_CP, 4},
    {"keep", RUN_KV_KEEP, 1}, {"div", RUN_KV_DIV, 4}, {"defrag", RUN_KV_DEFRAG, 0},
};

moe_status run_kv_parse(const char *s, run_kv_op *op, moe_err *err) {
    memset(op, 0, sizeof *op);
    while (*s == ' ')
        s++;
    size_t len = strcspn(s, " ");
    int k = -1;
    for (int i = 0; i < (int)(sizeof KV_OPS / sizeof KV_OPS[0]); i++)
        if (strlen(KV_OPS[i].name) == len && !strncmp(KV_OPS[i].name, s, len))
            k = i;
    MOE_FAIL_IF(k < 0, err, MOE_ERR_USAGE,
                "option --kv: '%s' is not an operation (rm, add, cp, keep, div, defrag)", s);
    op->kind = KV_OPS[k].kind;
    const char *p = s + len;
    int n = 0;
    for (;;) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        MOE_FAIL_IF(end == p || (*end && *end != ' ') || errno || v < INT32_MIN || v > INT32_MAX ||
                        n == KV_OPS[k].n_args,
                    err, MOE_ERR_USAGE, "option --kv: '%s': %s takes %d integer%s", s,
                    KV_OPS[k].name, KV_OPS[k].n_args, KV_OPS[k].n_args == 1 ? "" : "s");
        op->a[n++] = (int32_t)v;
        p = end;
    }
    MOE_FAIL_IF(n != KV_OPS[k].n_args, err, MOE_ERR_USAGE, "option --kv: '%s': %s takes %d integer%s",
                s, KV_OPS[k].name, KV_OPS[k].n_args, KV_OPS[k].n_args == 1 ? "" : "s");
    bool bad_seq = false;
    switch (op->kind) {
    case RUN_KV_CP:
        bad_seq = op->a[0] < 0 || op->a[1] < 0;
        break;
    case RUN_KV_KEEP:
        bad_seq = op->a[0] < 0;
        break;
    case RUN_KV_RM: case RUN_KV_ADD: case RUN_KV_DIV:
        bad_seq = op->a[0] < -1;
        break;
    case RUN_KV_DEFRAG:
        break;
    }
    MOE_FAIL_IF(bad_seq, err, MOE_ERR_USAGE, "option --kv: '%s': bad sequence id", s);
    MOE_FAIL_IF(op->kind == RUN_KV_DIV && op->a[3] < 1, err, MOE_ERR_USAGE,
                "option --kv: '%s': the divisor must be at least 1", s);
    return MOE_OK;
}

int32_t run_kv_max_seq(const run_kv_op *ops, int n) {
    int32_t max = -1;
    for (int i = 0; i < n; i++) {
        if (ops[i].kind == RUN_KV_DEFRAG)
            continue;
        if (ops[i].a[0] > max)
            max = ops[i].a[0];
        if (ops[i].kind == RUN_KV_CP && ops[i].a[1] > max)
            max = ops[i].a[1];
    }
    return max;
}

void run_kv_apply(moe_context *ctx, const run_kv_op *op) {
    const int32_t *a = op->a;
    switch (op->kind) {
    case RUN_KV_RM:
        moe_kv_seq_rm(ctx, a[0], a[1], a[2]);
        break;
    case RUN_KV_ADD:
        moe_kv_seq_add(ctx, a[0], a[1], a[2], a[3]);
        break;
    case RUN_KV_CP:
        moe_kv_seq_cp(ctx, a[0], a[1], a[2], a[3]);
        break;
    case RUN_KV_KEEP:
        moe_kv_seq_keep(ctx, a[0]);
        break;
    case RUN_KV_DIV:
        moe_kv_seq_div(ctx, a[0], a[1], a[2], a[3]);
        break;
    case RUN_KV_DEFRAG:
        moe_kv_defrag(ctx);
        MOE_DEBUG("--kv defrag: %d cells moved", moe_kv_update(ctx));
        break;
    }
}

int32_t run_context_shift(moe_context *ctx, int32_t n_keep, int32_t n_past) {
    const int32_t n_discard = (n_past - n_keep) / 2;
    if (n_discard <= 0)
        return 0;
    moe_kv_seq_rm(ctx, 0, n_keep, n_keep + n_discard);
    moe_kv_seq_add(ctx, 0, n_keep + n_discard, n_past, -n_discard);
    return n_discard;
}

moe_status run_prompt_cache_load(moe_context *ctx, const char *path, const moe_token *prompt,
                                 int32_t n_prompt, int32_t *n_reuse, moe_err *err) {
    *n_reuse = 0;
    struct stat sb;
    if (stat(path, &sb) != 0 && errno == ENOENT) {
        MOE_INFO("prompt cache %s does not exist yet: it will be written after the prompt", path);
        return MOE_OK;
    }
    const int32_t cap = moe_context_n_ctx(ctx);
    moe_token *saved = malloc((size_t)cap * sizeof *saved);
    MOE_FAIL_IF(!saved, err, MOE_ERR_NOMEM, "out of memory");
    int32_t n_saved = 0;
    moe_status st = moe_state_load_file(ctx, path, saved, cap, &n_saved, err);
    if (st != MOE_OK) {
        free(saved);
        moe_err_prefix(err, "--prompt-cache");
        return st;
    }
    int32_t n = 0;
    while (n < n_saved && n < n_prompt && saved[n] == prompt[n])
        n++;
    free(saved);
    /* the saved logits belong to the last saved token: reusable only when the
     * prompt is exactly the saved tokens; otherwise the last prompt token is
     * evaluated again for its logits, as llama-cli does */
    bool exact = n == n_prompt && n == n_saved && moe_get_logits_ith(ctx, -1) != NULL;
    if (!exact && n == n_prompt)
        n--;
    moe_kv_seq_rm(ctx, -1, n, -1);
    if (moe_kv_n_used(ctx) != n) { /* only sequence 0's prompt is ours to reuse */
        moe_kv_clear(ctx);
        n = 0;
    }
    MOE_INFO("prompt cache %s: reusing %d of %d prompt tokens (%d saved)", path, n, n_prompt,
             n_saved);
    *n_reuse = n;
    return MOE_OK;
}
