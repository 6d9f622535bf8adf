# The accountant against a real PostgreSQL and SQLite, with a usage_sender
# playing a worker (see accountant_common.h), and the ledger benchmark.
if(TARGET aiproxy-accountant AND TARGET aiproxy-migrate
    AND TARGET usage_sender AND TARGET harness)
	foreach(t sqlite pg pg_down)
		aiproxy_add_test(NAME accountant_${t}_test
			SOURCES ${CMAKE_CURRENT_LIST_DIR}/accountant_${t}_test.c
				${CMAKE_CURRENT_LIST_DIR}/accountant_common.c
			LIBS harness usage_sender common proto PkgConfig::PQ
				PkgConfig::SQLITE PkgConfig::JANSSON nng::nng m
			TIMEOUT 180
			LABELS integration)
		# ctest runs the binaries: build them with the test.
		add_dependencies(accountant_${t}_test aiproxy-accountant
			aiproxy-migrate)
	endforeach()

	add_executable(aiproxy-accountant-bench
		${CMAKE_SOURCE_DIR}/bench/accountant_bench.c)
	target_link_libraries(aiproxy-accountant-bench PRIVATE harness common
		proto PkgConfig::PQ PkgConfig::JANSSON nng::nng)
	target_compile_definitions(aiproxy-accountant-bench PRIVATE
		AIPROXY_BENCH_BUILD_DIR="${CMAKE_BINARY_DIR}"
		AIPROXY_BENCH_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
	add_dependencies(aiproxy-accountant-bench aiproxy-accountant)
else()
	message(STATUS "tests/integration/accountant.cmake: accountant, "
		"usage_sender or harness not built yet, skipped")
endif()
