# Gateway integration tests: the real daemons (gateway, provider-workers,
# thin ratelimiter/accountant when built) and the mock upstream, started
# through suite.c on free loopback ports.
if(TARGET aiproxy-gateway AND TARGET harness AND TARGET proto)
	add_library(gw_suite STATIC ${CMAKE_CURRENT_LIST_DIR}/suite.c)
	target_include_directories(gw_suite PUBLIC ${CMAKE_CURRENT_LIST_DIR})
	target_link_libraries(gw_suite PUBLIC harness common proto
		nng::nng PkgConfig::JANSSON)
	set(gw_tests gateway_basic gateway_hygiene)
	if(TARGET aiproxy-provider-worker)
		list(APPEND gw_tests gateway_chat gateway_stream
			gateway_resilience gateway_ledger gateway_limits)
	else()
		message(STATUS "tests/integration/gateway.cmake: "
			"no provider-worker yet, chat tests skipped")
	endif()
	foreach(t ${gw_tests})
		if(NOT EXISTS ${CMAKE_CURRENT_LIST_DIR}/${t}_test.c)
			continue()
		endif()
		aiproxy_add_test(NAME ${t}_test
			SOURCES ${CMAKE_CURRENT_LIST_DIR}/${t}_test.c
			LIBS gw_suite PkgConfig::SQLITE m
			TIMEOUT 120
			LABELS integration)
		add_dependencies(${t}_test aiproxy-gateway)
		foreach(d aiproxy-mock-upstream aiproxy-provider-worker
		    aiproxy-ratelimiter aiproxy-accountant)
			if(TARGET ${d})
				add_dependencies(${t}_test ${d})
			endif()
		endforeach()
	endforeach()
else()
	message(STATUS "tests/integration/gateway.cmake: gateway, harness "
		"or proto not built yet, skipped")
endif()
