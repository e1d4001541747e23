/* Chat formats: each format on the same three-message conversation against
 * the text the spec (§7) and llama.cpp's rules give, recognition of real
 * template texts, names, and errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/chat.h"
#include "test_util.h"

#define DS_EOS "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define DS_USER "<\xef\xbd\x9cUser\xef\xbd\x9c>"
#define DS_ASSISTANT "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>"

static const moe_chat_message CONV[] = {
    {"system", "You are terse."},
    {"user", "Hi there "},
    {"assistant", " Hello."},
};

typedef struct expect {
    const char *tmpl;
    const char *with_gen;    /* add_assistant = true */
    const char *without_gen; /* add_assistant = false; NULL: same as with_gen */
} expect;

static const expect CASES[] = {
    {"chatml",
     "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there <|im_end|>\n"
     "<|im_start|>assistant\n Hello.<|im_end|>\n<|im_start|>assistant\n",
     "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there <|im_end|>\n"
     "<|im_start|>assistant\n Hello.<|im_end|>\n"},
    /* llama3 trims every content */
    {"llama3",
     "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\n",
     "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"},
    /* llama2 has no generation prompt; without <<SYS>> the system text is
     * folded into the first turn */
    {"llama2", "[INST] You are terse.\nHi there  [/INST] Hello.</s>", NULL},
    {"mistral", "[INST] You are terse.\nHi there  [/INST] Hello.</s>", NULL},
    {"llama2-sys", "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi there  [/INST] Hello.</s>",
     NULL},
    {"llama2-sys-strip",
     "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi there [/INST]Hello.</s>", NULL},
    {"mistral-v1", " [INST] You are terse.\n\nHi there  [/INST]  Hello.</s>", NULL},
    {"mistral-v3", "[INST] You are terse.\n\nHi there [/INST] Hello.</s>", NULL},
    {"mistral-v3-tekken", "[INST]You are terse.\n\nHi there [/INST] Hello.</s>", NULL},
    {"mistral-v7",
     "[SYSTEM_PROMPT] You are terse.[/SYSTEM_PROMPT][INST] Hi there [/INST]  Hello.</s>", NULL},
    {"phi3",
     "<|system|>\nYou are terse.<|end|>\n<|user|>\nHi there <|end|>\n<|assistant|>\n Hello."
     "<|end|>\n<|assistant|>\n",
     "<|system|>\nYou are terse.<|end|>\n<|user|>\nHi there <|end|>\n<|assistant|>\n Hello."
     "<|end|>\n"},
    {"deepseek",
     "You are terse.### Instruction:\nHi there \n### Response:\n Hello.\n<|EOT|>\n"
     "### Response:\n",
     "You are terse.### Instruction:\nHi there \n### Response:\n Hello.\n<|EOT|>\n"},
    {"deepseek2", "You are terse.\n\nUser: Hi there \n\nAssistant:  Hello." DS_EOS "Assistant:",
     "You are terse.\n\nUser: Hi there \n\nAssistant:  Hello." DS_EOS},
    {"deepseek3",
     "You are terse.\n\n" DS_USER "Hi there " DS_ASSISTANT " Hello." DS_EOS DS_ASSISTANT,
     "You are terse.\n\n" DS_USER "Hi there " DS_ASSISTANT " Hello." DS_EOS},
};

static void check_format(const char *tmpl, bool gen, const char *want, const char *what) {
    char *got = NULL;
    moe_err err = {0};
    moe_status st = moe_chat_format(tmpl, CONV, 3, gen, &got, &err);
    bool ok = st == MOE_OK && got && strcmp(got, want) == 0;
    CHECK(ok, "%s (add_assistant=%d): %s", what, gen, st == MOE_OK ? "text differs" : err.msg);
    if (!ok && got)
        fprintf(stderr, "    got:  [%s]\n    want: [%s]\n", got, want);
    free(got);
}

/* Real template texts (abridged to what matters) and the family each is. */
typedef struct real_template {
    const char *text;
    const char *family;
} real_template;

