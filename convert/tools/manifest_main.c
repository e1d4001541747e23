/* moe-manifest: the bookkeeping behind ci/convert, the CI conversion pipeline.
 *
 * Owns: whole-file XXH3-64 hashes, the run state of one pipeline invocation
 * (OUTDIR/work/state.json), the decision whether a step can be skipped
 * (`check`: same tools, arguments and input hashes as recorded in the previous
 * manifest, and every recorded output still has its size and hash), the step
 * records (`record`), the final manifest (`finish`: keys sorted, so the same
 * inputs and options give the same bytes apart from the "run" object), merging
 * the manifests of parallel jobs, decompressing .gguf.zst outputs for
 * verification, and the smoke-test logits check. Does not own: running the
 * conversion tools (ci/convert does, and hands us their JSON reports).
 *
 * Manifest layout (schema "moe-convert-manifest/1"; see ci/README.md):
 *   manifest  deterministic: tools (bytes + XXH3 of each binary), options,
 *             inputs and outputs (bytes, XXH3, per-tensor XXH3), steps (tools,
 *             args, input/output hashes, result, facts), result
 *   run       this invocation only: threads, each step's status (done,
 *             skipped, failed) and milliseconds, total milliseconds
 * The state file has the same two objects plus "cache" (hashes of files
 * already read in this run, keyed by path, device, inode, size and times).
 *
 * Paths: the script runs us from OUTDIR. Files inside it are named by their
 * path relative to it; files outside it (absolute paths: the source model,
 * the imatrix) by their file name, so manifests do not depend on where the
 * inputs live.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "formats/base/cli.h"
#include "formats/base/log.h"
#include "formats/base/tempfile.h"
#include "formats/gguf/zstd_seekable.h"
#include "formats/base/clock.h"

#define SCHEMA "moe-convert-manifest/1"
#define JSON_FLAGS (JSON_INDENT(2) | JSON_SORT_KEYS)
#define HASH_CHUNK ((size_t)4 << 20)

/* Every option of every subcommand; each subcommand's table uses a subset. */
typedef struct mf_opts {
    /* step spec (check, record) */
    const char *id, *args, *type, *inputs_from;
    moe_opt_list tools, inputs, outputs;
    /* facts (record) */
    const char *outputs_from, *plan, *inspect_dir, *logits, *tokens, *error;
    int64_t n_vocab, ms;
    /* begin */
    moe_opt_list tool_paths;
    const char *types, *imatrix;
    uint64_t shards;
    bool interleave;
    int64_t zstd, threads;
    /* finish */
    bool partial;
} mf_opts;

/* ---- small helpers ------------------------------------------------------------ */

static json_t *hex_json(uint64_t h) {
    char buf[17];
    snprintf(buf, sizeof buf, "%016" PRIx64, h);
    return json_string(buf);
}

/* The name a file has in the manifest: relative paths (inside OUTDIR) as they
 * are, absolute ones (inputs outside it) by their last component. */
static const char *display_name(const char *path) {
    if (path[0] != '/')
        return path;
    const char *slash = strrchr(path, '/');
    return slash + 1;
}

/* Reads a JSON file; a missing or malformed file is an error naming it. */
static moe_status load_json_flags(const char *path, size_t flags, json_t **out, moe_err *err) {
    json_error_t jerr;
    *out = json_load_file(path, JSON_ALLOW_NUL | flags, &jerr);
    MOE_FAIL_IF(!*out, err, MOE_ERR_FORMAT, "%s: %s (line %d)", path, jerr.text, jerr.line);
    return MOE_OK;
}

static moe_status load_json(const char *path, json_t **out, moe_err *err) {
    return load_json_flags(path, 0, out, err);
}

/* moe-inspect's reports are read with every number as a double (a u64 key of
 * some other writer may exceed jansson's integers; our own checksums come as
 * hex strings): these turn the counts, sizes and dims we keep (all far below
 * 2^53) back into integers. */
static json_t *int_of(const json_t *v) {
    return json_is_number(v) ? json_integer((json_int_t)json_number_value(v)) : NULL;
}

static json_int_t int_value(const json_t *v) {
    return json_is_number(v) ? (json_int_t)json_number_value(v) : 0;
}

static json_t *ints_of(const json_t *arr) {
    json_t *out = json_is_array(arr) ? json_array() : NULL;
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        if (!json_is_number(v)) {
            json_decref(out);
            return NULL;
        }
        json_array_append_new(out, int_of(v));
    }
    return out;
}

/* Writes root to path atomically (temp file beside it, fsync, rename), keys
 * sorted: equal documents give equal bytes. */
static moe_status save_json(const json_t *root, const char *path, moe_err *err) {
    char *text = json_dumps(root, JSON_FLAGS);
    MOE_FAIL_IF(!text, err, MOE_ERR_NOMEM, "out of memory");
    moe_output out;
    moe_status st = moe_output_open(&out, path, MOE_OUTPUT_OVERWRITE, err);
    if (st == MOE_OK)
        st = moe_output_write(&out, text, strlen(text), err);
    if (st == MOE_OK)
        st = moe_output_write(&out, "\n", 1, err);
    if (st == MOE_OK)
        st = moe_output_commit(&out, err);
    else
        moe_output_abort(&out);
    free(text);
    return st;
}

