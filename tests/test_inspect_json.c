/* moe-inspect --json on every conformance model: valid JSON (read back with
 * jansson) whose tensor table — names, types, shapes in ne order, bytes,
 * absolute offsets — matches what the reader parsed, plus totals per type. */
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "formats/gguf/gguf.h"
#include "test_util.h"

static void check_model(const char *bin, const char *path) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s/moe-inspect' --json --verify '%s'", bin, path);
    FILE *p = popen(cmd, "r");
    json_error_t jerr;
    json_t *root = p ? json_loadf(p, 0, &jerr) : NULL;
    int rc = p ? pclose(p) : -1;
    CHECK(rc == 0 && root, "%s: exit %d, %s", path, rc, root ? "json ok" : jerr.text);
    moe_err err = {0};
    moe_gguf_file *f = NULL;
    CHECK(moe_gguf_file_open(path, true, &f, &err) == MOE_OK, "%s", err.msg);
    if (!root || !f) {
        json_decref(root);
        moe_gguf_file_close(f);
        return;
    }
    json_t *tensors = json_object_get(root, "tensors");
    CHECK(json_array_size(tensors) == f->g->n_tensors, "%s: tensor count", path);
    for (size_t i = 0; i < json_array_size(tensors) && i < f->g->n_tensors; i++) {
        const moe_gguf_tensor *t = &f->g->tensors[i];
        json_t *jt = json_array_get(tensors, i);
        json_t *shape = json_object_get(jt, "shape");
        bool same_shape = json_array_size(shape) == t->n_dims;
        for (size_t d = 0; same_shape && d < t->n_dims; d++)
            same_shape = json_integer_value(json_array_get(shape, d)) == t->ne[d];
        CHECK(!strcmp(json_string_value(json_object_get(jt, "name")), t->name) &&
                  !strcmp(json_string_value(json_object_get(jt, "type")), moe_type_name(t->type)) &&
                  same_shape &&
                  (uint64_t)json_integer_value(json_object_get(jt, "bytes")) == t->nbytes &&
                  (uint64_t)json_integer_value(json_object_get(jt, "offset")) ==
                      f->g->data_offset + t->offset &&
                  strlen(json_string_value(json_object_get(jt, "xxh3"))) == 16,
              "%s: tensor %zu (%s) row", path, i, t->name);
    }
    json_t *kv = json_object_get(root, "metadata");
    CHECK(json_array_size(kv) == f->g->n_kv, "%s: key count", path);
    uint64_t total = 0;
    size_t k;
    json_t *row;
    json_array_foreach(json_object_get(root, "totals"), k, row)
        total += (uint64_t)json_integer_value(json_object_get(row, "tensors"));
    CHECK(total == f->g->n_tensors, "%s: totals per type add up", path);
    json_decref(root);
    moe_gguf_file_close(f);
}

int main(void) {
    const char *dir = test_conformance_dir();
    const char *bin = getenv("MOE_BIN_DIR");
    if (!bin)
        return 77;
    char models[1024];
    snprintf(models, sizeof models, "%s/models", dir);
    DIR *d = opendir(models);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 5, ".gguf"))
            continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", models, e->d_name);
        check_model(bin, path);
        n++;
    }
    if (d)
        closedir(d);
    CHECK(n >= 20, "all %d conformance models inspected", n);
    TEST_DONE();
}
