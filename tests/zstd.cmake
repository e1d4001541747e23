# Seekable .gguf.zst (formats/gguf/zstd_seekable.h): writer/reader unit tests, and
# interop with the stock zstd CLI (skipped where `zstd` is not on PATH).
moe_add_c_test(test_zstd_seekable SOURCES ${MOE_TEST_DIR}/test_zstd_seekable.c LABELS unit)
moe_add_c_test(test_zstd_cli TARGET test_zstd_seekable LABELS cli ARGS cli)