/* XXH3-64 (seed 0) and size of a whole file, read in bounded chunks. */
static moe_status hash_file(const char *path, uint64_t *bytes, uint64_t *hash, moe_err *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    MOE_FAIL_IF(fd < 0, err, MOE_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    uint8_t *buf = malloc(HASH_CHUNK);
    XXH3_state_t *s = XXH3_createState();
    moe_status st = buf && s ? MOE_OK : moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    if (st == MOE_OK)
        XXH3_64bits_reset(s);
    uint64_t total = 0;
    while (st == MOE_OK) {
        ssize_t r = read(fd, buf, HASH_CHUNK);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            st = moe_fail(err, MOE_ERR_IO, "%s: read failed: %s", path, strerror(errno));
        if (r <= 0)
            break;
        XXH3_64bits_update(s, buf, (size_t)r);
        total += (uint64_t)r;
    }
    if (st == MOE_OK) {
        *bytes = total;
        *hash = XXH3_64bits_digest(s);
    }
    XXH3_freeState(s);
    free(buf);
    close(fd);
    return st;
}

static int64_t ns_of(struct timespec t) {
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* hash_file through the run's cache (state "cache"): a file is read once per
 * run unless it changes (device, inode, size, mtime, ctime). */
static moe_status cached_hash(json_t *state, const char *path, uint64_t *bytes, uint64_t *hash,
                              moe_err *err) {
    struct stat sb;
    MOE_FAIL_IF(stat(path, &sb) != 0, err, MOE_ERR_IO, "%s: %s", path, strerror(errno));
    MOE_FAIL_IF(!S_ISREG(sb.st_mode), err, MOE_ERR_IO, "%s: not a regular file", path);
    json_t *key = json_pack("[I, I, I, I, I]", (json_int_t)sb.st_dev, (json_int_t)sb.st_ino,
                            (json_int_t)sb.st_size, (json_int_t)ns_of(sb.st_mtim),
                            (json_int_t)ns_of(sb.st_ctim));
    MOE_FAIL_IF(!key, err, MOE_ERR_NOMEM, "out of memory");
    json_t *cache = json_object_get(state, "cache");
    json_t *e = json_object_get(cache, path);
    const char *hex = json_string_value(json_object_get(e, "xxh3"));
    if (e && hex && json_equal(json_object_get(e, "stat"), key)) {
        json_decref(key);
        *bytes = (uint64_t)sb.st_size;
        *hash = strtoull(hex, NULL, 16);
        return MOE_OK;
    }
    moe_status st = hash_file(path, bytes, hash, err);
    if (st == MOE_OK && json_is_object(cache))
        json_object_set_new(cache, path, json_pack("{s:o, s:o}", "stat", key, "xxh3",
                                                   hex_json(*hash)));
    else
        json_decref(key);
    return st;
}

/* {"path", "bytes", "xxh3"} of a file (hashed through the cache). */
static moe_status file_entry(json_t *state, const char *path, json_t **out, moe_err *err) {
    uint64_t bytes, hash;
    MOE_TRY(cached_hash(state, path, &bytes, &hash, err));
    *out = json_pack("{s:s, s:I, s:o}", "path", display_name(path), "bytes", (json_int_t)bytes,
                     "xxh3", hex_json(hash));
    MOE_FAIL_IF(!*out, err, MOE_ERR_NOMEM, "out of memory");
    return MOE_OK;
}

/* Splits s at any of the characters in sep into a JSON array of the
 * non-empty pieces ("a b  c" -> ["a", "b", "c"]). NULL gives []. */
static json_t *split_list(const char *s, const char *sep) {
    json_t *arr = json_array();
    while (s && *s) {
        s += strspn(s, sep);
        size_t n = strcspn(s, sep);
        if (n)
            json_array_append_new(arr, json_stringn(s, n));
        s += n;
    }
    return arr;
}

static json_t *find_step(const json_t *steps, const char *id) {
    size_t i;
    json_t *s;
    json_array_foreach(steps, i, s) {
        const char *sid = json_string_value(json_object_get(s, "id"));
        if (sid && !strcmp(sid, id))
            return s;
    }
    return NULL;
}

static json_t *find_by_path(const json_t *arr, const char *path) {
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        const char *p = json_string_value(json_object_get(e, "path"));
        if (p && !strcmp(p, path))
            return e;
    }
    return NULL;
}

/* ---- state ------------------------------------------------------------------ */

static moe_status load_state(const char *path, json_t **out, moe_err *err) {
    MOE_TRY(load_json(path, out, err));
    json_t *m = json_object_get(*out, "manifest"), *r = json_object_get(*out, "run");
    if (!json_is_array(json_object_get(m, "steps")) || !json_is_array(json_object_get(r, "steps")) ||
        !json_is_object(json_object_get(*out, "cache"))) {
        json_decref(*out);
        *out = NULL;
        return moe_fail(err, MOE_ERR_FORMAT, "%s: not a moe-manifest state file", path);
    }
    return MOE_OK;
}

static void run_step(json_t *state, const char *id, const char *status, int64_t ms) {
    json_array_append_new(json_object_get(json_object_get(state, "run"), "steps"),
                          json_pack("{s:s, s:s, s:I}", "id", id, "status", status, "ms",
                                    (json_int_t)(ms < 0 ? 0 : ms)));
}

/* Real paths of a step's inputs: each --input, then the outputs recorded for
 * step --inputs-from in this run. Returns a new array of strings. */
static moe_status input_paths(json_t *state, const mf_opts *o, json_t **out, moe_err *err) {
    *out = json_array();
    for (int i = 0; i < o->inputs.count; i++)
        json_array_append_new(*out, json_string(o->inputs.items[i]));
    if (!o->inputs_from)
        return MOE_OK;
    json_t *src = find_step(json_object_get(json_object_get(state, "manifest"), "steps"),
                            o->inputs_from);
    if (!src || !json_is_array(json_object_get(src, "outputs"))) {
        json_decref(*out);
        return moe_fail(err, MOE_ERR_USAGE, "--inputs-from %s: no such step in this run",
                        o->inputs_from);
    }
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(src, "outputs"), i, e)
        json_array_append(*out, json_object_get(e, "path"));
    return MOE_OK;
}

/* [{"path", "xxh3"}] of the step's inputs, hashed through the cache. */
static moe_status hashed_inputs(json_t *state, const json_t *paths, json_t **out, moe_err *err) {
    *out = json_array();
    size_t i;
    json_t *p;
    json_array_foreach(paths, i, p) {
        json_t *e;
        moe_status st = file_entry(state, json_string_value(p), &e, err);
        if (st != MOE_OK) {
            json_decref(*out);
            return st;
        }
        json_object_del(e, "bytes");
        json_array_append_new(*out, e);
    }
    return MOE_OK;
}

static json_t *tool_names(const mf_opts *o) {
    json_t *arr = json_array();
    for (int i = 0; i < o->tools.count; i++)
        json_array_append_new(arr, json_string(o->tools.items[i]));
    return arr;
}

/* ---- begin -------------------------------------------------------------------- */

