/* vocab — tokenizer vocabularies read from a GGUF's tokenizer.* keys.
 *
 * Owns: loading a vocabulary (tokens, scores, types, merges, special ids,
 * chat template) into memory it owns, tokenizing text the way llama.cpp does
 * (special-token partitioning, SentencePiece "llama" and byte-level BPE "gpt2"
 * with the pre-tokenizer regexes of ../shared/spec/model.md §6.2), turning
 * tokens back into text, and deciding which tokens end generation. Does not
 * own: the GGUF (read once at load, not kept), chat formatting (chat.h) or
 * sampling.
 *
 * BPE pre-tokenizers (tokenizer.ggml.pre): llama3, llama-v3, llama-bpe,
 * falcon3, dbrx, smaug-bpe, qwen2, deepseek-r1-qwen, megrez, stablelm2,
 * hunyuan, solar-open, deepseek-llm, deepseek-v3, deepseek-coder, gpt-2 and
 * its aliases (phi-2, jina-*, gigachat, roberta-bpe, mpt, olmo, jais),
 * starcoder and its aliases (refact, command-r, smollm, codeshell, exaone,
 * minerva-7b), falcon, tekken, poro-chat, bloom, gpt3-finnish, viking,
 * default. Others (chatglm-bpe, chameleon, gpt-4o, bailingmoe, glm4,
 * kimi-k2...) fail to load as unsupported.
 *
 * A loaded vocabulary is immutable: every function below is safe to call from
 * several threads at once.
 *
 * Known differences from llama.cpp (none affects its tokenizer test files):
 * UTF-16 surrogates and code points above U+10FFFF in the input become
 * U+FFFD before BPE pre-tokenization; BPE tokens holding characters outside
 * the byte-level alphabet print as their UTF-8 instead of "[UNK_BYTE_...]";
 * detokenizing never "cleans" spaces before punctuation; the EOT picked by
 * text when several candidates exist is the first in our list, not the
 * first in llama.cpp's hash order.
 */
#ifndef MOE_RUNTIME_VOCAB_H
#define MOE_RUNTIME_VOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/gguf/gguf.h"
#include "formats/base/status.h"

typedef struct moe_vocab moe_vocab;

typedef enum moe_vocab_kind {
    MOE_VOCAB_SPM = 1, /* tokenizer.ggml.model "llama" */
    MOE_VOCAB_BPE = 2, /* tokenizer.ggml.model "gpt2" */
} moe_vocab_kind;

/* Token types as stored in tokenizer.ggml.token_type (llama_token_type). */
typedef enum moe_token_type {
    MOE_TOKEN_UNDEFINED = 0,
    MOE_TOKEN_NORMAL = 1,
    MOE_TOKEN_UNKNOWN = 2,
    MOE_TOKEN_CONTROL = 3,
    MOE_TOKEN_USER_DEFINED = 4,
    MOE_TOKEN_UNUSED = 5,
    MOE_TOKEN_BYTE = 6,
} moe_token_type;

/* Builds a vocabulary from g's tokenizer.* keys (g is only read; it may be
 * freed afterwards). Fails with a format error naming the key when a key is
 * missing, of the wrong type or length, or malformed (e.g. tokens without a
 * string array, gpt2 without merges); with MOE_ERR_UNSUPPORTED naming the
 * value for a tokenizer model other than "llama"/"gpt2" or an unknown BPE
 * pre-tokenizer. A missing tokenizer.ggml.pre means "default" (warned once).
 * *out is NULL on failure. */
moe_status moe_vocab_load(const moe_gguf *g, moe_vocab **out, moe_err *err);

/* Frees v and everything it owns. NULL is a no-op. */
void moe_vocab_free(moe_vocab *v);

int64_t moe_vocab_n_tokens(const moe_vocab *v);
moe_vocab_kind moe_vocab_type(const moe_vocab *v);
/* The BPE pre-tokenizer name in use ("default" for SPM). Borrowed from v. */
const char *moe_vocab_pre_name(const moe_vocab *v);

