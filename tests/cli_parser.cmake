# The shared command-line parser (formats/cli.h): option kinds, number
# parsing, error messages, --help text, positionals.
moe_add_c_test(test_cli SOURCES ${MOE_TEST_DIR}/test_cli.c LABELS unit)
# --threads warns in a build without OpenMP (and only there).
if(TARGET moe-synth)
  moe_add_sh_test(threads_cli SCRIPT test_threads_cli.sh LABELS cli ARGS ${MOE_OPENMP})
endif()