static moe_status begin_options(const mf_opts *o, json_t **out, moe_err *err) {
    json_t *types = split_list(o->types, ",");
    size_t i, j;
    json_t *t, *u;
    json_array_foreach(types, i, t) {
        const char *name = json_string_value(t);
        bool ok = name[0] != 0;
        for (const char *c = name; *c; c++)
            ok = ok && ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                        (*c >= '0' && *c <= '9') || *c == '_');
        json_array_foreach(types, j, u) if (j < i && !strcasecmp(json_string_value(u), name))
            ok = false;
        if (!ok) {
            moe_fail(err, MOE_ERR_USAGE, "--types: bad or repeated type '%s'", name);
            json_decref(types);
            return MOE_ERR_USAGE;
        }
    }
    if (json_array_size(types) == 0) {
        json_decref(types);
        return moe_fail(err, MOE_ERR_USAGE, "--types: no type given");
    }
    *out = json_pack("{s:o, s:b, s:o, s:o, s:o}", "types", types, "interleave", o->interleave,
                     "zstd", o->zstd == INT64_MIN ? json_null() : json_integer(o->zstd),
                     "shards", o->shards ? json_integer((json_int_t)o->shards) : json_null(),
                     "imatrix", o->imatrix ? json_string(display_name(o->imatrix)) : json_null());
    MOE_FAIL_IF(!*out, err, MOE_ERR_NOMEM, "out of memory");
    return MOE_OK;
}

/* begin STATE: a fresh state with the tools' hashes, the options, the imatrix
 * (if any) as an input and an empty step list. */
static moe_status cmd_begin(const mf_opts *o, const char *state_path, moe_err *err) {
    json_t *options;
    MOE_TRY(begin_options(o, &options, err));
    json_t *state = json_pack("{s:s, s:{s:{}, s:o, s:[], s:[], s:[]}, s:{s:I, s:I, s:[]}, s:{}}",
                              "schema", SCHEMA, "manifest", "tools", "options", options,
                              "inputs", "outputs",
                              "steps", "run", "threads", (json_int_t)o->threads, "started_ms",
                              (json_int_t)(int64_t)moe_now_ms(), "steps", "cache");
    MOE_FAIL_IF(!state, err, MOE_ERR_NOMEM, "out of memory");
    json_t *m = json_object_get(state, "manifest");
    moe_status st = MOE_OK;
    for (int i = 0; st == MOE_OK && i < o->tool_paths.count; i++) {
        const char *spec = o->tool_paths.items[i], *eq = strchr(spec, '=');
        if (!eq || eq == spec || !eq[1]) {
            st = moe_fail(err, MOE_ERR_USAGE, "--tool %s: expected NAME=PATH", spec);
            break;
        }
        uint64_t bytes, hash;
        st = hash_file(eq + 1, &bytes, &hash, err);
        if (st == MOE_OK) {
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)(eq - spec), spec);
            json_object_set_new(json_object_get(m, "tools"), name,
                                json_pack("{s:I, s:o}", "bytes", (json_int_t)bytes, "xxh3",
                                          hex_json(hash)));
        }
    }
    if (st == MOE_OK && o->imatrix) {
        json_t *e;
        st = file_entry(state, o->imatrix, &e, err);
        if (st == MOE_OK) {
            json_object_set_new(e, "role", json_string("imatrix"));
            json_array_append_new(json_object_get(m, "inputs"), e);
        }
    }
    if (st == MOE_OK)
        st = save_json(state, state_path, err);
    json_decref(state);
    return st;
}

/* ---- check -------------------------------------------------------------------- */

/* Copies the input or output entries (with their tensors) that an old step's
 * "files" fact names from the old manifest into the state. Returns false if
 * the old manifest lacks one. */
static bool restore_files(json_t *state, const json_t *old_m, const json_t *old_step) {
    const json_t *files = json_object_get(old_step, "files");
    if (!files)
        return true;
    const char *list = json_object_get(old_step, "type") ? "outputs" : "inputs";
    json_t *dst = json_object_get(json_object_get(state, "manifest"), list);
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f) { /* all there before anything is copied */
        const char *path = json_string_value(json_object_get(f, "path"));
        if (!path || !find_by_path(json_object_get(old_m, list), path))
            return false;
    }
    json_array_foreach(files, i, f) {
        const char *path = json_string_value(json_object_get(f, "path"));
        if (!find_by_path(dst, path))
            json_array_append_new(dst, json_deep_copy(find_by_path(json_object_get(old_m, list),
                                                                   path)));
    }
    return true;
}

/* Why the step recorded in old_m cannot be reused now, or NULL if it can.
 * why is a buffer for composed reasons. */
static const char *stale_reason(json_t *state, const json_t *old_m, const json_t *os,
                                const mf_opts *o, char *why, size_t why_len, moe_err *err) {
    const json_t *cur_tools = json_object_get(json_object_get(state, "manifest"), "tools");
    if (!os)
        return "not in the previous manifest";
    const char *result = json_string_value(json_object_get(os, "result"));
    if (!result || strcmp(result, "ok"))
        return "did not succeed last time";
    json_t *names = tool_names(o);
    bool same = json_equal(names, json_object_get(os, "tools"));
    json_decref(names);
    if (!same)
        return "uses other tools";
    for (int i = 0; i < o->tools.count; i++) {
        const char *t = o->tools.items[i];
        if (!json_equal(json_object_get(cur_tools, t),
                        json_object_get(json_object_get(old_m, "tools"), t)))
            return snprintf(why, why_len, "%s changed", t), why;
    }
    json_t *args = split_list(o->args, " ");
    same = json_equal(args, json_object_get(os, "args"));
    json_decref(args);
    if (!same)
        return "arguments changed";
    json_t *paths, *inputs;
    if (input_paths(state, o, &paths, err) != MOE_OK)
        return err->msg;
    moe_status st = hashed_inputs(state, paths, &inputs, err);
    json_decref(paths);
    if (st != MOE_OK)
        return err->msg;
    same = json_equal(inputs, json_object_get(os, "inputs"));
    json_decref(inputs);
    if (!same)
        return "inputs changed";
    const json_t *outs = json_object_get(os, "outputs");
    if (o->outputs.count && (size_t)o->outputs.count != json_array_size(outs))
        return "other outputs";
    size_t i;
    json_t *e;
    json_array_foreach(outs, i, e) {
        const char *p = json_string_value(json_object_get(e, "path"));
        if (!p || (o->outputs.count && strcmp(p, o->outputs.items[i])))
            return "other outputs";
        if (access(p, F_OK) != 0)
            return snprintf(why, why_len, "output %s is missing", p), why;
        json_t *now;
        if (file_entry(state, p, &now, err) != MOE_OK)
            return err->msg;
        same = json_equal(now, e);
        json_decref(now);
        if (!same)
            return snprintf(why, why_len, "output %s does not match its recorded size and XXH3",
                            p), why;
    }
    return NULL;
}

