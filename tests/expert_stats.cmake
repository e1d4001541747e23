# Expert usage statistics: the library on conformance models and hand-made
# files, and the CLI (moe-run --expert-stats, moe-stats).
if(TARGET moe_quality)
  moe_add_c_test(test_expert_stats SOURCES ${MOE_TEST_DIR}/test_expert_stats.c LABELS unit
                 ARGS ${PROJECT_BINARY_DIR} LIBS moe_quality ${MATH_LIB})
endif()
if(TARGET moe-stats AND TARGET moe-run)
  moe_add_sh_test(test_expert_stats_cli SCRIPT test_expert_stats_cli.sh LABELS cli)
endif()
