# Legacy (Q4_0..Q8_0) and IQ4 quantizers (formats/quant/quant_legacy.c, quant_iq4.c):
# hand-made rows (unit), and byte-exact requantization of the conformance
# pack's tiny-llama against llama.cpp's outputs, without and with the pack's
# importance matrix (golden).
moe_add_c_test(test_quant_legacy SOURCES ${MOE_TEST_DIR}/test_quant_legacy.c LABELS unit ARGS unit)
if(MOE_HAVE_CONFORMANCE)
  foreach(t q8_0 q4_0 q4_1 q5_0 q5_1 iq4_nl iq4_xs)
    moe_add_c_test(test_quant_legacy_golden_${t} TARGET test_quant_legacy LABELS golden
                   ARGS golden ${t})
  endforeach()
  foreach(t q4_0 iq4_nl iq4_xs)
    moe_add_c_test(test_quant_legacy_imatrix_${t} TARGET test_quant_legacy LABELS golden
                   ARGS imatrix ${t})
  endforeach()
endif()
# The vectorised IQ4 searches bit-identical to the reference at every ISA level here.
moe_add_c_test(test_quant_lanes SOURCES ${MOE_TEST_DIR}/test_quant_lanes.c LABELS unit)
