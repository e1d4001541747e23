# Inference runtime: golden logits through the C API (one CTest per model and
# check) and the moe-run CLI.
if(TARGET moe_runtime)
  # one program, many cases: `test_golden` with no arguments runs them all
  add_executable(test_golden ${MOE_TEST_DIR}/test_golden.c)
  target_link_libraries(test_golden PRIVATE moe_runtime moe_formats ${MATH_LIB})
  target_include_directories(test_golden PRIVATE ${MOE_TEST_DIR})
  set_target_properties(test_golden PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)

  if(MOE_HAVE_CONFORMANCE)
    set(MOE_GOLDEN_MODELS tiny-llama tiny-llama-split
        tiny-llama-q8_0 tiny-llama-q4_0 tiny-llama-q4_1 tiny-llama-q5_0 tiny-llama-q5_1
        tiny-llama-q2_K tiny-llama-q3_K tiny-llama-q4_K tiny-llama-q5_K tiny-llama-q6_K
        tiny-llama-iq4_nl tiny-llama-iq4_xs
        tiny-qwen2moe tiny-olmoe tiny-deepseek2 tiny-deepseek2-lite tiny-qwen3moe)
    foreach(m ${MOE_GOLDEN_MODELS})
      moe_add_c_test(golden_${m} TARGET test_golden LABELS golden ARGS logits ${m})
    endforeach()
    # llama.cpp's K-shift goldens
    foreach(m tiny-llama tiny-qwen2moe tiny-olmoe)
      moe_add_c_test(golden_kvshift_${m} TARGET test_golden LABELS golden ARGS kvshift ${m})
    endforeach()
    # K-shift against a fresh evaluation: deepseek2 has no golden (llama.cpp
    # refuses the shift there); the others check the NEOX and plain paths too
    foreach(m tiny-deepseek2 tiny-deepseek2-lite tiny-qwen3moe tiny-llama tiny-qwen2moe
              tiny-olmoe)
      moe_add_c_test(golden_kshift_fresh_${m} TARGET test_golden LABELS golden
                     ARGS kshift-fresh ${m})
    endforeach()
  endif()

  if(TARGET moe-run AND TARGET moe-synth)
    # test_golden compares the CLI's logits file and writes the API's for cmp
    moe_add_sh_test(test_run_cli SCRIPT test_run_cli.sh LABELS cli ARGS $<TARGET_FILE:test_golden>)
    # absorbed MLA (attn_k_b/attn_v_b without attn_kv_b) on moe-synth models
    moe_add_sh_test(test_mla SCRIPT test_mla.sh LABELS cli ARGS $<TARGET_FILE:test_golden>)
    # interleaved Q5_0/Q2_K..Q6_K/IQ4_XS models against their plain twins and goldens
    if(TARGET moe-repack AND TARGET moe-quantize)
      moe_add_sh_test(test_interleave_run SCRIPT test_interleave_run.sh LABELS golden
                      ARGS $<TARGET_FILE:test_golden>)
      # -rtr: plain Q4_0 / IQ4_NL with their interleaved twins' batched arithmetic
      moe_add_sh_test(test_rtr_run SCRIPT test_rtr_run.sh LABELS golden
                      ARGS $<TARGET_FILE:test_golden>)
    endif()
  endif()
endif()

# Fast CPU kernels against the scalar level and a double-precision sum
if(TARGET moe_runtime)
  # every golden again at each forced ISA level (the tests above run at the
  # level the machine picks); a level the CPU lacks runs at the best it has
  if(MOE_HAVE_CONFORMANCE)
    foreach(level ref scalar avx2 avx512) # avx512: below the amx level where the CPU has AMX
      moe_add_c_test(golden_all_level_${level} TARGET test_golden LABELS golden kernels)
      set_property(TEST golden_all_level_${level} APPEND PROPERTY ENVIRONMENT "MOE_CPU_LEVEL=${level}")
    endforeach()
  endif()
  moe_add_c_test(test_kernels SOURCES ${MOE_TEST_DIR}/test_kernels.c LABELS unit kernels
                 LIBS moe_runtime ${MATH_LIB})
  # the router's weights against llama.cpp's steps (sum in double, clamp, scale)
  moe_add_c_test(test_route SOURCES ${MOE_TEST_DIR}/test_route.c LABELS unit kernels
                 LIBS moe_runtime ${MATH_LIB})
  # the one-token products' contiguous ranges with stealing
  moe_add_c_test(test_work_ranges SOURCES ${MOE_TEST_DIR}/test_work_ranges.c LABELS unit
                 LIBS moe_runtime $<$<BOOL:${MOE_OPENMP}>:OpenMP::OpenMP_C>)
endif()

# Split execution over CPU and CPU1 (runtime/device.h): placement rules and
# errors, then every pack model split at every layer boundary, with
# --cpu-moe, with single tensors moved and with experts split by -ot and by
# --hot-experts (moe_quality reads the statistics file): logits bit-identical.
if(TARGET moe_quality)
  moe_add_c_test(test_split_rules SOURCES ${MOE_TEST_DIR}/test_split.c LABELS unit
                 LIBS moe_quality ${MATH_LIB} ARGS rules)
  if(MOE_HAVE_CONFORMANCE)
    foreach(m tiny-llama tiny-llama-q4_0 tiny-llama-q4_K tiny-llama-split tiny-qwen2moe
              tiny-olmoe tiny-qwen3moe tiny-deepseek2 tiny-deepseek2-lite)
      moe_add_c_test(split_${m} TARGET test_split_rules LABELS golden ARGS logits ${m})
    endforeach()
  endif()
endif()

# Placement plans on CPU1 with a fake memory size (MOE_CPU1_MEMORY): the
# --fit table and its printed arguments passed back, --hot-experts choosing
# exactly the hottest experts that fit, and the refusals.
if(TARGET moe_quality)
  moe_add_c_test(test_placement_plan_bad SOURCES ${MOE_TEST_DIR}/test_placement_plan.c
                 LABELS unit LIBS moe_quality ${MATH_LIB} ARGS bad)
  if(MOE_HAVE_CONFORMANCE)
    foreach(m tiny-qwen2moe tiny-deepseek2-lite)
      moe_add_c_test(placement_fit_${m} TARGET test_placement_plan_bad LABELS golden
                     ARGS fit ${m})
    endforeach()
    foreach(m tiny-llama tiny-qwen2moe tiny-qwen3moe tiny-olmoe tiny-deepseek2)
      moe_add_c_test(placement_hot_${m} TARGET test_placement_plan_bad LABELS golden
                     ARGS hot ${m})
    endforeach()
  endif()
endif()
if(TARGET moe-run AND TARGET moe-bench AND TARGET moe-perplexity)
  moe_add_sh_test(test_placement_plan_cli SCRIPT test_placement_plan_cli.sh LABELS cli)
endif()
if(TARGET moe-run AND TARGET moe-synth)
  moe_add_sh_test(test_decode_paths SCRIPT test_decode_paths.sh LABELS cli)
endif()
