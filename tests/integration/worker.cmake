# provider-worker integration: the real worker against the mock upstream,
# the test playing the gateway (worker_test.c).
if(TARGET aiproxy-provider-worker AND TARGET aiproxy-mock-upstream
    AND TARGET harness AND TARGET proto)
	aiproxy_add_test(NAME worker_test
		SOURCES ${CMAKE_CURRENT_LIST_DIR}/worker_test.c
		LIBS harness common proto nng::nng PkgConfig::JANSSON
		TIMEOUT 180
		LABELS integration)
	add_dependencies(worker_test aiproxy-provider-worker
		aiproxy-mock-upstream)
else()
	message(STATUS "tests/integration/worker.cmake: worker, mock, harness "
		"or proto not built yet, worker_test skipped")
endif()
