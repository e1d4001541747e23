# Scalar reference dequantizers of the plain block types (formats/dequant_*.c):
# hand-made blocks (unit), and llama.cpp's quantized conformance models against
# their F32 original (golden).
moe_add_c_test(test_dequant SOURCES ${MOE_TEST_DIR}/test_dequant.c LABELS unit ARGS unit)
if(MOE_HAVE_CONFORMANCE)
  moe_add_c_test(test_dequant_golden TARGET test_dequant LABELS golden ARGS golden)
endif()
