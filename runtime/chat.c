/* chat.c — llama.cpp's built-in chat formats: recognition by name or by
 * distinctive template text, and rendering (../shared/spec/model.md §7). */
#include "runtime/chat.h"

#include <stdlib.h>
#include <string.h>

#define FW_BAR "\xef\xbd\x9c" /* U+FF5C, DeepSeek's full-width '|' */
#define DS_EOS "<" FW_BAR "end\xe2\x96\x81of\xe2\x96\x81sentence" FW_BAR ">"
#define DS_USER "<" FW_BAR "User" FW_BAR ">"
#define DS_ASSISTANT "<" FW_BAR "Assistant" FW_BAR ">"

/* ---- formats ------------------------------------------------------------------------------- */

/* One turn is open + role + mid + content + close (chatml, phi3, llama3). */
typedef struct role_fmt {
    const char *open, *mid, *close, *gen;
    bool trim; /* content is stripped of surrounding whitespace */
} role_fmt;

/* Fixed text around each role's content; other roles are skipped unless
 * other_as_assistant (deepseek*, mistral-v7). */
typedef struct turn_fmt {
    const char *sys_pre, *sys_post, *user_pre, *user_post, *asst_pre, *asst_post, *gen;
    bool other_as_assistant;
} turn_fmt;

typedef enum fmt_kind { K_UNSUPPORTED, K_ROLE, K_TURN, K_LLAMA2, K_MISTRAL } fmt_kind;

/* llama2 variants */
#define L2_SYS 1u        /* <<SYS>> block for system messages */
#define L2_BOS_INSIDE 2u /* <s> before each later [INST] */
#define L2_STRIP 4u      /* every content trimmed */
/* mistral v1/v3/v3-tekken */
#define MI_LEAD_SPACE 1u  /* " [INST]" and " [/INST]" (v1) */
#define MI_TRAIL_SPACE 2u /* "[INST] " and " " before replies (not tekken) */
#define MI_TRIM_REPLY 4u  /* assistant content trimmed (v3) */

typedef struct fmt {
    const char *name;
    fmt_kind kind;
    const void *spec; /* role_fmt / turn_fmt */
    unsigned flags;
} fmt;

static const role_fmt CHATML = {"<|im_start|>", "\n", "<|im_end|>\n", "<|im_start|>assistant\n",
                                false};
static const role_fmt PHI3 = {"<|", "|>\n", "<|end|>\n", "<|assistant|>\n", false};
static const role_fmt LLAMA3 = {"<|start_header_id|>", "<|end_header_id|>\n\n", "<|eot_id|>",
                                "<|start_header_id|>assistant<|end_header_id|>\n\n", true};
static const turn_fmt DEEPSEEK = {"", "", "### Instruction:\n", "\n", "### Response:\n",
                                  "\n<|EOT|>\n", "### Response:\n", false};
static const turn_fmt DEEPSEEK2 = {"", "\n\n", "User: ", "\n\n", "Assistant: ", DS_EOS,
                                   "Assistant:", false};
static const turn_fmt DEEPSEEK3 = {"", "\n\n", DS_USER, "", DS_ASSISTANT, DS_EOS, DS_ASSISTANT,
                                   false};
static const turn_fmt MISTRAL_V7 = {"[SYSTEM_PROMPT] ", "[/SYSTEM_PROMPT]", "[INST] ", "[/INST]",
                                    " ", "</s>", NULL, true};

/* Every llama.cpp format name; those we do not render say so by name. */
static const fmt FORMATS[] = {
    {"chatml", K_ROLE, &CHATML, 0},
    {"llama2", K_LLAMA2, NULL, 0},
    {"llama2-sys", K_LLAMA2, NULL, L2_SYS},
    {"llama2-sys-bos", K_LLAMA2, NULL, L2_SYS | L2_BOS_INSIDE},
    {"llama2-sys-strip", K_LLAMA2, NULL, L2_SYS | L2_STRIP},
    {"mistral-v1", K_MISTRAL, NULL, MI_LEAD_SPACE | MI_TRAIL_SPACE},
    {"mistral-v3", K_MISTRAL, NULL, MI_TRAIL_SPACE | MI_TRIM_REPLY},
    {"mistral-v3-tekken", K_MISTRAL, NULL, 0},
    {"mistral-v7", K_TURN, &MISTRAL_V7, 0},
    {"phi3", K_ROLE, &PHI3, 0},
    {"llama3", K_ROLE, &LLAMA3, 0},
    {"deepseek", K_TURN, &DEEPSEEK, 0},
    {"deepseek2", K_TURN, &DEEPSEEK2, 0},
    {"deepseek3", K_TURN, &DEEPSEEK3, 0},
    {"phi4", K_UNSUPPORTED, NULL, 0}, {"falcon3", K_UNSUPPORTED, NULL, 0},
    {"zephyr", K_UNSUPPORTED, NULL, 0}, {"monarch", K_UNSUPPORTED, NULL, 0},
    {"gemma", K_UNSUPPORTED, NULL, 0}, {"orion", K_UNSUPPORTED, NULL, 0},
    {"openchat", K_UNSUPPORTED, NULL, 0}, {"vicuna", K_UNSUPPORTED, NULL, 0},
    {"vicuna-orca", K_UNSUPPORTED, NULL, 0}, {"command-r", K_UNSUPPORTED, NULL, 0},
    {"chatglm3", K_UNSUPPORTED, NULL, 0}, {"chatglm4", K_UNSUPPORTED, NULL, 0},
    {"glmedge", K_UNSUPPORTED, NULL, 0}, {"minicpm", K_UNSUPPORTED, NULL, 0},
    {"exaone3", K_UNSUPPORTED, NULL, 0}, {"rwkv-world", K_UNSUPPORTED, NULL, 0},
    {"granite", K_UNSUPPORTED, NULL, 0}, {"gigachat", K_UNSUPPORTED, NULL, 0},
    {"megrez", K_UNSUPPORTED, NULL, 0},
};
#define N_FORMATS (sizeof FORMATS / sizeof FORMATS[0])

