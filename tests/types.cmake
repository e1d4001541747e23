moe_add_c_test(test_types SOURCES ${MOE_TEST_DIR}/test_types.c LABELS unit)
