/* moe-inspect: print a GGUF file's header, metadata, tensor table and totals,
 * optionally verify per-tensor checksums; --json for machines. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base/cli.h"
#include "formats/gguf/cursor.h"
#include "formats/gguf/gguf.h"

enum { ARRAY_PREVIEW = 8 };

typedef struct inspect_opts {
    bool json, verify, no_mmap, full_arrays;
} inspect_opts;

/* ---- text output ------------------------------------------------------------- */

static void print_escaped(FILE *f, const char *s, uint64_t len, bool json) {
    for (uint64_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", f);
        else if (ch == '\t')
            fputs("\\t", f);
        else if (ch < 0x20 || ch == 0x7f)
            fprintf(f, json ? "\\u%04x" : "\\x%02x", ch);
        else
            fputc(ch, f);
    }
}

/* hex: a checksum, printed in JSON as a fixed-width hex string (a number above
 * 2^53 reads back rounded in JavaScript). */
static void print_scalar(FILE *f, moe_gguf_vtype t, const uint8_t *raw, bool json, bool hex) {
    moe_gguf_kv tmp = {.key = "", .type = t, .raw = (uint8_t *)raw, .count = 1};
    int64_t i;
    double d;
    if (hex && t == MOE_GGUF_U64)
        fprintf(f, json ? "\"%016" PRIx64 "\"" : "%016" PRIx64, moe_load_le64(raw));
    else if (t == MOE_GGUF_BOOL)
        fputs(raw[0] ? "true" : "false", f);
    else if (moe_gguf_kv_int(&tmp, &i, NULL) == MOE_OK)
        fprintf(f, "%" PRId64, i);
    else if (t == MOE_GGUF_U64) /* above INT64_MAX: JSON readers cannot hold it as a number */
        fprintf(f, json ? "\"%" PRIu64 "\"" : "%" PRIu64, moe_load_le64(raw));
    else if (moe_gguf_kv_float(&tmp, &d, NULL) == MOE_OK)
        fprintf(f, json && !(d == d && d - d == 0) ? "null" : "%.9g", d);
}

static void print_value(FILE *f, const moe_gguf_kv *kv, bool json, bool full) {
    bool hex = !strcmp(kv->key, MOE_GGUF_XXH3_KEY);
    if (kv->type == MOE_GGUF_STRING) {
        fputc('"', f);
        print_escaped(f, kv->str, kv->raw_len - 8, json); /* may hold NUL bytes */
        fputc('"', f);
        return;
    }
    if (kv->type != MOE_GGUF_ARRAY) {
        print_scalar(f, kv->type, kv->raw, json, hex);
        return;
    }
    uint64_t shown = full || kv->count <= ARRAY_PREVIEW ? kv->count : ARRAY_PREVIEW;
    fputc('[', f);
    for (uint64_t i = 0; i < shown; i++) {
        if (i)
            fputs(", ", f);
        if (kv->elem_type == MOE_GGUF_STRING) {
            const char *s;
            uint64_t len;
            moe_gguf_arr_str(kv, i, &s, &len, NULL);
            fputc('"', f);
            print_escaped(f, s, len, json);
            fputc('"', f);
        } else {
            print_scalar(f, kv->elem_type, kv->raw + 12 + i * moe_gguf_vtype_size(kv->elem_type),
                         json, hex);
        }
    }
    if (shown < kv->count && !json)
        fprintf(f, ", ... (%" PRIu64 " total)", kv->count);
    fputc(']', f);
}

static void format_shape(char *buf, size_t n, const moe_gguf_tensor *t) {
    int k = snprintf(buf, n, "[");
    for (uint32_t d = 0; d < t->n_dims && k > 0 && (size_t)k < n; d++)
        k += snprintf(buf + k, n - (size_t)k, "%s%" PRId64, d ? ", " : "", t->ne[d]);
    if (k > 0 && (size_t)k < n)
        snprintf(buf + k, n - (size_t)k, "]");
}

typedef struct type_total {
    uint64_t tensors, bytes, elements;
} type_total;

static void compute_totals(const moe_gguf *g, type_total *totals) {
    memset(totals, 0, MOE_TYPE_ID_LIMIT * sizeof *totals);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const moe_gguf_tensor *t = &g->tensors[i];
        type_total *tt = &totals[t->type];
        tt->tensors++;
        tt->bytes += t->nbytes;
        tt->elements += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    }
}

