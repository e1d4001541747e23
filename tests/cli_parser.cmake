# The shared command-line parser (formats/cli.h): option kinds, number
# parsing, error messages, --help text, positionals.
moe_add_c_test(test_cli SOURCES ${MOE_TEST_DIR}/test_cli.c LABELS unit)
