# LoRA adapters (runtime/lora.h, convert/lora_merge.h): the pack's LoRA goldens
# through the C API at the machine's level and the reference, unmerged vs
# merged, a quantized base, apply/remove/swap, invalid adapters, and the CLI.
if(TARGET moe_runtime AND TARGET moe_convert)
  add_executable(test_lora ${MOE_TEST_DIR}/test_lora.c)
  target_link_libraries(test_lora PRIVATE moe_runtime moe_convert moe_formats ${MATH_LIB})
  target_include_directories(test_lora PRIVATE ${MOE_TEST_DIR})
  set_target_properties(test_lora PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  if(MOE_HAVE_CONFORMANCE)
    foreach(level default ref)
      moe_add_c_test(lora_golden_${level} TARGET test_lora LABELS golden lora
                     ARGS golden 1.0 tiny-llama+lora)
      moe_add_c_test(lora_golden0.5_${level} TARGET test_lora LABELS golden lora
                     ARGS golden 0.5 tiny-llama+lora0.5)
      moe_add_c_test(lora_quant_${level} TARGET test_lora LABELS golden lora ARGS quant)
      if(NOT level STREQUAL "default")
        foreach(t lora_golden_${level} lora_golden0.5_${level} lora_quant_${level})
          set_property(TEST ${t} APPEND PROPERTY ENVIRONMENT "MOE_CPU_LEVEL=${level}")
        endforeach()
      endif()
    endforeach()
    moe_add_c_test(lora_merged TARGET test_lora LABELS unit lora ARGS merged)
    moe_add_c_test(lora_swap TARGET test_lora LABELS unit lora ARGS swap)
    moe_add_c_test(lora_errors TARGET test_lora LABELS unit lora ARGS errors)
  endif()
  if(TARGET moe-run AND TARGET moe-quantize)
    moe_add_sh_test(test_lora_cli SCRIPT test_lora_cli.sh LABELS cli lora
                    ARGS $<TARGET_FILE:test_golden>)
  endif()
endif()
