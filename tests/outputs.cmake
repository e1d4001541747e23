# Where outputs go (formats/base/tempfile.h moe_output; issue 16 hardening 1, 3, 5,
# 9): temp files and SIGKILL, devices/FIFOs/stdout/links, corrupt quantize
# inputs, truncated .gguf.zst.
moe_add_c_test(test_outputs SOURCES ${MOE_TEST_DIR}/test_outputs.c LABELS unit
  ARGS ${PROJECT_BINARY_DIR}/test-tmp)
moe_add_sh_test(outputs_cli SCRIPT test_outputs_cli.sh LABELS cli)
