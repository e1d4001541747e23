if(TARGET moe-quantize)
  add_executable(gguf_compare ${MOE_TEST_DIR}/tools/gguf_compare.c)
  target_link_libraries(gguf_compare PRIVATE moe_formats)
  set_target_properties(gguf_compare PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  moe_add_sh_test(test_quantize_cli SCRIPT test_quantize_cli.sh LABELS golden cli)
  set_tests_properties(test_quantize_cli PROPERTIES TIMEOUT 900)
  moe_add_c_test(test_quantize_stats SOURCES ${MOE_TEST_DIR}/test_quantize_stats.c LABELS golden
                 LIBS PkgConfig::JANSSON)
endif()
if(TARGET moe_convert)
  moe_add_c_test(test_imatrix SOURCES ${MOE_TEST_DIR}/test_imatrix.c LABELS golden LIBS moe_convert)
endif()
# Legacy split-expert inputs quantized in one step (stacked on the fly with
# repack's planner) against moe-repack + moe-quantize, on synthesised models.
if(TARGET moe-quantize AND TARGET moe-repack AND TARGET moe-synth AND TARGET moe-imatrix)
  moe_add_sh_test(test_quantize_legacy SCRIPT test_quantize_legacy.sh LABELS cli)
endif()