static const fmt *by_name(const char *name) {
    for (size_t i = 0; i < N_FORMATS; i++)
        if (strcmp(FORMATS[i].name, name) == 0)
            return &FORMATS[i];
    return NULL;
}

/* ---- recognition --------------------------------------------------------------------------- */

static bool has(const char *t, const char *s) { return strstr(t, s) != NULL; }

/* The [INST] family: official Mistral templates by their own markers, else
 * the llama2 variants by what the template does. */
static const char *detect_inst(const char *t) {
    if (has(t, "[SYSTEM_PROMPT]"))
        return "mistral-v7";
    if (has(t, "' [INST] ' + system_message") || has(t, "[AVAILABLE_TOOLS]")) {
        if (has(t, " [INST]"))
            return "mistral-v1";
        if (has(t, "\"[INST]\""))
            return "mistral-v3-tekken";
        return "mistral-v3";
    }
    if (has(t, "content.strip()"))
        return "llama2-sys-strip";
    if (has(t, "bos_token + '[INST]"))
        return "llama2-sys-bos";
    if (has(t, "<<SYS>>"))
        return "llama2-sys";
    return "llama2";
}

/* Markers in llama.cpp's order (llm_chat_detect_template): earlier families
 * win when a template holds several. */
static const char *detect(const char *t) {
    if (has(t, "<|im_start|>"))
        return has(t, "<|im_sep|>") ? "phi4" : "chatml";
    if (strncmp(t, "mistral", 7) == 0 || has(t, "[INST]"))
        return detect_inst(t);
    if (has(t, "<|assistant|>") && has(t, "<|end|>"))
        return "phi3";
    if (has(t, "<|assistant|>") && has(t, "<|user|>"))
        return has(t, "</s>") ? "falcon3" : "glmedge";
    if (has(t, "<|user|>") && has(t, "<|endoftext|>"))
        return "zephyr";
    if (has(t, "bos_token + message['role']"))
        return "monarch";
    if (has(t, "<start_of_turn>"))
        return "gemma";
    if (has(t, "'\\n\\nAssistant: ' + eos_token"))
        return "orion";
    if (has(t, "GPT4 Correct "))
        return "openchat";
    if (has(t, "USER: ") && has(t, "ASSISTANT: "))
        return has(t, "SYSTEM: ") ? "vicuna-orca" : "vicuna";
    if (has(t, "### Instruction:") && has(t, "<|EOT|>"))
        return "deepseek";
    if (has(t, "<|START_OF_TURN_TOKEN|>") && has(t, "<|USER_TOKEN|>"))
        return "command-r";
    if (has(t, "<|start_header_id|>") && has(t, "<|end_header_id|>"))
        return "llama3";
    if (has(t, "[gMASK]sop"))
        return "chatglm3";
    if (has(t, "[gMASK]<sop>"))
        return "chatglm4";
    if (has(t, "'Assistant: ' + message['content'] + eos_token"))
        return "deepseek2";
    if (has(t, DS_ASSISTANT) && has(t, DS_USER) && has(t, DS_EOS))
        return "deepseek3";
    if (has(t, "[|system|]") && has(t, "[|assistant|]") && has(t, "[|endofturn|]"))
        return "exaone3";
    if (has(t, "<|start_of_role|>"))
        return "granite";
    return NULL;
}

const char *moe_chat_template_name(const char *tmpl) {
    if (!tmpl)
        return "chatml";
    const fmt *f = by_name(tmpl);
    return f ? f->name : detect(tmpl);
}

/* ---- rendering ----------------------------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool failed;
} sbuf;

static void put_n(sbuf *b, const char *s, size_t n) {
    if (b->failed)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void put(sbuf *b, const char *s) { put_n(b, s, strlen(s)); }

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Content, optionally without leading/trailing ASCII whitespace. */
static void put_content(sbuf *b, const char *s, bool trim) {
    size_t n = strlen(s);
    if (trim) {
        while (n && is_space(*s))
            s++, n--;
        while (n && is_space(s[n - 1]))
            n--;
    }
    put_n(b, s, n);
}