static void print_text(const moe_gguf_file *file, const moe_gguf_verify_result *vr,
                       const inspect_opts *o) {
    const moe_gguf *g = file->g;
    printf("file: %s\n", file->path);
    printf("size: %" PRIu64 " bytes, GGUF v%u, alignment %u, data offset %" PRIu64 "\n",
           g->file_size, g->version, g->alignment, g->data_offset);
    printf("\nmetadata: %" PRIu64 " keys\n", g->n_kv);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const moe_gguf_kv *kv = &g->kv[i];
        char type[32];
        if (kv->type == MOE_GGUF_ARRAY)
            snprintf(type, sizeof type, "arr[%s,%" PRIu64 "]", moe_gguf_vtype_name(kv->elem_type),
                     kv->count);
        else
            snprintf(type, sizeof type, "%s", moe_gguf_vtype_name(kv->type));
        printf("  %-40s %-16s = ", kv->key, type);
        print_value(stdout, kv, false, o->full_arrays);
        putchar('\n');
    }
    printf("\ntensors: %" PRIu64 "\n", g->n_tensors);
    printf("  %5s  %-40s %-9s %-24s %12s %12s%s\n", "#", "name", "type", "shape (ne)", "bytes",
           "offset", vr ? "  xxh3" : "");
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const moe_gguf_tensor *t = &g->tensors[i];
        char shape[96];
        format_shape(shape, sizeof shape, t);
        printf("  %5" PRIu64 "  %-40s %-9s %-24s %12" PRIu64 " %12" PRIu64, i, t->name,
               moe_type_name(t->type), shape, t->nbytes, g->data_offset + t->offset);
        if (vr && vr->computed)
            printf("  %016" PRIx64, vr->computed[i]);
        putchar('\n');
    }
    type_total totals[MOE_TYPE_ID_LIMIT];
    compute_totals(g, totals);
    printf("\ntotals per type:\n");
    uint64_t all_bytes = 0, all_elems = 0;
    for (int t = 0; t < MOE_TYPE_ID_LIMIT; t++) {
        if (!totals[t].tensors)
            continue;
        printf("  %-10s %6" PRIu64 " tensors %14" PRIu64 " bytes %14" PRIu64 " values\n",
               moe_type_name(t), totals[t].tensors, totals[t].bytes, totals[t].elements);
        all_bytes += totals[t].bytes;
        all_elems += totals[t].elements;
    }
    printf("  %-10s %6" PRIu64 " tensors %14" PRIu64 " bytes %14" PRIu64 " values (%.3f bpw)\n",
           "all", g->n_tensors, all_bytes, all_elems,
           all_elems ? 8.0 * (double)all_bytes / (double)all_elems : 0.0);
    if (vr) {
        if (vr->had_checksums)
            printf("\nverify: %" PRIu64 "/%" PRIu64 " tensors match their stored XXH3-64\n",
                   vr->n_checked - vr->n_mismatch, vr->n_checked);
        else
            printf("\nverify: no stored checksums (%s); XXH3-64 computed for %" PRIu64
                   " tensors\n",
                   MOE_GGUF_XXH3_KEY, vr->n_checked);
    }
}

/* ---- JSON output -------------------------------------------------------------------- */

