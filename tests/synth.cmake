# Architecture schema (formats/model/arch.h) and the moe-synth tool.
moe_add_c_test(test_arch SOURCES test_arch.c LABELS unit)
if(MOE_HAVE_CONFORMANCE)
  # the same program, checking the schema against every conformance model
  add_test(NAME test_arch_golden COMMAND test_arch golden)
  set_tests_properties(test_arch_golden PROPERTIES LABELS golden SKIP_RETURN_CODE 77
    ENVIRONMENT "MOE_CONFORMANCE_DIR=${MOE_CONFORMANCE_DIR}")
endif()
if(TARGET moe-synth)
  # test_synth.sh reads moe-synth's output back through `test_arch check`
  moe_add_sh_test(test_synth SCRIPT test_synth.sh LABELS cli ARGS $<TARGET_FILE:test_arch>)
endif()
# The README's worked example, command by command, on synthesised stand-ins.
if(TARGET moe-run AND TARGET moe-repack AND TARGET moe-quantize AND TARGET moe-bench AND TARGET moe-synth)
  moe_add_sh_test(test_readme_example SCRIPT test_readme_example.sh LABELS cli)
endif()