/* check STATE OLD_MANIFEST: exit 0 after copying the old record of step --id
 * into the state (status "skipped") when it can be reused; otherwise prints
 * why not and returns MOE_ERR_INTEGRITY (exit 1), changing nothing but the
 * hash cache. */
static moe_status cmd_check(const mf_opts *o, const char *state_path, const char *old_path,
                            moe_err *err) {
    int64_t t0 = (int64_t)moe_now_ms();
    json_t *state, *old = NULL;
    MOE_TRY(load_state(state_path, &state, err));
    char why[512];
    const char *reason = NULL;
    moe_err lerr = {0};
    if (access(old_path, F_OK) != 0)
        reason = "no previous manifest";
    else if (load_json(old_path, &old, &lerr) != MOE_OK)
        reason = lerr.msg;
    else if (!json_equal(json_object_get(old, "schema"), json_object_get(state, "schema")))
        reason = "the previous manifest has another schema";
    const json_t *old_m = json_object_get(old, "manifest");
    const json_t *os = old_m ? find_step(json_object_get(old_m, "steps"), o->id) : NULL;
    if (!reason)
        reason = stale_reason(state, old_m, os, o, why, sizeof why, &lerr);
    if (!reason && !restore_files(state, old_m, os))
        reason = "the previous manifest lacks a file entry of this step";
    if (!reason) {
        json_array_append_new(json_object_get(json_object_get(state, "manifest"), "steps"),
                              json_deep_copy(os));
        run_step(state, o->id, "skipped", (int64_t)moe_now_ms() - t0);
    } else {
        printf("%s\n", reason);
    }
    moe_status st = save_json(state, state_path, err); /* keeps the hash cache */
    json_decref(old);
    json_decref(state);
    if (st == MOE_OK && reason)
        st = moe_fail(err, MOE_ERR_INTEGRITY, "step %s must run: %s", o->id, reason);
    return st;
}

/* ---- record ------------------------------------------------------------------- */

/* The model facts the smoke test needs, from moe-inspect's JSON of the input:
 * the vocabulary size, BOS, and the prompt BOS + three ids spread over the
 * vocabulary. */
static moe_status model_facts(const json_t *inspect, json_t *step, moe_err *err) {
    json_int_t n_vocab = 0, bos = -1;
    size_t i;
    json_t *kv;
    json_array_foreach(json_object_get(inspect, "metadata"), i, kv) {
        const char *key = json_string_value(json_object_get(kv, "key"));
        if (key && !strcmp(key, "tokenizer.ggml.tokens"))
            n_vocab = int_value(json_object_get(kv, "count"));
        else if (key && !strcmp(key, "tokenizer.ggml.bos_token_id"))
            bos = int_value(json_object_get(kv, "value"));
    }
    json_t *t;
    json_array_foreach(json_object_get(inspect, "tensors"), i, t) {
        const char *name = json_string_value(json_object_get(t, "name"));
        if (n_vocab <= 0 && name && !strcmp(name, "token_embd.weight"))
            n_vocab = int_value(json_array_get(json_object_get(t, "shape"), 1));
    }
    MOE_FAIL_IF(n_vocab < 4, err, MOE_ERR_FORMAT,
                "cannot tell the vocabulary size (no tokenizer.ggml.tokens or token_embd.weight)");
    json_t *tokens = json_array();
    if (bos >= 0 && bos < n_vocab)
        json_array_append_new(tokens, json_integer(bos));
    for (int q = 1; q <= 3; q++)
        json_array_append_new(tokens, json_integer(n_vocab * q / 4));
    json_object_set_new(step, "n_vocab", json_integer(n_vocab));
    json_object_set_new(step, "bos", bos >= 0 ? json_integer(bos) : json_null());
    json_object_set_new(step, "smoke_tokens", tokens);
    return MOE_OK;
}

/* Reads dir/NAME.json (moe-inspect --json --verify of file `path`): adds the
 * file with its tensors to the manifest's outputs (step has a type) or inputs
 * (role "model"), and its verification summary to the step's "files". */
static moe_status inspect_fact(json_t *state, json_t *step, const char *dir, const char *path,
                               bool first, moe_err *err) {
    const char *name = display_name(path), *base = strrchr(name, '/');
    char jpath[4096];
    snprintf(jpath, sizeof jpath, "%s/%s.json", dir, base ? base + 1 : name);
    json_t *ins, *entry = NULL;
    MOE_TRY(load_json_flags(jpath, JSON_DECODE_INT_AS_REAL, &ins, err));
    moe_status st = file_entry(state, path, &entry, err);
    json_t *v = json_object_get(ins, "verify"), *tensors = json_array();
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(ins, "tensors"), i, t)
        json_array_append_new(tensors, json_pack("{s:O, s:O, s:o, s:o, s:O}", "name",
                                                 json_object_get(t, "name"), "type",
                                                 json_object_get(t, "type"), "shape",
                                                 ints_of(json_object_get(t, "shape")), "bytes",
                                                 int_of(json_object_get(t, "bytes")), "xxh3",
                                                 json_object_get(t, "xxh3")));
    if (st == MOE_OK && (!json_is_object(v) || json_array_size(tensors) != i))
        st = moe_fail(err, MOE_ERR_FORMAT, "%s: no verification result or malformed tensors", jpath);
    if (st == MOE_OK && !json_is_true(json_object_get(v, "ok")))
        st = moe_fail(err, MOE_ERR_INTEGRITY, "%s: tensor checksums do not verify", path);
    json_t *type = json_object_get(step, "type");
    if (st == MOE_OK) {
        json_object_set_new(entry, type ? "type" : "role", type ? json_copy(type) : json_string("model"));
        json_object_set(entry, "tensors", tensors);
        json_array_append_new(json_object_get(json_object_get(state, "manifest"),
                                              type ? "outputs" : "inputs"), entry);
        json_array_append_new(json_object_get(step, "files"),
                              json_pack("{s:s, s:O, s:o, s:o, s:O}", "path", name, "stored",
                                        json_object_get(v, "stored"), "checked",
                                        int_of(json_object_get(v, "checked")), "mismatched",
                                        int_of(json_object_get(v, "mismatched")), "ok",
                                        json_object_get(v, "ok")));
    } else {
        json_decref(entry);
    }
    if (st == MOE_OK && first && !type)
        st = model_facts(ins, step, err);
    json_decref(tensors);
    json_decref(ins);
    return st;
}

