# moe-server over loopback (tests/test_server.py, python3's standard library
# as the client): greedy results against moe-run, concurrent requests,
# bad input, the API key and SIGTERM, and a bounded load test. Built only
# where libmicrohttpd was found (runtime/CMakeLists.txt says so otherwise).
if(TARGET moe-server)
  moe_add_c_test(test_server_text SOURCES ${MOE_TEST_DIR}/test_server_text.c
                 ${PROJECT_SOURCE_DIR}/runtime/server/text.c LABELS unit)
endif()
if(TARGET moe-server AND TARGET moe-run AND TARGET moe-synth)
  find_package(Python3 COMPONENTS Interpreter)
  if(Python3_Interpreter_FOUND)
    foreach(case cli greedy concurrent bad-input auth-signal load)
      add_test(NAME server_${case} COMMAND ${Python3_EXECUTABLE} ${MOE_TEST_DIR}/test_server.py ${case})
      set_tests_properties(server_${case} PROPERTIES LABELS cli TIMEOUT 300
        ENVIRONMENT "MOE_BIN_DIR=${MOE_BIN_DIR};MOE_TMP=${PROJECT_BINARY_DIR}/test-tmp")
    endforeach()
  else()
    message(STATUS "python3 not found: the moe-server tests are not run")
  endif()
endif()
