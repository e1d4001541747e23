/* manifest_check: reads ci/convert manifests back with jansson for
 * tests/test_pipeline.sh, and checks them against the files themselves with
 * hashes computed here (whole files, and every tensor through our own GGUF
 * parser, .gguf.zst decompressed in memory), independent of moe-manifest.
 *
 *   manifest_check valid M.json OUTDIR BIN_DIR CONVERT SRC TYPES ZSTD
 *       every field of the schema (ci/README.md) present and true; ZSTD is
 *       "null" or the level; exit 0 if all holds
 *   manifest_check same A.json B.json
 *       the deterministic parts are equal and both files are canonical, so
 *       the files differ at most inside "run"
 *   manifest_check status M.json
 *       prints "ID=STATUS/RESULT" for each step, space-separated
 *   manifest_check get M.json PATH
 *       prints the value at PATH, e.g. manifest.steps.smoke-q4_0.error:
 *       dot-separated keys, array indices, or the array element whose "id",
 *       "role" or "path" is the segment (strings raw, the rest as JSON)
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "formats/gguf/gguf.h"
#include "formats/quant/types.h"
#include "formats/gguf/zstd_seekable.h"
#include "test_util.h"

#define CANON_FLAGS (JSON_INDENT(2) | JSON_SORT_KEYS)

/* The plain GGUF bytes of path (decompressed if it is zstd). */
static uint8_t *plain_bytes(const char *path, size_t *len) {
    if (!moe_zstd_path_is_zstd(path))
        return test_read_file(path, len);
    moe_zstd_file *z;
    moe_err err = {0};
    if (moe_zstd_open(path, &z, &err) != MOE_OK)
        return NULL;
    *len = (size_t)moe_zstd_size(z);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf && moe_zstd_decompress_all(z, buf, *len, 1, &err) != MOE_OK) {
        free(buf);
        buf = NULL;
    }
    moe_zstd_close(z);
    return buf;
}

static const char *str(const json_t *v) {
    return json_is_string(v) ? json_string_value(v) : "";
}

static bool is_hex16(const json_t *v) {
    const char *s = json_string_value(v);
    if (!s || strlen(s) != 16)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

static bool hex_is(const json_t *v, uint64_t h) {
    char buf[17];
    snprintf(buf, sizeof buf, "%016" PRIx64, h);
    return json_is_string(v) && !strcmp(json_string_value(v), buf);
}

/* bytes + xxh3 of entry e match the file at path (whole-file XXH3-64). */
static void check_file(const json_t *e, const char *path, const char *what) {
    size_t len;
    uint8_t *b = test_read_file(path, &len);
    CHECK(b != NULL, "%s: cannot read %s", what, path);
    if (!b)
        return;
    CHECK(json_integer_value(json_object_get(e, "bytes")) == (json_int_t)len,
          "%s: bytes of %s", what, path);
    CHECK(hex_is(json_object_get(e, "xxh3"), XXH3_64bits(b, len)), "%s: xxh3 of %s", what, path);
    free(b);
}

/* The entry's tensor list equals the file's tensors: name, type, shape,
 * bytes and the XXH3 of each tensor's bytes. */
static void check_tensors(const json_t *e, const char *path, const char *what) {
    size_t len;
    uint8_t *b = plain_bytes(path, &len);
    moe_gguf *g = NULL;
    moe_err err = {0};
    CHECK(b && moe_gguf_parse(b, len, len, &g, &err) == MOE_OK, "%s: %s does not parse: %s", what,
          path, err.msg);
    const json_t *ts = json_object_get(e, "tensors");
    CHECK(g && json_array_size(ts) == g->n_tensors, "%s: tensor count of %s", what, path);
    for (uint64_t i = 0; g && i < g->n_tensors && i < json_array_size(ts); i++) {
        const moe_gguf_tensor *t = &g->tensors[i];
        const json_t *jt = json_array_get(ts, i), *shape = json_object_get(jt, "shape");
        bool ok = json_is_string(json_object_get(jt, "name")) &&
                  !strcmp(json_string_value(json_object_get(jt, "name")), t->name) &&
                  json_is_string(json_object_get(jt, "type")) &&
                  !strcmp(json_string_value(json_object_get(jt, "type")), moe_type_name(t->type)) &&
                  json_integer_value(json_object_get(jt, "bytes")) == (json_int_t)t->nbytes &&
                  json_array_size(shape) == t->n_dims && json_object_size(jt) == 5;
        for (uint32_t d = 0; ok && d < t->n_dims; d++)
            ok = json_integer_value(json_array_get(shape, d)) == t->ne[d];
        ok = ok && hex_is(json_object_get(jt, "xxh3"),
                          XXH3_64bits(b + g->data_offset + t->offset, (size_t)t->nbytes));
        CHECK(ok, "%s: tensor %" PRIu64 " (%s) of %s", what, i, t->name, path);
    }
    moe_gguf_free(g);
    free(b);
}

static void check_tools(const json_t *tools, const char *bin, const char *convert) {
    static const char *const names[] = {"moe-inspect", "moe-repack", "moe-quantize", "moe-run",
                                        "moe-manifest"};
    CHECK(json_object_size(tools) == 6, "6 tools recorded, got %zu", json_object_size(tools));
    char path[4096];
    for (size_t i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "%s/%s", bin, names[i]);
        check_file(json_object_get(tools, names[i]), path, names[i]);
    }
    check_file(json_object_get(tools, "ci/convert"), convert, "ci/convert");
}

