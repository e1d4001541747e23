if(TARGET moe_runtime AND TARGET moe_repack)
  moe_add_c_test(test_runtime_sources SOURCES ${MOE_TEST_DIR}/test_runtime_sources.c LABELS golden
                 LIBS moe_runtime moe_repack)
endif()
if(TARGET moe_runtime)
  moe_add_c_test(test_multiseq SOURCES ${MOE_TEST_DIR}/test_multiseq.c LABELS golden
                 LIBS moe_runtime m)
endif()