static void print_json(const moe_gguf_file *file, const moe_gguf_verify_result *vr,
                       const inspect_opts *o) {
    const moe_gguf *g = file->g;
    printf("{\n  \"file\": \"");
    print_escaped(stdout, file->path, strlen(file->path), true);
    printf("\",\n  \"size\": %" PRIu64 ",\n  \"version\": %u,\n  \"alignment\": %u,\n"
           "  \"data_offset\": %" PRIu64 ",\n  \"metadata\": [",
           g->file_size, g->version, g->alignment, g->data_offset);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const moe_gguf_kv *kv = &g->kv[i];
        printf("%s\n    {\"key\": \"", i ? "," : "");
        print_escaped(stdout, kv->key, strlen(kv->key), true);
        printf("\", \"type\": \"%s\"", moe_gguf_vtype_name(kv->type));
        if (kv->type == MOE_GGUF_ARRAY)
            printf(", \"elem_type\": \"%s\", \"count\": %" PRIu64,
                   moe_gguf_vtype_name(kv->elem_type), kv->count);
        printf(", \"value\": ");
        print_value(stdout, kv, true, o->full_arrays);
        putchar('}');
    }
    printf("\n  ],\n  \"tensors\": [");
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const moe_gguf_tensor *t = &g->tensors[i];
        printf("%s\n    {\"name\": \"", i ? "," : "");
        print_escaped(stdout, t->name, strlen(t->name), true);
        printf("\", \"type\": \"%s\", \"type_id\": %d, \"shape\": [", moe_type_name(t->type),
               (int)t->type);
        for (uint32_t d = 0; d < t->n_dims; d++)
            printf("%s%" PRId64, d ? ", " : "", t->ne[d]);
        printf("], \"bytes\": %" PRIu64 ", \"offset\": %" PRIu64, t->nbytes,
               g->data_offset + t->offset);
        if (vr && vr->computed)
            printf(", \"xxh3\": \"%016" PRIx64 "\"", vr->computed[i]);
        putchar('}');
    }
    printf("\n  ],\n  \"totals\": [");
    type_total totals[MOE_TYPE_ID_LIMIT];
    compute_totals(g, totals);
    bool first = true;
    for (int t = 0; t < MOE_TYPE_ID_LIMIT; t++) {
        if (!totals[t].tensors)
            continue;
        printf("%s\n    {\"type\": \"%s\", \"tensors\": %" PRIu64 ", \"bytes\": %" PRIu64
               ", \"values\": %" PRIu64 "}",
               first ? "" : ",", moe_type_name(t), totals[t].tensors, totals[t].bytes,
               totals[t].elements);
        first = false;
    }
    printf("\n  ]");
    if (vr)
        printf(",\n  \"verify\": {\"stored\": %s, \"checked\": %" PRIu64
               ", \"mismatched\": %" PRIu64 ", \"ok\": %s}",
               vr->had_checksums ? "true" : "false", vr->n_checked, vr->n_mismatch,
               vr->n_mismatch ? "false" : "true");
    printf("\n}\n");
}

int main(int argc, char **argv) {
    inspect_opts o = {0};
    static const char summary[] =
        "Prints a GGUF file's header, every metadata key (long arrays abbreviated), a tensor\n"
        "table (name, type, shape in ne order, bytes, absolute offset) and totals per type.\n"
        "Exits 1 with a message naming what is wrong on a malformed file.";
    const moe_opt opts[] = {
        {.names = "json", .kind = MOE_OPT_FLAG, .dest = &o.json, .help = "machine-readable output"},
        {.names = "verify", .kind = MOE_OPT_FLAG, .dest = &o.verify,
         .help = "hash every tensor (XXH3-64); check stored checksums if the file has them"},
        {.names = "no-mmap", .kind = MOE_OPT_FLAG, .dest = &o.no_mmap,
         .help = "read with read() instead of mapping the file"},
        {.names = "full-arrays", .kind = MOE_OPT_FLAG, .dest = &o.full_arrays,
         .help = "print every element of array values"},
        {0},
    };
    const moe_cli cli = {.prog = "moe-inspect", .synopsis = "[options] FILE.gguf",
                         .summary = summary, .opts = opts, .min_positional = 1,
                         .max_positional = 1};
    moe_err err = {0};
    int first = 0, n_pos = 0;
    bool help = false;
    moe_status st = moe_cli_parse(&cli, argc, argv, &first, &n_pos, &help, &err);
    int exit_code;
    if (moe_cli_parse_done("moe-inspect", st, help, &err, &exit_code))
        return exit_code;
    moe_gguf_file *file = NULL;
    st = moe_gguf_file_open(argv[first], !o.no_mmap, &file, &err);
    if (st != MOE_OK) {
        fprintf(stderr, "moe-inspect: %s\n", err.msg);
        return moe_status_exit_code(st);
    }
    moe_gguf_verify_result vr = {0};
    moe_status vst = MOE_OK;
    moe_err verr = {0};
    if (o.verify) {
        vst = moe_gguf_file_verify(file, true, &vr, &verr);
        if (vst != MOE_OK && vst != MOE_ERR_INTEGRITY) {
            fprintf(stderr, "moe-inspect: %s\n", verr.msg);
            moe_gguf_file_close(file);
            return moe_status_exit_code(vst);
        }
    }
    if (o.json)
        print_json(file, o.verify ? &vr : NULL, &o);
    else
        print_text(file, o.verify ? &vr : NULL, &o);
    free(vr.computed);
    moe_gguf_file_close(file);
    return moe_cli_finish("moe-inspect", vst, &verr);
}