static void render_role(const role_fmt *f, const moe_chat_message *m, int n, bool add_ass,
                        sbuf *b) {
    for (int i = 0; i < n; i++) {
        put(b, f->open);
        put(b, m[i].role);
        put(b, f->mid);
        put_content(b, m[i].content, f->trim);
        put(b, f->close);
    }
    if (add_ass)
        put(b, f->gen);
}

static void render_turn(const turn_fmt *f, const moe_chat_message *m, int n, bool add_ass,
                        sbuf *b) {
    for (int i = 0; i < n; i++) {
        const char *pre, *post;
        if (strcmp(m[i].role, "system") == 0)
            pre = f->sys_pre, post = f->sys_post;
        else if (strcmp(m[i].role, "user") == 0)
            pre = f->user_pre, post = f->user_post;
        else if (strcmp(m[i].role, "assistant") == 0 || f->other_as_assistant)
            pre = f->asst_pre, post = f->asst_post;
        else
            continue;
        put(b, pre);
        put(b, m[i].content);
        put(b, post);
    }
    if (add_ass && f->gen)
        put(b, f->gen);
}

/* llama2: the text opens inside a turn; a reply closes it with </s> and the
 * next message reopens one. A system message without <<SYS>> support is
 * folded into the first user turn. */
static void render_llama2(unsigned flags, const moe_chat_message *m, int n, sbuf *b) {
    bool inside = true, strip = flags & L2_STRIP;
    put(b, "[INST] ");
    for (int i = 0; i < n; i++) {
        if (!inside) {
            inside = true;
            put(b, flags & L2_BOS_INSIDE ? "<s>[INST] " : "[INST] ");
        }
        if (strcmp(m[i].role, "system") == 0) {
            put(b, flags & L2_SYS ? "<<SYS>>\n" : "");
            put_content(b, m[i].content, strip);
            put(b, flags & L2_SYS ? "\n<</SYS>>\n\n" : "\n");
        } else if (strcmp(m[i].role, "user") == 0) {
            put_content(b, m[i].content, strip);
            put(b, " [/INST]");
        } else {
            put_content(b, m[i].content, strip);
            put(b, "</s>");
            inside = false;
        }
    }
}

static void render_mistral(unsigned flags, const moe_chat_message *m, int n, sbuf *b) {
    const char *lead = flags & MI_LEAD_SPACE ? " " : "";
    const char *trail = flags & MI_TRAIL_SPACE ? " " : "";
    bool inside = false;
    for (int i = 0; i < n; i++) {
        if (!inside) {
            put(b, lead);
            put(b, "[INST]");
            put(b, trail);
            inside = true;
        }
        if (strcmp(m[i].role, "system") == 0) {
            put(b, m[i].content);
            put(b, "\n\n");
        } else if (strcmp(m[i].role, "user") == 0) {
            put(b, m[i].content);
            put(b, lead);
            put(b, "[/INST]");
        } else {
            put(b, trail);
            put_content(b, m[i].content, flags & MI_TRIM_REPLY);
            put(b, "</s>");
            inside = false;
        }
    }
}

moe_status moe_chat_format(const char *tmpl, const moe_chat_message *msgs, int n,
                           bool add_assistant, char **out, moe_err *err) {
    *out = NULL;
    MOE_FAIL_IF(n < 0 || (n > 0 && !msgs), err, MOE_ERR_USAGE, "chat: %d messages", n);
    for (int i = 0; i < n; i++)
        MOE_FAIL_IF(!msgs[i].role || !msgs[i].content, err, MOE_ERR_USAGE,
                    "chat message %d has no %s", i, msgs[i].role ? "content" : "role");
    const char *name = moe_chat_template_name(tmpl);
    MOE_FAIL_IF(!name, err, MOE_ERR_UNSUPPORTED,
                "chat template not recognised (not a known format name, and none of the "
                "built-in formats' markers found in its text)");
    const fmt *f = by_name(name);
    MOE_FAIL_IF(!f || f->kind == K_UNSUPPORTED, err, MOE_ERR_UNSUPPORTED,
                "chat format '%s' is recognised but not supported", name);
    sbuf b = {0};
    put(&b, ""); /* an empty conversation still gives a string */
    switch (f->kind) {
    case K_ROLE:
        render_role(f->spec, msgs, n, add_assistant, &b);
        break;
    case K_TURN:
        render_turn(f->spec, msgs, n, add_assistant, &b);
        break;
    case K_LLAMA2:
        render_llama2(f->flags, msgs, n, &b);
        break;
    case K_MISTRAL:
        render_mistral(f->flags, msgs, n, &b);
        break;
    case K_UNSUPPORTED:
        break;
    }
    if (b.failed) {
        free(b.p);
        return moe_fail(err, MOE_ERR_NOMEM, "out of memory formatting the chat");
    }
    *out = b.p;
    return MOE_OK;
}
