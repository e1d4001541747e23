# Tokenizer (runtime/vocab*.c), sampler (runtime/sampling.c) and chat formats
# (runtime/chat.c): hand-made cases (unit), and llama.cpp's own tokenizer test
# cases for the conformance vocabularies (golden).
moe_add_c_test(test_vocab SOURCES ${MOE_TEST_DIR}/test_vocab.c LABELS unit ARGS unit
               LIBS moe_runtime)
if(MOE_HAVE_CONFORMANCE)
  moe_add_c_test(test_vocab_golden TARGET test_vocab LABELS golden ARGS golden)
endif()
moe_add_c_test(test_sampling SOURCES ${MOE_TEST_DIR}/test_sampling.c LABELS unit LIBS moe_runtime)
moe_add_c_test(test_chat SOURCES ${MOE_TEST_DIR}/test_chat.c LABELS unit LIBS moe_runtime)