static void check_options(const json_t *o, const char *types, const char *zstd) {
    char buf[256];
    size_t n = 0, i;
    json_t *t;
    json_array_foreach(json_object_get(o, "types"), i, t)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%s", i ? "," : "", json_string_value(t));
    CHECK(n && !strcmp(buf, types), "options.types %s, expected %s", n ? buf : "-", types);
    CHECK(json_is_false(json_object_get(o, "interleave")), "options.interleave");
    CHECK(json_is_null(json_object_get(o, "shards")), "options.shards");
    CHECK(json_is_null(json_object_get(o, "imatrix")), "options.imatrix");
    const json_t *z = json_object_get(o, "zstd");
    CHECK(!strcmp(zstd, "null") ? json_is_null(z) : json_integer_value(z) == atoi(zstd),
          "options.zstd");
    CHECK(json_object_size(o) == 5, "5 options");
}

/* Each step: id, tools, args, inputs {path, xxh3}, outputs {path, bytes,
 * xxh3} matching the files, result ok, and its kind's facts. */
static void check_steps(const json_t *steps, const char *outdir, const char *types, bool packaged) {
    char want[1024] = "inspect", ids[1024] = "", tl[256], path[4096];
    snprintf(tl, sizeof tl, "%s", types);
    for (char *t = strtok(tl, ","); t; t = strtok(NULL, ","))
        snprintf(want + strlen(want), sizeof want - strlen(want),
                 packaged ? " quantize-%s package-%s verify-%s smoke-%s"
                          : " quantize-%s verify-%s smoke-%s%s",
                 t, t, t, packaged ? t : "");
    size_t i, j;
    json_t *s, *e;
    json_array_foreach(steps, i, s) {
        const char *id = json_string_value(json_object_get(s, "id"));
        snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%s", i ? " " : "", id ? id : "?");
        CHECK(json_is_string(json_object_get(s, "result")) &&
                  !strcmp(json_string_value(json_object_get(s, "result")), "ok"),
              "step %s result", id);
        CHECK(json_array_size(json_object_get(s, "tools")) >= 1, "step %s tools", id);
        CHECK(json_is_array(json_object_get(s, "args")), "step %s args", id);
        CHECK(json_array_size(json_object_get(s, "inputs")) >= 1, "step %s inputs", id);
        json_array_foreach(json_object_get(s, "inputs"), j, e)
            CHECK(json_is_string(json_object_get(e, "path")) && is_hex16(json_object_get(e, "xxh3")),
                  "step %s input %zu", id, j);
        json_array_foreach(json_object_get(s, "outputs"), j, e) {
            snprintf(path, sizeof path, "%s/%s", outdir, json_string_value(json_object_get(e, "path")));
            check_file(e, path, id);
        }
        if (id && !strcmp(id, "inspect")) {
            CHECK(!strcmp(json_string_value(json_object_get(s, "layout")), "split"), "layout");
            CHECK(json_integer_value(json_object_get(s, "n_vocab")) == 512, "n_vocab");
            CHECK(json_array_size(json_object_get(s, "smoke_tokens")) == 4, "smoke tokens");
        }
        if (id && !strncmp(id, "verify-", 7)) {
            json_t *f = json_array_get(json_object_get(s, "files"), 0);
            CHECK(json_is_true(json_object_get(f, "ok")) && json_is_true(json_object_get(f, "stored")) &&
                      json_integer_value(json_object_get(f, "checked")) == 23 &&
                      json_integer_value(json_object_get(f, "mismatched")) == 0,
                  "%s: checksums stored and verified", id);
        }
        if (id && !strncmp(id, "smoke-", 6)) {
            json_t *sm = json_object_get(s, "smoke");
            CHECK(json_is_true(json_object_get(sm, "finite")) &&
                      json_integer_value(json_object_get(sm, "rows")) == 4 &&
                      json_integer_value(json_object_get(sm, "n_vocab")) == 512,
                  "%s: finite logits, 4 rows of 512", id);
        }
    }
    CHECK(!strcmp(ids, want), "steps '%s', expected '%s'", ids, want);
}

