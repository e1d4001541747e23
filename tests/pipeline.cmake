# The CI conversion pipeline (ci/convert + moe-manifest): a real run on the
# conformance split model, reproducibility, resumption, corruption, merging,
# failures. manifest_check reads the manifests back with jansson.
if(TARGET moe-manifest AND TARGET moe-run AND TARGET moe-quantize)
  add_executable(manifest_check ${MOE_TEST_DIR}/tools/manifest_check.c)
  target_link_libraries(manifest_check PRIVATE moe_formats PkgConfig::JANSSON)
  target_include_directories(manifest_check PRIVATE ${MOE_TEST_DIR})
  set_target_properties(manifest_check PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  moe_add_sh_test(test_pipeline SCRIPT test_pipeline.sh LABELS cli)
  # about 4.5 min under ASan on a loaded 2-core machine (the killed-run case added two runs)
  set_tests_properties(test_pipeline PROPERTIES TIMEOUT 600)
endif()
