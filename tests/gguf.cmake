moe_add_c_test(test_gguf SOURCES ${MOE_TEST_DIR}/test_gguf.c LABELS unit)
moe_add_c_test(test_gguf_conformance TARGET test_gguf LABELS golden ARGS conformance)