static void check_run(const json_t *run, const json_t *steps) {
    CHECK(json_is_integer(json_object_get(run, "threads")), "run.threads");
    CHECK(json_integer_value(json_object_get(run, "total_ms")) >= 0 &&
              json_is_integer(json_object_get(run, "total_ms")), "run.total_ms");
    const json_t *rs = json_object_get(run, "steps");
    CHECK(json_array_size(rs) == json_array_size(steps), "a run entry per step");
    size_t i;
    json_t *r;
    json_array_foreach(rs, i, r) {
        const char *st = json_string_value(json_object_get(r, "status"));
        CHECK(json_equal(json_object_get(r, "id"), json_object_get(json_array_get(steps, i), "id")),
              "run step %zu id", i);
        CHECK(st && (!strcmp(st, "done") || !strcmp(st, "skipped")), "run step %zu status", i);
        CHECK(json_is_integer(json_object_get(r, "ms")) &&
                  json_integer_value(json_object_get(r, "ms")) >= 0, "run step %zu ms", i);
    }
}

/* The file is exactly jansson's canonical dump of its content plus "\n". */
static json_t *load_canonical(const char *path) {
    size_t len;
    char *text = test_read_file(path, &len);
    json_error_t jerr;
    json_t *root = text ? json_loadb(text, len, 0, &jerr) : NULL;
    CHECK(root != NULL, "%s: not JSON: %s", path, text ? jerr.text : "unreadable");
    char *canon = root ? json_dumps(root, CANON_FLAGS) : NULL;
    CHECK(canon && strlen(canon) + 1 == len && !memcmp(canon, text, len - 1) && text[len - 1] == '\n',
          "%s: not in canonical form (sorted keys, indent 2)", path);
    free(canon);
    free(text);
    return root;
}

