# Every daemon under valgrind memcheck (needs gw_suite from gateway.cmake).
# Not in a sanitizer build: memcheck cannot run ASan binaries.
if(TARGET gw_suite AND TARGET aiproxy-provider-worker
    AND TARGET aiproxy-ratelimiter AND TARGET aiproxy-accountant
    AND NOT SANITIZE)
	aiproxy_add_test(NAME valgrind_test
		SOURCES ${CMAKE_CURRENT_LIST_DIR}/valgrind_test.c
		LIBS gw_suite
		TIMEOUT 600
		LABELS integration valgrind)
	set_tests_properties(valgrind_test PROPERTIES SKIP_RETURN_CODE 77)
	add_dependencies(valgrind_test aiproxy-gateway aiproxy-provider-worker
		aiproxy-ratelimiter aiproxy-accountant aiproxy-mock-upstream)
endif()
