# Limits over HTTP with a real Redis: two gateway + ratelimiter pairs
# (suite.c, option redis_url) sharing one private redis-server.
if(TARGET gw_suite AND TARGET aiproxy-provider-worker
    AND TARGET aiproxy-ratelimiter AND TARGET aiproxy-accountant)
	aiproxy_add_test(NAME gateway_redis_test
		SOURCES ${CMAKE_CURRENT_LIST_DIR}/gateway_redis_test.c
		LIBS gw_suite PkgConfig::HIREDIS Threads::Threads m
		TIMEOUT 180
		LABELS integration)
	# ctest runs the daemons: build them with the test.
	add_dependencies(gateway_redis_test aiproxy-gateway
		aiproxy-provider-worker aiproxy-ratelimiter aiproxy-accountant)
	if(TARGET aiproxy-mock-upstream)
		add_dependencies(gateway_redis_test aiproxy-mock-upstream)
	endif()
else()
	message(STATUS "tests/integration/limits.cmake: gateway suite, "
		"worker, ratelimiter or accountant not built, skipped")
endif()
