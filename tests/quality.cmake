# Quality tools: moe-perplexity (perplexity, KL-divergence) and moe-imatrix
# against llama.cpp's published figures and files.
if(TARGET moe-perplexity AND TARGET moe-imatrix AND TARGET moe-quantize AND TARGET moe-synth)
  add_executable(kld_recompute ${MOE_TEST_DIR}/tools/kld_recompute.c)
  target_link_libraries(kld_recompute PRIVATE PkgConfig::JANSSON ${MATH_LIB})
  target_include_directories(kld_recompute PRIVATE ${MOE_TEST_DIR})
  add_executable(imatrix_check ${MOE_TEST_DIR}/tools/imatrix_check.c)
  target_link_libraries(imatrix_check PRIVATE moe_convert ${MATH_LIB})
  target_include_directories(imatrix_check PRIVATE ${MOE_TEST_DIR})
  set_target_properties(kld_recompute imatrix_check PROPERTIES
    RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  foreach(section cli ppl kld synth imatrix)
    if(section STREQUAL "cli")
      set(labels cli)
    else()
      set(labels golden cli)
    endif()
    moe_add_sh_test(test_quality_${section} SCRIPT test_quality_cli.sh LABELS ${labels}
                    ARGS ${section} $<TARGET_FILE:kld_recompute> $<TARGET_FILE:imatrix_check>)
  endforeach()
  set_tests_properties(test_quality_ppl test_quality_imatrix PROPERTIES TIMEOUT 1800)
endif()
if(TARGET moe_quality AND TARGET moe_convert)
  moe_add_c_test(test_quality SOURCES ${MOE_TEST_DIR}/test_quality.c LABELS unit
                 LIBS moe_quality moe_convert ${MATH_LIB})
endif()