/* Tokenizes len bytes of text (len < 0: up to the NUL) into out[0..cap).
 * add_special: BOS/EOS as the vocabulary asks; parse_special: text of
 * CONTROL/UNKNOWN tokens becomes those tokens (USER_DEFINED tokens are always
 * recognised, as in llama.cpp; with Phi-3 vocabularies special tokens also
 * swallow the whitespace after them, as llama.cpp's RSTRIP does). Returns the
 * token count; if it exceeds cap, minus the count (out then holds the first
 * cap tokens). INT32_MIN if memory ran out or the regex engine failed.
 * Invalid UTF-8 is tokenized, not rejected. */
int32_t moe_vocab_tokenize(const moe_vocab *v, const char *text, int32_t len, int32_t *out,
                           int32_t cap, bool add_special, bool parse_special);

/* Writes the text of tok into buf (no NUL): SPM turns U+2581 into ' ' and
 * <0xNN> byte tokens into the byte; BPE undoes the byte-level mapping;
 * USER_DEFINED tokens print as stored; CONTROL/UNKNOWN tokens only when
 * special, else nothing. Returns the length, or minus the length needed when
 * cap is too small (nothing is written then). Out-of-range tok: 0. */
int32_t moe_vocab_token_to_piece(const moe_vocab *v, int32_t tok, char *buf, int32_t cap,
                                 bool special);

/* Concatenates the pieces of toks[0..n) like moe_vocab_token_to_piece, first
 * dropping the single space an SPM vocabulary with add_space_prefix put in
 * front of the text (on the first piece after any BOS/control tokens), so
 * detokenize(tokenize(x)) == x for valid UTF-8, except where llama.cpp's
 * tokenization itself loses it: SPM reads a literal U+2581 back as ' ', text
 * right after a special token gains SPM's prefix space, whitespace a Phi-3
 * special token swallows is gone. Out-of-range ids are skipped. Returns the
 * length or minus the length needed (buf then holds a prefix). */
int32_t moe_vocab_detokenize(const moe_vocab *v, const int32_t *toks, int32_t n, char *buf,
                             int32_t cap, bool special);

/* Special ids, -1 when the vocabulary has none. */
int32_t moe_vocab_bos(const moe_vocab *v);
int32_t moe_vocab_eos(const moe_vocab *v);
int32_t moe_vocab_eot(const moe_vocab *v);
int32_t moe_vocab_unk(const moe_vocab *v);
/* Whether tokenizing with add_special prepends BOS / appends EOS. */
bool moe_vocab_add_bos(const moe_vocab *v);
bool moe_vocab_add_eos(const moe_vocab *v);
/* End of generation: EOS, EOT, EOM, the FIM pad/repo/file-separator ids when
 * set, and tokens whose text llama.cpp treats as an end of turn
 * (<|eot_id|>, <|im_end|>, <|end|>, <end_of_turn>, <|endoftext|>,
 * <|eom_id|>, <EOT>, _<EOT>, <｜end▁of▁sentence｜>, <|fim_pad|>,
 * <|repo_name|>, <|file_sep|>). */
bool moe_vocab_is_eog(const moe_vocab *v, int32_t tok);

/* Stored text of tok (not NUL-terminated; *len gets its length), or NULL when
 * out of range. Borrowed from v. */
const char *moe_vocab_token_text(const moe_vocab *v, int32_t tok, size_t *len);
/* Type of tok after load-time fixes (EOG texts are forced to CONTROL);
 * MOE_TOKEN_UNDEFINED when out of range. */
moe_token_type moe_vocab_token_type(const moe_vocab *v, int32_t tok);

/* tokenizer.chat_template, or NULL. Borrowed from v (NUL-terminated). */
const char *moe_vocab_chat_template(const moe_vocab *v);

/* ---- shared between vocab.c, vocab_spm.c and vocab_bpe.c only ------------------------------ */
#ifdef MOE_VOCAB_INTERNAL

