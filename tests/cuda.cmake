# CUDA tests run only where the CUDA target was built; those that need a GPU
# report "skipped" (exit 77) without one, as on every CI machine.
if(MOE_HAVE_CUDA)
  # moe_add_cuda_test(NAME SOURCE [LIBS ...]): linked by nvcc; .cu sources get
  # the CUDA target's warnings-as-errors flags.
  function(moe_add_cuda_test name source)
    moe_add_c_test(${name} SOURCES ${MOE_TEST_DIR}/${source} LABELS cuda LIBS moe_cuda ${ARGN})
    set_target_properties(${name} PROPERTIES LINKER_LANGUAGE CUDA)
    if(MOE_WERROR)
      target_compile_options(${name} PRIVATE
        $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings -Xcompiler=-Wall,-Werror>)
    endif()
  endfunction()
  # Need a GPU (skip without one).
  moe_add_cuda_test(test_cuda_device test_cuda_device.c)
  moe_add_cuda_test(test_cuda_kernels test_cuda_kernels.c)
  # against the CPU backend's reference operations (moe_runtime)
  moe_add_cuda_test(test_cuda_ops test_cuda_ops.c moe_runtime)
  moe_add_cuda_test(test_cuda_steps test_cuda_steps.c moe_runtime)
  # Host-only: run on every machine that built the CUDA target, GPU or not.
  moe_add_cuda_test(test_cuda_caps test_cuda_caps.c)
  moe_add_cuda_test(test_cuda_decode test_cuda_decode.cu)
endif()
