# Row-interleaved layouts (formats/quant/interleave.h) and their dequantizers.
moe_add_c_test(test_interleave SOURCES ${MOE_TEST_DIR}/test_interleave.c LABELS unit)
