# Resilience tests: breakers, retries, failover, the providers' status,
# through the real daemons and the mock upstream (suite.c, gw_suite from
# gateway.cmake).
if(TARGET gw_suite AND TARGET aiproxy-provider-worker)
	aiproxy_add_test(NAME gateway_breaker_test
		SOURCES ${CMAKE_CURRENT_LIST_DIR}/gateway_breaker_test.c
		LIBS gw_suite
		TIMEOUT 120
		LABELS integration)
	foreach(d aiproxy-gateway aiproxy-mock-upstream aiproxy-provider-worker)
		add_dependencies(gateway_breaker_test ${d})
	endforeach()
else()
	message(STATUS "tests/integration/resilience.cmake: gateway suite or "
		"provider-worker not built yet, skipped")
endif()