#include <string.h>

#include "runtime/vocab_merge.h"

typedef struct moe_bpe moe_bpe;

struct moe_vocab {
    moe_vocab_kind kind;
    int32_t n;
    char *blob;        /* every token's text, back to back */
    uint32_t *off;     /* n + 1 offsets into blob */
    float *score;      /* n */
    uint8_t *type;     /* n moe_token_type */
    uint8_t *eog;      /* n flags */
    uint8_t *strip;    /* n: MOE_STRIP_* whitespace a special token swallows */
    moe_vocab_map map; /* text -> id; the highest id wins for duplicate texts */
    int32_t *special;  /* CONTROL / USER_DEFINED / UNKNOWN ids, longest text first */
    int32_t n_special;
    int32_t bos, eos, eot, eom, unk;
    bool add_bos, add_eos, add_space_prefix;
    char *chat_template;
    moe_bpe *bpe;      /* BPE only */
};

#define MOE_STRIP_LEFT 1u  /* llama.cpp's LSTRIP attribute */
#define MOE_STRIP_RIGHT 2u /* RSTRIP */

/* Stored bytes of token id (a valid id). */
static inline const char *moe_vocab_text_of(const moe_vocab *v, int32_t id, size_t *len) {
    *len = v->off[id + 1] - v->off[id];
    return v->blob + v->off[id];
}

/* Id of the token whose text is exactly s[0..n), or -1. Inline here so the
 * tokenizers (vocab_spm.c, vocab_bpe.c) depend on the vocabulary's data, not
 * on vocab.c, which calls them: no circle between the files. */
static inline int32_t moe_vocab_find(const moe_vocab *v, const char *s, size_t n) {
    uint32_t i = (uint32_t)moe_vocab_hash(s, n, MOE_VOCAB_HASH_SEED) & v->map.mask;
    for (;; i = (i + 1) & v->map.mask) {
        const int32_t id = v->map.slot[i];
        if (id < 0)
            return -1;
        size_t len;
        const char *t = moe_vocab_text_of(v, id, &len);
        if (len == n && memcmp(t, s, n) == 0)
            return id;
    }
}

/* SPM: appends the tokens of one raw fragment; prefix_space adds the leading
 * ' ' (add_space_prefix after a special token or at the start). */
void moe_spm_tokenize(const moe_vocab *v, const char *text, size_t len, bool prefix_space,
                      moe_tokvec *out);
/* SPM piece of a normal/byte token: writes it to buf unless buf is NULL
 * (else buf holds at least the token's length); returns its byte count. */
size_t moe_spm_piece(const moe_vocab *v, int32_t tok, char *buf);

/* BPE: loads merges and the pre-tokenizer named by tokenizer.ggml.pre;
 * sets v->bpe and the add_bos default of that pre-tokenizer. */
moe_status moe_bpe_load(moe_vocab *v, const moe_gguf *g, moe_err *err);
void moe_bpe_free(moe_bpe *b);
const char *moe_bpe_pre_name(const moe_bpe *b);
/* Appends the tokens of one raw fragment; false if the regex engine failed. */
bool moe_bpe_tokenize(const moe_vocab *v, const char *text, size_t len, moe_tokvec *out);
/* Test hook: the pre-tokenizer's pieces of text (valid UTF-8 assumed, so
 * offsets are into text itself): end offsets into ends[0..cap); returns the
 * piece count, or -1 if the regex engine or memory failed. */
int32_t moe_bpe_split(const moe_vocab *v, const char *text, size_t len, size_t *ends, int32_t cap);
/* Undoes the byte-level mapping of a normal token's text, writing it to buf
 * unless buf is NULL (else buf holds at least the token's length); returns
 * its byte count. */
size_t moe_bpe_piece(const moe_vocab *v, int32_t tok, char *buf);

#endif /* MOE_VOCAB_INTERNAL */

#endif
