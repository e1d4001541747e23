/* The type table against the published sizes (../shared/spec/model.md §1.9,
 * typed in here independently), name lookup, and size arithmetic. */
#include <stdint.h>
#include <string.h>

#include "formats/quant/types.h"
#include "test_util.h"

typedef struct expected {
    int id;
    const char *name;
    int64_t blck;
    size_t bytes;
    size_t meta;
} expected;

static const expected spec_table[] = {
    {0, "f32", 1, 4, 0},        {1, "f16", 1, 2, 0},         {2, "q4_0", 32, 18, 0},
    {3, "q4_1", 32, 20, 0},     {6, "q5_0", 32, 22, 0},      {7, "q5_1", 32, 24, 0},
    {8, "q8_0", 32, 34, 0},     {9, "q8_1", 32, 36, 0},      {10, "q2_K", 256, 84, 0},
    {11, "q3_K", 256, 110, 0},  {12, "q4_K", 256, 144, 0},   {13, "q5_K", 256, 176, 0},
    {14, "q6_K", 256, 210, 0},  {15, "q8_K", 256, 292, 0},   {16, "iq2_xxs", 256, 66, 0},
    {17, "iq2_xs", 256, 74, 0}, {18, "iq3_xxs", 256, 98, 0}, {19, "iq1_s", 256, 50, 0},
    {20, "iq4_nl", 32, 18, 0},  {21, "iq3_s", 256, 110, 0},  {22, "iq2_s", 256, 82, 0},
    {23, "iq4_xs", 256, 136, 0}, {24, "i8", 1, 1, 0},        {25, "i16", 1, 2, 0},
    {26, "i32", 1, 4, 0},       {27, "i64", 1, 8, 0},        {28, "f64", 1, 8, 0},
    {29, "iq1_m", 256, 56, 0},  {30, "bf16", 1, 2, 0},       {34, "tq1_0", 256, 54, 0},
    {35, "tq2_0", 256, 66, 0},  {39, "mxfp4", 32, 17, 0},    {133, "q6_0", 32, 26, 0},
    {144, "iq4_ks", 256, 136, 4}, {151, "q8_KV", 32, 32, 8}, {202, "q4_0_r8", 32, 18, 0},
    {206, "q5_0_r4", 32, 22, 0}, {208, "q8_0_r8", 32, 34, 0}, {210, "q2_k_r4", 256, 84, 0},
    {211, "q3_k_r4", 256, 110, 0}, {212, "q4_k_r4", 256, 144, 0},
    {213, "q5_k_r4", 256, 176, 0}, {214, "q6_k_r4", 256, 210, 0},
    {219, "iq1_s_r4", 32, 6, 2}, {220, "iq4_nl_r4", 32, 18, 0},
    {223, "iq4_xs_r8", 256, 136, 0}, {230, "bf16_r16", 1, 2, 0}, {399, "q8_k_r8", 256, 258, 0},
};

static void test_spec_sizes(void) {
    for (size_t i = 0; i < sizeof spec_table / sizeof spec_table[0]; i++) {
        const expected *e = &spec_table[i];
        const moe_type_traits *tr = moe_type_get(e->id);
        CHECK(tr != NULL, "type id %d known", e->id);
        if (!tr)
            continue;
        CHECK(!strcmp(tr->name, e->name), "id %d name %s vs %s", e->id, tr->name, e->name);
        CHECK(tr->block_size == e->blck && tr->type_size == e->bytes && tr->row_meta == e->meta,
              "%s: block %lld bytes %zu meta %zu", e->name, (long long)tr->block_size,
              tr->type_size, tr->row_meta);
    }
    const int removed[] = {4, 5, 36, 37, 38, -1, 400, 100000};
    for (size_t i = 0; i < sizeof removed / sizeof removed[0]; i++)
        CHECK(moe_type_get(removed[i]) == NULL, "id %d unknown", removed[i]);
}

static void test_every_entry(void) {
    size_t n = 0;
    moe_type id;
    for (const moe_type_traits *tr; (tr = moe_type_at(n, &id)); n++) {
        CHECK(tr->name && tr->name[0], "id %d named", id);
        CHECK(tr->block_size > 0 && tr->type_size > 0, "%s sized", tr->name);
        moe_type back;
        CHECK(moe_type_from_name(tr->name, &back) && back == id, "%s round-trips by name",
              tr->name);
        if (tr->interleave_rows) {
            const moe_type_traits *base = moe_type_get(tr->base);
            CHECK(base != NULL, "%s has a base", tr->name);
            CHECK(tr->interleave_rows == 4 || tr->interleave_rows == 8 ||
                      tr->interleave_rows == 16,
                  "%s interleave %d", tr->name, tr->interleave_rows);
        }
    }
    CHECK(n > 90, "table has %zu entries", n);
}

static void test_names_and_sizes(void) {
    moe_type t;
    CHECK(moe_type_from_name("Q4_K", &t) && t == MOE_TYPE_Q4_K, "case-insensitive");
    CHECK(moe_type_from_name("IQ4_NL_R4", &t) && t == MOE_TYPE_IQ4_NL_R4, "upper-case R4");
    CHECK(!moe_type_from_name("q4_k_m", &t), "mix names are not tensor types");
    uint64_t bytes = 0;
    moe_err err = {0};
    CHECK(moe_type_row_size(MOE_TYPE_Q4_K, 1408, &bytes, &err) == MOE_ERR_FORMAT &&
              strstr(err.msg, "q4_K"),
          "1408 is not a multiple of 256: %s", err.msg);
    CHECK(moe_type_row_size(MOE_TYPE_Q4_0, 1408, &bytes, &err) == MOE_OK && bytes == 44 * 18,
          "q4_0 row of 1408");
    CHECK(moe_type_row_size(MOE_TYPE_IQ4_KS, 512, &bytes, &err) == MOE_OK && bytes == 4 + 2 * 136,
          "row meta counted once per row");
    int64_t ne[4] = {256, 256, 8, 1};
    CHECK(moe_type_tensor_size(MOE_TYPE_Q4_K, ne, &bytes, &err) == MOE_OK && bytes == 294912,
          "expert tensor size");
    int64_t huge[4] = {INT64_MAX / 2 + 1, 4, 4, 4};
    CHECK(moe_type_tensor_size(MOE_TYPE_F32, huge, &bytes, &err) == MOE_ERR_FORMAT, "overflow");
    float out[32];
    CHECK(moe_dequantize_rows(MOE_TYPE_TQ1_0, out, out, 256, 1, &err) == MOE_ERR_UNSUPPORTED &&
              strstr(err.msg, "tq1_0"),
          "recognised-only type says it cannot compute: %s", err.msg);
}

int main(void) {
    test_spec_sizes();
    test_every_entry();
    test_names_and_sizes();
    TEST_DONE();
}
