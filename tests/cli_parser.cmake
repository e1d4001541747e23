# The shared command-line parser (formats/base/cli.h): option kinds, number
# parsing, error messages, --help text, positionals.
moe_add_c_test(test_cli SOURCES ${MOE_TEST_DIR}/test_cli.c LABELS unit)
moe_add_c_test(test_progress SOURCES ${MOE_TEST_DIR}/test_progress.c LABELS unit)
# --threads warns in a build without OpenMP (and only there).
if(TARGET moe-synth)
  moe_add_sh_test(threads_cli SCRIPT test_threads_cli.sh LABELS cli ARGS ${MOE_OPENMP})
endif()
# Tools notice lost writes to stdout (and other bad surroundings).
if(TARGET moe-synth AND TARGET moe-run AND TARGET moe-manifest)
  moe_add_sh_test(hardening_cli SCRIPT test_hardening_cli.sh LABELS cli)
endif()
