# CUDA tests run only where the CUDA target was built; those that need a GPU
# report "skipped" (exit 77) without one, as on every CI machine.
# ci/test builds the targets named in the moe_add_c_test(test_cuda_...) lines
# below: keep one such line per test.
if(MOE_HAVE_CUDA)
  # Linked by nvcc; .cu sources get the CUDA target's warnings-as-errors flags.
  function(moe_cuda_test_setup name)
    set_target_properties(${name} PROPERTIES LINKER_LANGUAGE CUDA)
    if(MOE_WERROR)
      target_compile_options(${name} PRIVATE
        $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings -Xcompiler=-Wall,-Werror>)
    endif()
  endfunction()
  # Need a GPU (skip without one).
  moe_add_c_test(test_cuda_device SOURCES ${MOE_TEST_DIR}/test_cuda_device.c LABELS cuda
                 LIBS moe_cuda)
  moe_cuda_test_setup(test_cuda_device)
  moe_add_c_test(test_cuda_kernels SOURCES ${MOE_TEST_DIR}/test_cuda_kernels.c LABELS cuda
                 LIBS moe_cuda)
  moe_cuda_test_setup(test_cuda_kernels)
  # against the CPU backend's reference operations (moe_runtime)
  moe_add_c_test(test_cuda_ops SOURCES ${MOE_TEST_DIR}/test_cuda_ops.c LABELS cuda
                 LIBS moe_cuda moe_runtime)
  moe_cuda_test_setup(test_cuda_ops)
  moe_add_c_test(test_cuda_steps SOURCES ${MOE_TEST_DIR}/test_cuda_steps.c LABELS cuda
                 LIBS moe_cuda moe_runtime)
  moe_cuda_test_setup(test_cuda_steps)
  # Host-only: run on every machine that built the CUDA target, GPU or not.
  moe_add_c_test(test_cuda_caps SOURCES ${MOE_TEST_DIR}/test_cuda_caps.c LABELS cuda
                 LIBS moe_cuda)
  moe_cuda_test_setup(test_cuda_caps)
  moe_add_c_test(test_cuda_decode SOURCES ${MOE_TEST_DIR}/test_cuda_decode.cu LABELS cuda
                 LIBS moe_cuda)
  moe_cuda_test_setup(test_cuda_decode)
endif()