/* Checks the smoke run's logits: one row of n_vocab little-endian float32
 * per prompt token, every value finite. */
static moe_status logits_fact(json_t *step, const mf_opts *o, moe_err *err) {
    json_t *tokens = split_list(o->tokens, " ");
    size_t rows = json_array_size(tokens);
    MOE_FAIL_IF(rows == 0 || o->n_vocab <= 0, err, MOE_ERR_USAGE,
                "--logits needs --tokens and --n-vocab");
    FILE *f = fopen(o->logits, "rb");
    moe_status st = f ? MOE_OK : moe_fail(err, MOE_ERR_IO, "%s: %s", o->logits, strerror(errno));
    uint64_t n = 0, bad = 0, want = (uint64_t)rows * (uint64_t)o->n_vocab;
    uint8_t b[4];
    while (st == MOE_OK && fread(b, 1, 4, f) == 4) {
        uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                     (uint32_t)b[3] << 24;
        float x;
        memcpy(&x, &u, 4);
        if (!isfinite(x) && bad++ == 0)
            MOE_WARN("%s: first non-finite logit: row %" PRIu64 ", id %" PRIu64, o->logits,
                     n / (uint64_t)o->n_vocab, n % (uint64_t)o->n_vocab);
        n++;
    }
    if (f)
        fclose(f);
    if (st == MOE_OK && n != want)
        st = moe_fail(err, MOE_ERR_FORMAT, "%s: %" PRIu64 " logits, expected %zu rows of %" PRId64,
                      o->logits, n, rows, o->n_vocab);
    if (st == MOE_OK && bad)
        st = moe_fail(err, MOE_ERR_INTEGRITY, "%s: %" PRIu64 " of %" PRIu64 " logits are not finite",
                      o->logits, bad, n);
    json_t *ids = json_array();
    size_t i;
    json_t *t;
    json_array_foreach(tokens, i, t)
        json_array_append_new(ids, json_integer(strtoll(json_string_value(t), NULL, 10)));
    json_decref(tokens);
    json_object_set_new(step, "smoke", json_pack("{s:o, s:I, s:I, s:b}", "tokens", ids, "rows",
                                                 (json_int_t)rows, "n_vocab",
                                                 (json_int_t)o->n_vocab, "finite",
                                                 st == MOE_OK));
    return st;
}

/* The step's outputs: each --output, then the "outputs" paths of the tool
 * report --outputs-from (moe-repack --json). */
static moe_status step_outputs(json_t *state, json_t *step, const mf_opts *o, moe_err *err) {
    json_t *paths = json_array(), *report = NULL, *outs = json_object_get(step, "outputs");
    for (int i = 0; i < o->outputs.count; i++)
        json_array_append_new(paths, json_string(o->outputs.items[i]));
    moe_status st = MOE_OK;
    if (o->outputs_from && (st = load_json(o->outputs_from, &report, err)) == MOE_OK) {
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(report, "outputs"), i, e)
            json_array_append(paths, json_object_get(e, "path"));
    }
    size_t i;
    json_t *p;
    json_array_foreach(paths, i, p) {
        const char *path = json_string_value(p);
        json_t *e;
        if (st == MOE_OK && (!path || path[0] == '/'))
            st = moe_fail(err, MOE_ERR_USAGE, "outputs must be relative to OUTDIR");
        if (st == MOE_OK && (st = file_entry(state, path, &e, err)) == MOE_OK)
            json_array_append_new(outs, e);
    }
    json_decref(report);
    json_decref(paths);
    return st;
}

/* Fills step's facts from the options: outputs, plan (layout), inspected
 * files, smoke logits. Stops at the first failure. */
static moe_status step_facts(json_t *state, json_t *step, const json_t *in_paths,
                             const mf_opts *o, moe_err *err) {
    MOE_TRY(step_outputs(state, step, o, err));
    if (o->plan) {
        json_t *plan;
        MOE_TRY(load_json(o->plan, &plan, err));
        json_int_t stacked = json_integer_value(json_object_get(plan, "stacked"));
        json_object_set_new(step, "layout", json_string(stacked > 0 ? "split" : "stacked"));
        json_object_set_new(step, "stacked_tensors", json_integer(stacked));
        json_decref(plan);
    }
    if (o->inspect_dir) {
        json_object_set_new(step, "files", json_array());
        size_t i;
        json_t *p;
        json_array_foreach(in_paths, i, p)
            MOE_TRY(inspect_fact(state, step, o->inspect_dir, json_string_value(p), i == 0, err));
    }
    if (o->logits)
        MOE_TRY(logits_fact(step, o, err));
    return MOE_OK;
}

/* record STATE: appends the record of a step that just ran (or failed, with
 * --error) to the state. A fact that does not hold (checksums, logits) makes
 * the step "failed" and the command exit 1, after recording it. */
static moe_status cmd_record(const mf_opts *o, const char *state_path, moe_err *err) {
    json_t *state, *paths = NULL, *inputs = NULL;
    MOE_TRY(load_state(state_path, &state, err));
    json_t *step = json_pack("{s:s, s:o, s:o, s:[]}", "id", o->id, "tools", tool_names(o),
                             "args", split_list(o->args, " "), "outputs");
    if (o->type)
        json_object_set_new(step, "type", json_string(o->type));
    moe_status st = input_paths(state, o, &paths, err);
    if (st == MOE_OK)
        st = hashed_inputs(state, paths, &inputs, err);
    json_object_set_new(step, "inputs", inputs ? inputs : json_array());
    if (o->error) /* the tool's own message, even if an input is gone as well */
        st = moe_fail(err, MOE_ERR_IO, "%s", o->error);
    else if (st == MOE_OK)
        st = step_facts(state, step, paths, o, err);
    json_object_set_new(step, "result", json_string(st == MOE_OK ? "ok" : "failed"));
    if (st != MOE_OK) {
        json_object_set_new(step, "error", json_string(err->msg));
        json_array_clear(json_object_get(step, "outputs")); /* never trusted on a rerun */
    }
    json_array_append_new(json_object_get(json_object_get(state, "manifest"), "steps"), step);
    run_step(state, o->id, st == MOE_OK ? "done" : "failed", o->ms);
    moe_err serr = {0};
    moe_status sst = save_json(state, state_path, &serr);
    json_decref(paths);
    json_decref(state);
    if (sst != MOE_OK) {
        *err = serr;
        return sst;
    }
    return o->error ? MOE_OK : st; /* a failure the caller reported is no news to it */
}

