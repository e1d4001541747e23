moe_add_c_test(test_gguf SOURCES ${MOE_TEST_DIR}/test_gguf.c LABELS unit)
moe_add_c_test(test_gguf_conformance TARGET test_gguf LABELS golden ARGS conformance)
moe_add_c_test(test_inspect_json SOURCES ${MOE_TEST_DIR}/test_inspect_json.c LABELS golden cli
               LIBS PkgConfig::JANSSON)
