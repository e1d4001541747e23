/* moe-quantize --stats on the conformance F32 model: each type's error against
 * its source lies in the band its bits per weight allow, and more bits always
 * give less error. The report is read back as JSON (jansson). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

typedef struct band {
    const char *type;
    double max_rel; /* uniform-quantizer estimate for Gaussian weights x ~1.2 */
} band;

static const band bands[] = {
    {"q8_0", 0.0065}, {"q6_K", 0.022}, {"q5_0", 0.049}, {"q5_1", 0.045}, {"q5_K", 0.045},
    {"q4_0", 0.098},  {"q4_1", 0.092}, {"q4_K", 0.092}, {"iq4_nl", 0.098}, {"iq4_xs", 0.098},
    {"q3_K", 0.175},  {"q2_K", 0.40},
};
#define N_BANDS (sizeof bands / sizeof bands[0])

/* Mean relative rms error over the converted tensors, or -1 on failure. */
static double run_type(const char *bin, const char *model, const char *type, const char *tmp) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s/moe-quantize' --force --pure --stats --json --type %s '%s' '%s/%s.gguf'",
             bin, type, model, tmp, type);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    json_error_t jerr;
    json_t *root = json_loadf(p, 0, &jerr);
    int rc = pclose(p);
    CHECK(rc == 0 && root, "%s: exit %d, json: %s", type, rc, root ? "ok" : jerr.text);
    if (!root)
        return -1;
    double sum = 0;
    int n = 0;
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(root, "tensors"), i, t) {
        json_t *e = json_object_get(t, "rms_error"), *s = json_object_get(t, "rms_source");
        if (!e || !s)
            continue;
        const char *to = json_string_value(json_object_get(t, "to"));
        CHECK(to && !strcmp(to, type), "%s: converted tensor has type %s", type, to ? to : "?");
        sum += json_number_value(e) / json_number_value(s);
        n++;
    }
    CHECK(n == 16, "%s: 16 tensors converted, got %d", type, n);
    json_decref(root);
    return n ? sum / n : -1;
}

int main(void) {
    const char *dir = test_conformance_dir();
    const char *bin = getenv("MOE_BIN_DIR");
    if (!bin)
        return 77;
    char model[1024], tmp[] = "/tmp/moe-test-qstats-XXXXXX";
    snprintf(model, sizeof model, "%s/models/tiny-llama.gguf", dir);
    if (!mkdtemp(tmp))
        return 1;
    double err[N_BANDS];
    for (size_t i = 0; i < N_BANDS; i++) {
        err[i] = run_type(bin, model, bands[i].type, tmp);
        printf("%-8s relative rms error %.5f (band < %.4f)\n", bands[i].type, err[i],
               bands[i].max_rel);
        CHECK(err[i] > 0 && err[i] < bands[i].max_rel, "%s error %.5f outside (0, %.4f)",
              bands[i].type, err[i], bands[i].max_rel);
    }
    /* more bits, less error: q8_0 < q6_K < q5_K < q4_K < q3_K < q2_K; q8_0 far below q4_0 */
    const int chain[] = {0, 1, 4, 7, 10, 11};
    for (size_t k = 1; k < sizeof chain / sizeof chain[0]; k++)
        CHECK(err[chain[k - 1]] < err[chain[k]], "%s < %s", bands[chain[k - 1]].type,
              bands[chain[k]].type);
    CHECK(err[0] * 10 < err[5], "q8_0 error at least 10x below q4_0");
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
    TEST_DONE();
}