static const real_template REAL[] = {
    {"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
     "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}",
     "chatml"},
    {"{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}"
     "{{'<|user|>' + '\\n' + message['content'] + '<|end|>' + '\\n' + '<|assistant|>' + '\\n'}}"
     "{% elif (message['role'] == 'assistant') %}{{message['content'] + '<|end|>' + '\\n'}}"
     "{% endif %}{% endfor %}",
     "phi3"},
    {"{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
     "+ message['content'] | trim + '<|eot_id|>' %}",
     "llama3"},
    {"{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
     "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
     "{{ message['content'] + eos_token}}{% endif %}{% endfor %}",
     "llama2"},
    {"{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + content.strip() + '\\n<</SYS>>\\n\\n' "
     "}}{% endif %}[INST]",
     "llama2-sys-strip"},
    {"{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
     "{{ 'User: ' + message['content'] + '\\n\\n' }}{% elif message['role'] == 'assistant' %}"
     "{{ 'Assistant: ' + message['content'] + eos_token }}{% endif %}{% endfor %}",
     "deepseek2"},
    {"{% if message['role'] == 'user' %}{{'<" "\xef\xbd\x9cUser\xef\xbd\x9c>' + message['content']}}"
     "{% endif %}{{'<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>' + content + '" DS_EOS "'}}",
     "deepseek3"},
    {"{% for message in messages %}### Instruction:\\n{{ message['content'] }}<|EOT|>"
     "{% endfor %}",
     "deepseek"},
    {"{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}",
     "gemma"},
};

int main(void) {
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const expect *e = &CASES[i];
        check_format(e->tmpl, true, e->with_gen, e->tmpl);
        check_format(e->tmpl, false, e->without_gen ? e->without_gen : e->with_gen, e->tmpl);
    }
    for (size_t i = 0; i < sizeof REAL / sizeof REAL[0]; i++) {
        const char *got = moe_chat_template_name(REAL[i].text);
        CHECK(got && strcmp(got, REAL[i].family) == 0, "template %zu recognised as %s, not %s", i,
              got ? got : "(nothing)", REAL[i].family);
    }
    /* The phi3 template renders like the "phi3" name. */
    check_format(REAL[1].text, true,
                 "<|system|>\nYou are terse.<|end|>\n<|user|>\nHi there <|end|>\n<|assistant|>\n"
                 " Hello.<|end|>\n<|assistant|>\n",
                 "phi3 template text");
    /* NULL template is chatml (llama.cpp's default). */
    check_format(NULL, false, CASES[0].without_gen, "NULL template");

    /* Later turns: llama2 reopens [INST] after a reply (with <s> for -bos). */
    moe_chat_message four[] = {{"user", "a"}, {"assistant", "b"}, {"user", "c"}};
    char *out = NULL;
    moe_err err = {0};
    CHECK(moe_chat_format("llama2-sys-bos", four, 3, true, &out, &err) == MOE_OK && out &&
              strcmp(out, "[INST] a [/INST]b</s><s>[INST] c [/INST]") == 0,
          "llama2-sys-bos second turn: %s", out ? out : err.msg);
    free(out);

    /* Errors. */
    out = (char *)1;
    CHECK(moe_chat_format("{{ something unknown }}", CONV, 3, true, &out, &err) ==
                  MOE_ERR_UNSUPPORTED && !out,
          "unknown template: %s", err.msg);
    CHECK(moe_chat_format("gemma", CONV, 3, true, &out, &err) == MOE_ERR_UNSUPPORTED &&
              strstr(err.msg, "'gemma'"),
          "recognised but unsupported family names itself: %s", err.msg);
    moe_chat_message bad[] = {{"user", NULL}};
    CHECK(moe_chat_format("chatml", bad, 1, true, &out, &err) == MOE_ERR_USAGE,
          "message without content: %s", err.msg);
    CHECK(moe_chat_format("chatml", NULL, 0, true, &out, &err) == MOE_OK && out &&
              strcmp(out, "<|im_start|>assistant\n") == 0,
          "no messages, only the prompt");
    free(out);
    TEST_DONE();
}