/* ---- finish, merge, get --------------------------------------------------------- */

/* "ok" when every step succeeded (and there is at least one). */
static const char *overall_result(const json_t *m) {
    const json_t *steps = json_object_get(m, "steps");
    size_t i;
    json_t *s;
    json_array_foreach(steps, i, s) {
        const char *r = json_string_value(json_object_get(s, "result"));
        if (!r || strcmp(r, "ok"))
            return "failed";
    }
    return json_array_size(steps) ? "ok" : "failed";
}

/* finish STATE OUT: writes the manifest (the state without its cache, with
 * the overall result and the total time). */
static moe_status cmd_finish(const char *state_path, const char *out_path, bool partial,
                             moe_err *err) {
    json_t *state;
    MOE_TRY(load_state(state_path, &state, err));
    json_t *m = json_object_get(state, "manifest"), *run = json_object_get(state, "run");
    const char *result = overall_result(m);
    /* a run still going (or killed): its failures are final, its success is not */
    if (partial && (strcmp(result, "failed") != 0 ||
                    json_array_size(json_object_get(m, "steps")) == 0))
        result = "incomplete";
    json_object_set_new(m, "result", json_string(result));
    json_int_t started = json_integer_value(json_object_get(run, "started_ms"));
    json_object_set_new(run, "total_ms", json_integer((int64_t)moe_now_ms() - started));
    json_object_del(run, "started_ms");
    json_t *root = json_pack("{s:s, s:O, s:O}", "schema", SCHEMA, "manifest", m, "run", run);
    moe_status st = root ? save_json(root, out_path, err)
                         : moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    json_decref(root);
    json_decref(state);
    return st;
}

/* Adds manifest `m` (from file `path`) to the merged manifest `dst`: tools,
 * inputs and options other than the types must agree; outputs are appended,
 * steps appended unless an identical step is already there. */
static moe_status merge_one(json_t *dst, const json_t *m, const char *path, moe_err *err) {
    static const char *const same[] = {"tools", "inputs"};
    for (size_t k = 0; k < sizeof same / sizeof same[0]; k++)
        MOE_FAIL_IF(!json_equal(json_object_get(dst, same[k]), json_object_get(m, same[k])), err,
                    MOE_ERR_USAGE, "%s: its %s differ from the first manifest's", path, same[k]);
    json_t *a = json_deep_copy(json_object_get(dst, "options"));
    json_t *b = json_deep_copy(json_object_get(m, "options"));
    json_object_del(a, "types");
    json_object_del(b, "types");
    bool eq = json_equal(a, b);
    json_decref(a);
    json_decref(b);
    MOE_FAIL_IF(!eq, err, MOE_ERR_USAGE, "%s: its options differ (other than the types)", path);
    json_t *types = json_object_get(json_object_get(dst, "options"), "types");
    size_t i, j;
    json_t *e, *u;
    json_array_foreach(json_object_get(json_object_get(m, "options"), "types"), i, e) {
        bool seen = false;
        json_array_foreach(types, j, u) seen = seen || json_equal(e, u);
        if (!seen)
            json_array_append(types, e);
    }
    json_array_foreach(json_object_get(m, "outputs"), i, e) {
        const char *p = json_string_value(json_object_get(e, "path"));
        json_t *old = p ? find_by_path(json_object_get(dst, "outputs"), p) : NULL;
        MOE_FAIL_IF(old && !json_equal(old, e), err, MOE_ERR_USAGE,
                    "%s: output %s differs from another manifest's", path, p);
        if (!old)
            json_array_append(json_object_get(dst, "outputs"), e);
    }
    json_array_foreach(json_object_get(m, "steps"), i, e) {
        const char *id = json_string_value(json_object_get(e, "id"));
        json_t *old = id ? find_step(json_object_get(dst, "steps"), id) : NULL;
        MOE_FAIL_IF(old && !json_equal(old, e), err, MOE_ERR_USAGE,
                    "%s: step %s differs from another manifest's", path, id ? id : "?");
        if (!old)
            json_array_append(json_object_get(dst, "steps"), e);
    }
    return MOE_OK;
}

/* merge OUT IN...: one manifest from those of parallel jobs (see merge_one);
 * "run" becomes {"jobs": [each input's run]}. */
static moe_status cmd_merge(const char *out_path, char **in, int n_in, moe_err *err) {
    json_t *dst = NULL, *jobs = json_array();
    moe_status st = MOE_OK;
    for (int i = 0; st == MOE_OK && i < n_in; i++) {
        json_t *doc;
        if ((st = load_json(in[i], &doc, err)) != MOE_OK)
            break;
        const char *schema = json_string_value(json_object_get(doc, "schema"));
        json_t *m = json_object_get(doc, "manifest");
        if (!schema || strcmp(schema, SCHEMA) || !json_is_object(m))
            st = moe_fail(err, MOE_ERR_FORMAT, "%s: not a %s manifest", in[i], SCHEMA);
        else if (!dst)
            dst = json_deep_copy(m);
        else
            st = merge_one(dst, m, in[i], err);
        json_array_append(jobs, json_object_get(doc, "run"));
        json_decref(doc);
    }
    if (st == MOE_OK) {
        json_object_set_new(dst, "result", json_string(overall_result(dst)));
        json_t *root = json_pack("{s:s, s:O, s:{s:O}}", "schema", SCHEMA, "manifest", dst, "run",
                                 "jobs", jobs);
        st = save_json(root, out_path, err);
        json_decref(root);
    }
    json_decref(jobs);
    json_decref(dst);
    return st;
}

static void print_value(const json_t *v) {
    if (json_is_string(v))
        printf("%s\n", json_string_value(v));
    else if (json_is_integer(v))
        printf("%" JSON_INTEGER_FORMAT "\n", json_integer_value(v));
    else if (json_is_boolean(v) || json_is_null(v))
        printf("%s\n", json_is_true(v) ? "true" : json_is_null(v) ? "null" : "false");
}

