# CUDA tests run only where the CUDA target was built; without a GPU they
# report "skipped" (exit 77), as on every CI machine.
if(MOE_HAVE_CUDA)
  moe_add_c_test(test_cuda_device SOURCES ${MOE_TEST_DIR}/test_cuda_device.c LABELS cuda
                 LIBS moe_cuda)
  set_target_properties(test_cuda_device PROPERTIES LINKER_LANGUAGE CUDA)
  moe_add_c_test(test_cuda_kernels SOURCES ${MOE_TEST_DIR}/test_cuda_kernels.c LABELS cuda
                 LIBS moe_cuda)
  set_target_properties(test_cuda_kernels PROPERTIES LINKER_LANGUAGE CUDA)
  # Host-only: runs on every machine that built the CUDA target, GPU or not.
  moe_add_c_test(test_cuda_caps SOURCES ${MOE_TEST_DIR}/test_cuda_caps.c LABELS cuda
                 LIBS moe_cuda)
  set_target_properties(test_cuda_caps PROPERTIES LINKER_LANGUAGE CUDA)
endif()
