# KV cache (issue 10): sequence API, defragmentation, shift equivalence,
# prompt cache files (test_kv, through the C API) and moe-run's --kv,
# context shift and --prompt-cache (test_kv_cli.sh).
if(TARGET moe_runtime)
  add_executable(test_kv ${MOE_TEST_DIR}/test_kv.c)
  target_link_libraries(test_kv PRIVATE moe_runtime moe_formats ${MATH_LIB})
  target_include_directories(test_kv PRIVATE ${MOE_TEST_DIR})
  set_target_properties(test_kv PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  if(MOE_HAVE_CONFORMANCE)
    # shift equivalence within 1e-3 on the pack's F32 model, and on F32-weight
    # models of every conformance architecture's shapes
    moe_add_c_test(kv_shift_tiny-llama TARGET test_kv LABELS golden ARGS shift tiny-llama)
    if(TARGET moe-synth)
      foreach(spec "qwen2moe;--arch;qwen2moe" "olmoe;--arch;olmoe" "qwen3moe;--arch;qwen3moe"
                   "deepseek2;--arch;deepseek2"
                   "deepseek2-lite;--arch;deepseek2;--q-lora-rank;0;--gating;softmax")
        list(GET spec 0 name)
        list(SUBLIST spec 1 -1 synth_args)
        moe_add_sh_test(kv_shift_f32_${name} SCRIPT test_kv_synth.sh LABELS golden
                        ARGS $<TARGET_FILE:test_kv> ${name} ${synth_args})
      endforeach()
    endif()
    # the pack's F16-weight models: F16 rounding of activations alone moves the
    # logits by up to 0.015 when B sits at another absolute position (the
    # test prints that floor); the shift must add nothing beyond it
    foreach(m tiny-qwen2moe tiny-olmoe tiny-deepseek2 tiny-deepseek2-lite tiny-qwen3moe)
      moe_add_c_test(kv_shift_${m} TARGET test_kv LABELS golden ARGS shift ${m} 0.02)
    endforeach()
    foreach(m tiny-llama tiny-deepseek2)
      moe_add_c_test(kv_defrag_${m} TARGET test_kv LABELS golden ARGS defrag ${m})
      moe_add_c_test(kv_share_${m} TARGET test_kv LABELS golden ARGS share ${m})
    endforeach()
    moe_add_c_test(kv_state_tiny-llama TARGET test_kv LABELS golden ARGS state tiny-llama)
  endif()
  if(TARGET moe-run AND TARGET moe-synth)
    moe_add_sh_test(test_kv_cli SCRIPT test_kv_cli.sh LABELS cli ARGS $<TARGET_FILE:test_golden>)
  endif()
endif()
