/* run_kv — moe-run's KV cache features: the --kv operations of the
 * conformance interface, the context shift of long generations, and the
 * prompt cache (--prompt-cache). Everything goes through moe.h.
 */
#ifndef MOE_RUNTIME_TOOLS_RUN_KV_H
#define MOE_RUNTIME_TOOLS_RUN_KV_H

#include <stdint.h>

#include "runtime/include/moe.h"

typedef enum run_kv_kind { RUN_KV_RM, RUN_KV_ADD, RUN_KV_CP, RUN_KV_KEEP, RUN_KV_DIV,
                           RUN_KV_DEFRAG } run_kv_kind;

/* One --kv operation: "rm SEQ P0 P1", "add SEQ P0 P1 DELTA", "cp SRC DST P0
 * P1", "keep SEQ", "div SEQ P0 P1 D", "defrag" (P1 = -1: to the end). */
typedef struct run_kv_op {
    run_kv_kind kind;
    int32_t a[4];
} run_kv_op;

/* Parses s into *op; a malformed operation is a usage error naming it. */
moe_status run_kv_parse(const char *s, run_kv_op *op, moe_err *err);
/* The largest sequence id the operations name (-1 if none). */
int32_t run_kv_max_seq(const run_kv_op *ops, int n);
/* Applies op to ctx. "defrag" defragments at once (moe_kv_defrag then
 * moe_kv_update, which also applies pending shifts), the others are lazy. */
void run_kv_apply(moe_context *ctx, const run_kv_op *op);

/* llama-cli's context shift of sequence 0 when its n_past positions fill the
 * context: keeps positions [0, n_keep), drops half of the rest, shifts the
 * remainder down. Returns the positions discarded (0: nothing can be). */
int32_t run_context_shift(moe_context *ctx, int32_t n_keep, int32_t n_past);

/* The prompt cache. Loads path into ctx when it exists and reports how many
 * prompt tokens it already holds (*n_reuse: positions [0, n_reuse) of
 * sequence 0 stay, the rest was removed; n_reuse == n_prompt only when the
 * saved logits are those of the prompt's last token). A missing file means
 * *n_reuse = 0; any other failure (another model, damage) is an error. */
moe_status run_prompt_cache_load(moe_context *ctx, const char *path, const moe_token *prompt,
                                 int32_t n_prompt, int32_t *n_reuse, moe_err *err);

#endif
