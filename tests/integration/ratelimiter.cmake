# The ratelimiter against a real Redis: the store on its own
# (ratelimiter_store_test: Lua = memory store, failures, concurrency) and
# real ratelimiter processes sharing one Redis (ratelimiter_test).
if(TARGET ratelimiter_core AND TARGET aiproxy-ratelimiter)
	aiproxy_add_test(NAME ratelimiter_store_test
		SOURCES ${CMAKE_CURRENT_LIST_DIR}/ratelimiter_store_test.c
		LIBS harness ratelimiter_core PkgConfig::HIREDIS Threads::Threads
		TIMEOUT 180
		LABELS integration)
	aiproxy_add_test(NAME ratelimiter_test
		SOURCES ${CMAKE_CURRENT_LIST_DIR}/ratelimiter_test.c
		LIBS harness common proto nng::nng PkgConfig::HIREDIS
			PkgConfig::JANSSON Threads::Threads
		TIMEOUT 240
		LABELS integration)
	# ctest runs the daemon: build it with the test.
	add_dependencies(ratelimiter_test aiproxy-ratelimiter)
else()
	message(STATUS "tests/integration/ratelimiter.cmake: ratelimiter "
		"not built, its integration tests skipped")
endif()