static int cmd_valid(char **a) {
    const char *mpath = a[0], *outdir = a[1], *bin = a[2], *convert = a[3], *src = a[4],
               *types = a[5], *zstd = a[6];
    json_t *root = load_canonical(mpath);
    if (!root)
        TEST_DONE();
    const json_t *m = json_object_get(root, "manifest");
    CHECK(json_object_size(root) == 3, "top level: schema, manifest, run");
    CHECK(!strcmp(str(json_object_get(root, "schema")), "moe-convert-manifest/1"),
          "schema");
    CHECK(!strcmp(str(json_object_get(m, "result")), "ok"), "result ok");
    check_tools(json_object_get(m, "tools"), bin, convert);
    check_options(json_object_get(m, "options"), types, zstd);
    const json_t *in = json_array_get(json_object_get(m, "inputs"), 0);
    const char *base = strrchr(src, '/') ? strrchr(src, '/') + 1 : src;
    CHECK(json_array_size(json_object_get(m, "inputs")) == 1, "one input");
    CHECK(!strcmp(str(json_object_get(in, "path")), base), "input path");
    CHECK(!strcmp(str(json_object_get(in, "role")), "model"), "input role");
    check_file(in, src, "input");
    check_tensors(in, src, "input");
    size_t i;
    json_t *o;
    char tl[256], path[4096];
    snprintf(tl, sizeof tl, "%s", types);
    char *t = strtok(tl, ",");
    CHECK(json_array_size(json_object_get(m, "outputs")) > 0, "outputs");
    json_array_foreach(json_object_get(m, "outputs"), i, o) {
        CHECK(t && !strcmp(str(json_object_get(o, "type")), t), "output %zu type", i);
        snprintf(path, sizeof path, "%s/%s", outdir, json_string_value(json_object_get(o, "path")));
        check_file(o, path, "output");
        check_tensors(o, path, "output");
        t = strtok(NULL, ",");
    }
    CHECK(t == NULL, "an output per type");
    check_steps(json_object_get(m, "steps"), outdir, types, strcmp(zstd, "null") != 0);
    check_run(json_object_get(root, "run"), json_object_get(m, "steps"));
    json_decref(root);
    TEST_DONE();
}

static int cmd_same(const char *a, const char *b) {
    json_t *ja = load_canonical(a), *jb = load_canonical(b);
    if (ja && jb) {
        CHECK(json_equal(json_object_get(ja, "manifest"), json_object_get(jb, "manifest")),
              "%s and %s: deterministic parts differ", a, b);
        json_object_set_new(ja, "run", json_null());
        json_object_set_new(jb, "run", json_null());
        char *da = json_dumps(ja, CANON_FLAGS), *db = json_dumps(jb, CANON_FLAGS);
        CHECK(da && db && !strcmp(da, db), "the files differ outside \"run\"");
        free(da);
        free(db);
    }
    json_decref(ja);
    json_decref(jb);
    TEST_DONE();
}

static int cmd_status(const char *path) {
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        return 1;
    const json_t *steps = json_object_get(json_object_get(root, "manifest"), "steps");
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(json_object_get(root, "run"), "steps"), i, r)
        printf("%s%s=%s/%s", i ? " " : "", json_string_value(json_object_get(r, "id")),
               json_string_value(json_object_get(r, "status")),
               json_string_value(json_object_get(json_array_get(steps, i), "result")));
    printf("\n");
    json_decref(root);
    return 0;
}

/* Walks a dot-separated path: object keys, array indices, or for arrays of
 * objects the element whose "id", "role" or "path" equals the segment. */
static const json_t *walk(const json_t *v, char *path) {
    for (char *seg = strtok(path, "."); v && seg; seg = strtok(NULL, ".")) {
        if (json_is_object(v)) {
            v = json_object_get(v, seg);
            continue;
        }
        const json_t *hit = NULL, *e;
        size_t i;
        char *end;
        unsigned long k = strtoul(seg, &end, 10);
        if (*seg && !*end) {
            hit = json_array_get(v, k);
        } else {
            json_array_foreach(v, i, e) {
                static const char *const keys[] = {"id", "role", "path"};
                for (size_t j = 0; j < 3 && !hit; j++)
                    if (!strcmp(str(json_object_get(e, keys[j])), seg))
                        hit = e;
            }
        }
        v = hit;
    }
    return v;
}

static int cmd_get(const char *path, char *field) {
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    const json_t *v = walk(root, field);
    if (json_is_string(v)) {
        printf("%s\n", json_string_value(v));
    } else if (v) {
        char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        printf("%s\n", d ? d : "");
        free(d);
    }
    json_decref(root);
    return v ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc == 9 && !strcmp(argv[1], "valid"))
        return cmd_valid(argv + 2);
    if (argc == 4 && !strcmp(argv[1], "same"))
        return cmd_same(argv[2], argv[3]);
    if (argc == 3 && !strcmp(argv[1], "status"))
        return cmd_status(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "get"))
        return cmd_get(argv[2], argv[3]);
    fprintf(stderr, "usage: manifest_check valid|same|status|get ... (see the source)\n");
    return 2;
}
