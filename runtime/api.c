/* The public accessors of moe.h that only forward to the model, vocabulary
 * and chat modules. */
#include <stdlib.h>

#include "runtime/chat.h"
#include "runtime/model.h"

int64_t moe_model_n_vocab(const moe_model *m) { return m->hp.n_vocab; }
int64_t moe_model_n_ctx_train(const moe_model *m) { return m->hp.n_ctx_train; }
int64_t moe_model_n_embd(const moe_model *m) { return m->hp.n_embd; }
const char *moe_model_arch_name(const moe_model *m) { return m->arch->name; }
int64_t moe_model_n_layer(const moe_model *m) { return m->hp.n_layer; }
int64_t moe_model_n_expert(const moe_model *m) { return m->hp.n_expert; }
int64_t moe_model_n_expert_used(const moe_model *m) { return m->hp.n_expert_used; }
const char *moe_model_name(const moe_model *m) { return m->general_name; }
uint64_t moe_model_bytes_per_token(const moe_model *m) { return m->bytes_per_token; }
uint64_t moe_model_weight_bytes(const moe_model *m) { return m->weight_bytes; }
const char *moe_model_placement_args(const moe_model *m) { return m->placement_args; }

int32_t moe_tokenize(const moe_model *m, const char *text, int32_t len, moe_token *out,
                     int32_t cap, bool add_special, bool parse_special) {
    if (!m->vocab)
        return 0;
    return moe_vocab_tokenize(m->vocab, text, len, out, cap, add_special, parse_special);
}

int32_t moe_token_to_piece(const moe_model *m, moe_token t, char *buf, int32_t cap, bool special) {
    if (!m->vocab)
        return 0;
    return moe_vocab_token_to_piece(m->vocab, t, buf, cap, special);
}

moe_token moe_token_bos(const moe_model *m) { return m->vocab ? moe_vocab_bos(m->vocab) : -1; }
moe_token moe_token_eos(const moe_model *m) { return m->vocab ? moe_vocab_eos(m->vocab) : -1; }
bool moe_token_is_eog(const moe_model *m, moe_token t) {
    return m->vocab && moe_vocab_is_eog(m->vocab, t);
}
bool moe_model_add_bos(const moe_model *m) { return m->vocab && moe_vocab_add_bos(m->vocab); }

moe_status moe_chat_apply(const moe_model *m, const char *tmpl, const moe_chat_message *msgs,
                          int n_msgs, bool add_assistant, char **out, moe_err *err) {
    if (!tmpl) /* the model's own; without one chatml, as llama.cpp falls back */
        tmpl = m->vocab ? moe_vocab_chat_template(m->vocab) : NULL;
    return moe_chat_format(tmpl, msgs, n_msgs, add_assistant, out, err);
}
