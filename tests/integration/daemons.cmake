# Daemon lifecycle tests: the thin ratelimiter and accountant (and the
# gateway and provider-worker when they are built), plus aiproxy-ctl.
if(TARGET aiproxy-ratelimiter AND TARGET aiproxy-accountant
    AND TARGET aiproxy-ctl AND TARGET proto)
	aiproxy_add_test(NAME daemons_test
		SOURCES ${CMAKE_CURRENT_LIST_DIR}/daemons_test.c
		LIBS harness common proto nng::nng PkgConfig::JANSSON
		PkgConfig::SQLITE
		TIMEOUT 180
		LABELS integration)
	# ctest runs the binaries: build them with the test.
	add_dependencies(daemons_test aiproxy-ratelimiter aiproxy-accountant
		aiproxy-ctl)
	foreach(t aiproxy-gateway aiproxy-provider-worker)
		if(TARGET ${t})
			add_dependencies(daemons_test ${t})
		endif()
	endforeach()
else()
	message(STATUS "tests/integration/daemons.cmake: daemons or proto "
		"not built yet, daemons_test skipped")
endif()
