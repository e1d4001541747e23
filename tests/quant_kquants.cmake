# K-quant quantizers (formats/quant/quant_kquants.c, formats/quant/quant_common.c):
# hand-made rows (unit), and byte-exact reproduction of llama.cpp's Q2_K..Q6_K
# conformance models, with and without an importance matrix (golden).
moe_add_c_test(test_quant_kquants SOURCES ${MOE_TEST_DIR}/test_quant_kquants.c LABELS unit ARGS unit)
if(MOE_HAVE_CONFORMANCE)
  moe_add_c_test(test_quant_kquants_golden TARGET test_quant_kquants LABELS golden ARGS golden)
endif()
