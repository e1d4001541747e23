/* gguf_compare — test helper: compares the tensors of two GGUF files by name.
 *
 *   gguf_compare [--order] [--subset] A.gguf B.gguf
 *
 * Every tensor of A must exist in B with the same type, shape and bytes (and,
 * with --order, at the same position). Without --subset B may not have extra
 * tensors. Prints each difference (first differing byte offset included) and
 * "N passed, N failed"; exits 0 when equal, 1 otherwise, 2 on usage errors. */
#include <stdio.h>
#include <string.h>

#include "formats/gguf/gguf.h"

int main(int argc, char **argv) {
    bool order = false, subset = false;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--order"))
            order = true;
        else if (!strcmp(argv[i], "--subset"))
            subset = true;
        else
            break;
    }
    if (argc - i != 2) {
        fprintf(stderr, "usage: gguf_compare [--order] [--subset] A.gguf B.gguf\n");
        return 2;
    }
    moe_err err = {0};
    moe_gguf_file *a = NULL, *b = NULL;
    if (moe_gguf_file_open(argv[i], true, &a, &err) != MOE_OK ||
        moe_gguf_file_open(argv[i + 1], true, &b, &err) != MOE_OK) {
        fprintf(stderr, "gguf_compare: %s\n", err.msg);
        moe_gguf_file_close(a);
        return 2;
    }
    int same = 0, diff = 0;
    for (uint64_t k = 0; k < a->g->n_tensors; k++) {
        const moe_gguf_tensor *ta = &a->g->tensors[k];
        int64_t j = moe_gguf_find_tensor(b->g, ta->name);
        const moe_gguf_tensor *tb = j >= 0 ? &b->g->tensors[j] : NULL;
        const char *why = NULL;
        uint64_t at = 0;
        if (!tb)
            why = "missing";
        else if (order && (uint64_t)j != k)
            why = "at another position";
        else if (ta->type != tb->type)
            why = "type differs";
        else if (memcmp(ta->ne, tb->ne, sizeof ta->ne))
            why = "shape differs";
        else {
            const uint8_t *pa = moe_gguf_file_tensor_data(a, k);
            const uint8_t *pb = moe_gguf_file_tensor_data(b, (uint64_t)j);
            for (at = 0; at < ta->nbytes && pa[at] == pb[at]; at++)
                ;
            if (at < ta->nbytes)
                why = "bytes differ";
        }
        if (why) {
            diff++;
            printf("%s: %s (%s vs %s, first difference at byte %llu)\n", ta->name, why,
                   moe_type_name(ta->type), tb ? moe_type_name(tb->type) : "-",
                   (unsigned long long)at);
        } else {
            same++;
        }
    }
    if (!subset && b->g->n_tensors != a->g->n_tensors) {
        diff++;
        printf("tensor counts differ: %llu vs %llu\n", (unsigned long long)a->g->n_tensors,
               (unsigned long long)b->g->n_tensors);
    }
    printf("%d passed, %d failed\n", same, diff);
    moe_gguf_file_close(a);
    moe_gguf_file_close(b);
    return diff ? 1 : 0;
}
