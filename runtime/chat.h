/* chat — llama.cpp's built-in chat formats (not a Jinja engine).
 *
 * Owns: recognising a chat template, given as its Jinja text or as one of
 * llama.cpp's format names, and rendering messages in that format the way
 * llama_chat_apply_template does (../shared/spec/model.md §7). Does not own:
 * where the template comes from (the vocabulary's tokenizer.chat_template) or
 * tokenizing the result (the rendered text holds special-token text such as
 * <|im_start|>: tokenize it with parse_special).
 *
 * Formats rendered: chatml, llama2, llama2-sys, llama2-sys-bos,
 * llama2-sys-strip, mistral-v1, mistral-v3, mistral-v3-tekken, mistral-v7,
 * phi3, llama3, deepseek (DeepSeek-Coder "### Instruction:"), deepseek2
 * ("User: ... Assistant:", DeepSeek-V2), deepseek3. "mistral" names the plain
 * llama2 format, as in llama.cpp. Templates recognised as another llama.cpp
 * family (gemma, phi4, granite...) are reported as unsupported by name.
 */
#ifndef MOE_RUNTIME_CHAT_H
#define MOE_RUNTIME_CHAT_H

#include <stdbool.h>

#include "formats/base/status.h"
#include "runtime/include/moe.h"

/* The format name tmpl stands for (a format name given directly, or the
 * family its text is recognised as), or NULL when neither. Static string. */
const char *moe_chat_template_name(const char *tmpl);

/* Renders msgs[0..n) with tmpl (NULL: "chatml", as llama.cpp). add_assistant
 * ends the text with the assistant prefix where the format has one (the llama2
 * and mistral formats ignore it, as in llama.cpp). *out gets a malloc'd
 * NUL-terminated string (caller frees); NULL on failure. Errors:
 * MOE_ERR_UNSUPPORTED for a template that is not recognised or a family not
 * rendered here, MOE_ERR_USAGE for a message without role or content or
 * n < 0, MOE_ERR_NOMEM. */
moe_status moe_chat_format(const char *tmpl, const moe_chat_message *msgs, int n,
                           bool add_assistant, char **out, moe_err *err);

#endif