/* get STATE STEP FIELD: prints a field of a step recorded in this run (or of
 * the options, STEP "options"): a
 * scalar on one line, an array of scalars space-separated, "outputs" as one
 * path per line. Fails if the step or field does not exist. */
static moe_status cmd_get(const char *state_path, const char *id, const char *field, moe_err *err) {
    json_t *state;
    MOE_TRY(load_state(state_path, &state, err));
    json_t *m = json_object_get(state, "manifest");
    json_t *step = !strcmp(id, "options") ? json_object_get(m, "options")
                                          : find_step(json_object_get(m, "steps"), id);
    json_t *v = json_object_get(step, field);
    moe_status st = MOE_OK;
    if (!v) {
        st = moe_fail(err, MOE_ERR_USAGE, "%s: %s %s has no field %s", state_path,
                      step ? "step" : "no step", id, field);
    } else if (!strcmp(field, "outputs")) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) print_value(json_object_get(e, "path"));
    } else if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (json_is_string(e))
                printf("%s%s", i ? " " : "", json_string_value(e));
            else
                printf("%s%" JSON_INTEGER_FORMAT, i ? " " : "", json_integer_value(e));
        }
        printf("\n");
    } else {
        print_value(v);
    }
    json_decref(state);
    return st;
}

/* ---- hash, unzstd --------------------------------------------------------------- */

static moe_status cmd_hash(char **files, int n, moe_err *err) {
    for (int i = 0; i < n; i++) {
        uint64_t bytes, hash;
        MOE_TRY(hash_file(files[i], &bytes, &hash, err));
        printf("%016" PRIx64 "  %" PRIu64 "  %s\n", hash, bytes, files[i]);
    }
    return MOE_OK;
}

static moe_status cmd_unzstd(const char *in, const char *out, int threads, moe_err *err) {
    moe_zstd_file *z;
    MOE_TRY(moe_zstd_open(in, &z, err));
    moe_status st = moe_zstd_decompress_to_file(z, out, threads, true, err);
    moe_zstd_close(z);
    return st;
}

/* ---- command line ------------------------------------------------------------- */

typedef struct mf_command {
    const char *name, *synopsis, *summary;
    int min_pos, max_pos;
} mf_command;

static const mf_command commands[] = {
    {"hash", "FILE...", "Prints the XXH3-64 (seed 0), size and name of each file.", 1, -1},
    {"now", "", "Prints a monotonic clock in milliseconds (for step timings).", 0, 0},
    {"unzstd", "IN.zst OUT", "Decompresses a (seekable) zstd file to OUT atomically.", 2, 2},
    {"begin", "STATE --types LIST [options]",
     "Starts a pipeline run: a fresh STATE with the tools' hashes and the options.", 1, 1},
    {"check", "STATE OLD_MANIFEST --id ID [step options]",
     "Exit 0: step ID is recorded in OLD_MANIFEST with the same tools, arguments and input\n"
     "hashes and its outputs still match; its record is copied into STATE as skipped.\n"
     "Exit 1: it must run (the reason is printed on stdout).", 2, 2},
    {"record", "STATE --id ID [step options] [facts]",
     "Records a step that ran: hashes its inputs and outputs and checks its facts\n"
     "(verification reports, smoke logits). Exit 1 if a fact fails (still recorded).", 1, 1},
    {"get", "STATE STEP FIELD",
     "Prints a field of a step recorded in STATE (STEP \"options\": of the options).", 3, 3},
    {"finish", "STATE OUT.json [--partial]",
     "Writes the manifest of the run (keys sorted); --partial: of the steps so far, with\n"
     "result \"incomplete\" unless one failed (ci/convert writes one after every step).", 2, 2},
    {"merge", "OUT.json IN.json...",
     "Merges the manifests of parallel jobs over the same input (types may differ).", 2, -1},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

typedef struct mf_opt_entry {
    const char *cmds; /* subcommands that accept the option, space-separated */
    moe_opt opt;
} mf_opt_entry;

#define SPEC "check record "
static int build_options(const char *cmd, mf_opts *o, moe_opt *out) {
    const mf_opt_entry all[] = {
        {SPEC, {.names = "id", .kind = MOE_OPT_STRING, .dest = &o->id, .arg_name = "ID",
                .help = "step id (\"quantize-q4_0\")"}},
        {SPEC, {.names = "tool", .kind = MOE_OPT_LIST, .dest = &o->tools, .arg_name = "NAME",
                .help = "a tool the step runs, as named in begin (repeatable)"}},
        {SPEC, {.names = "args", .kind = MOE_OPT_STRING, .dest = &o->args, .arg_name = "'A B'",
                .help = "the step's output-relevant arguments, space-separated"}},
        {SPEC, {.names = "type", .kind = MOE_OPT_STRING, .dest = &o->type, .arg_name = "T",
                .help = "the quantization type the step belongs to"}},
        {SPEC, {.names = "input", .kind = MOE_OPT_LIST, .dest = &o->inputs, .arg_name = "FILE",
                .help = "an input file (repeatable)"}},
        {SPEC, {.names = "inputs-from", .kind = MOE_OPT_STRING, .dest = &o->inputs_from,
                .arg_name = "STEP", .help = "also take the outputs of STEP as inputs"}},
        {SPEC, {.names = "output", .kind = MOE_OPT_LIST, .dest = &o->outputs, .arg_name = "FILE",
                .help = "an output file, relative to OUTDIR (repeatable)"}},
        {"record", {.names = "outputs-from", .kind = MOE_OPT_STRING, .dest = &o->outputs_from,
                    .arg_name = "REPORT", .help = "outputs listed in a moe-repack --json report"}},
        {"record", {.names = "plan", .kind = MOE_OPT_STRING, .dest = &o->plan, .arg_name = "JSON",
                    .help = "moe-repack --dry-run --json of the input: records its layout"}},
        {"record", {.names = "inspect-dir", .kind = MOE_OPT_STRING, .dest = &o->inspect_dir,
                    .arg_name = "DIR",
                    .help = "DIR/NAME.json holds moe-inspect --json --verify of each input"}},
        {"record", {.names = "logits", .kind = MOE_OPT_STRING, .dest = &o->logits,
                    .arg_name = "FILE", .help = "smoke-run logits to check (float32 rows)"}},
        {"record", {.names = "tokens", .kind = MOE_OPT_STRING, .dest = &o->tokens,
                    .arg_name = "'IDS'", .help = "the smoke prompt's token ids"}},
        {"record", {.names = "n-vocab", .kind = MOE_OPT_INT, .dest = &o->n_vocab,
                    .arg_name = "N", .help = "logits per row", .min = 1, .max = INT32_MAX}},
        {"record", {.names = "ms", .kind = MOE_OPT_INT, .dest = &o->ms, .arg_name = "N",
                    .help = "the step's duration (run section only)", .min = 0, .max = INT64_MAX}},
        {"record", {.names = "error", .kind = MOE_OPT_STRING, .dest = &o->error,
                    .arg_name = "MSG", .help = "the step failed with MSG"}},
        {"begin", {.names = "tool", .kind = MOE_OPT_LIST, .dest = &o->tool_paths,
                   .arg_name = "NAME=PATH", .help = "a tool to hash and record (repeatable)"}},
        {"begin", {.names = "types", .kind = MOE_OPT_STRING, .dest = &o->types,
                   .arg_name = "LIST", .help = "comma-separated quantization types"}},
        {"begin", {.names = "interleave", .kind = MOE_OPT_FLAG, .dest = &o->interleave,
                   .help = "outputs are row-interleaved"}},
        {"begin", {.names = "zstd", .kind = MOE_OPT_OPTIONAL_INT, .dest = &o->zstd,
                   .def_int = MOE_ZSTD_DEFAULT_LEVEL, .min = -7, .max = 22,
                   .help = "outputs are zstd-compressed at this level"}},
        {"begin", {.names = "shards", .kind = MOE_OPT_SIZE, .dest = &o->shards,
                   .arg_name = "SIZE", .help = "outputs are sharded at SIZE tensor bytes"}},
        {"begin", {.names = "imatrix", .kind = MOE_OPT_STRING, .dest = &o->imatrix,
                   .arg_name = "FILE", .help = "importance matrix (hashed as an input)"}},
        {"finish", {.names = "partial", .kind = MOE_OPT_FLAG, .dest = &o->partial,
                    .help = "the run is not over: result \"incomplete\" unless a step failed"}},
        {"begin unzstd", {.names = "t,threads", .kind = MOE_OPT_INT, .dest = &o->threads,
                          .arg_name = "N", .help = "threads", .min = 1, .max = 1024}},
    };
    int n = 0;
    size_t len = strlen(cmd);
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        const char *c = all[i].cmds, *hit = strstr(c, cmd);
        while (hit && ((hit != c && hit[-1] != ' ') || (hit[len] && hit[len] != ' ')))
            hit = strstr(hit + 1, cmd);
        if (hit)
            out[n++] = all[i].opt;
    }
    out[n] = (moe_opt){0};
    return n;
}

