/* synth — internals of the moe-synth tool (random-weight models).
 *
 * synth.c owns the command line, presets and the choice of shapes and types;
 * synth_data.c owns the random tensor bytes; synth_vocab.c owns the tokenizer
 * keys. Nothing here is a library API: the functions are shared between the
 * tool's own files only.
 */
#ifndef MOE_TOOLS_SYNTH_H
#define MOE_TOOLS_SYNTH_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/model/arch.h"
#include "formats/gguf/gguf.h"
#include "formats/base/status.h"
#include "formats/quant/types.h"

/* One tensor to generate: its schema entry (borrowed), stored type and size. */
typedef struct synth_tensor {
    const moe_tensor_spec *spec;
    moe_type type;
    uint64_t nbytes;
} synth_tensor;

/* Whether synth_write_data can produce tensors of type t: f32, f16, bf16 and
 * the quantized types whose block layout formats/quant/quant_blocks.h defines. */
bool synth_type_supported(moe_type t);

/* Writes the data of the n tensors, in order, to w (after begin_data).
 * The bytes depend only on (seed, tensor index, chunk index), never on
 * n_threads. Memory stays bounded (a few dozen MB) whatever the model size.
 * Quantized tensors are random blocks whose scale fields are set so that the
 * dequantized values have a std of roughly 1/sqrt(ne[0]) and a mean near 0
 * (a random sign on d where the format has no min field, as llama.cpp's
 * quantizers give it); float tensors get
 * uniform values of that std, norms ~1, biases ~0. Returns the writer's error
 * if a write fails. */
moe_status synth_write_data(moe_gguf_writer *w, const synth_tensor *t, size_t n, uint64_t seed,
                            int n_threads, moe_err *err);

/* Writes a built-in SentencePiece-style vocabulary of n_vocab tokens (<unk>,
 * <s>, </s>, the 256 byte tokens, then generated pieces with falling scores)
 * and its tokenizer.ggml.* keys (model "llama", BOS 1, EOS 2, UNK 0). Needs
 * n_vocab >= 259. */
moe_status synth_vocab_builtin(moe_gguf_writer *w, int64_t n_vocab, moe_err *err);

/* The token count of a GGUF's tokenizer.ggml.tokens (format error without). */
moe_status synth_vocab_count(const moe_gguf *g, int64_t *n_vocab, moe_err *err);

/* Copies every tokenizer.* key of g to w, in g's order. */
moe_status synth_vocab_copy(moe_gguf_writer *w, const moe_gguf *g, moe_err *err);

#endif