static moe_status dispatch(const mf_command *c, const mf_opts *o, char **pos, int n_pos,
                           moe_err *err) {
    const char *n = c->name;
    if (!strcmp(n, "hash"))
        return cmd_hash(pos, n_pos, err);
    if (!strcmp(n, "now"))
        return printf("%" PRId64 "\n", (int64_t)moe_now_ms()) < 0 ? MOE_ERR_IO : MOE_OK;
    if (!strcmp(n, "unzstd"))
        return cmd_unzstd(pos[0], pos[1], (int)o->threads, err);
    if (!strcmp(n, "begin"))
        return cmd_begin(o, pos[0], err);
    if (!strcmp(n, "check"))
        return cmd_check(o, pos[0], pos[1], err);
    if (!strcmp(n, "record"))
        return cmd_record(o, pos[0], err);
    if (!strcmp(n, "get"))
        return cmd_get(pos[0], pos[1], pos[2], err);
    if (!strcmp(n, "finish"))
        return cmd_finish(pos[0], pos[1], o->partial, err);
    return cmd_merge(pos[0], pos + 1, n_pos - 1, err);
}

static void print_commands(FILE *f) {
    fprintf(f, "usage: moe-manifest COMMAND [options] ARGS (moe-manifest COMMAND --help)\n\n"
               "Hashes, step records and manifests for ci/convert (see ci/README.md).\n\n"
               "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].synopsis);
}

int main(int argc, char **argv) {
    moe_log_set_prog("moe-manifest");
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        print_commands(stdout);
        return 0;
    }
    const mf_command *c = NULL;
    for (size_t i = 0; argc >= 2 && i < N_COMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name))
            c = &commands[i];
    if (!c) {
        if (argc >= 2)
            fprintf(stderr, "moe-manifest: unknown command '%s'\n", argv[1]);
        print_commands(stderr);
        return 2;
    }
    mf_opts o = {.zstd = INT64_MIN, .threads = 0};
    moe_opt opts[32];
    build_options(c->name, &o, opts);
    char prog[64];
    snprintf(prog, sizeof prog, "moe-manifest %s", c->name);
    const moe_cli cli = {.prog = prog, .synopsis = c->synopsis, .summary = c->summary,
                         .opts = opts, .min_positional = c->min_pos, .max_positional = c->max_pos,
                         .positional_name = "argument"};
    moe_err err = {0};
    int first = 0, n_pos = 0;
    bool help = false;
    moe_status st = moe_cli_parse(&cli, argc - 1, argv + 1, &first, &n_pos, &help, &err);
    if (st == MOE_OK && !help && (!strcmp(c->name, "check") || !strcmp(c->name, "record")) &&
        !o.id)
        st = moe_fail(&err, MOE_ERR_USAGE, "--id is required");
    if (st == MOE_OK && !help && !strcmp(c->name, "begin") && !o.types)
        st = moe_fail(&err, MOE_ERR_USAGE, "--types is required");
    if (st == MOE_OK && !help && !strcmp(c->name, "begin") && o.tool_paths.count == 0)
        st = moe_fail(&err, MOE_ERR_USAGE, "at least one --tool NAME=PATH is required");
    int exit_code;
    if (moe_cli_parse_done(prog, st, help, &err, &exit_code))
        return exit_code;
    moe_tempfile_install_handlers();
    st = dispatch(c, &o, argv + 1 + first, n_pos, &err);
    if (st == MOE_ERR_INTEGRITY && !strcmp(c->name, "check")) {
        moe_cli_finish(prog, MOE_OK, &err); /* flushes "must run", whose reason is on stdout */
        return 1;
    }
    return moe_cli_finish(prog, st, &err);
}
