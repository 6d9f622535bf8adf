# aiproxy_add_test(NAME <name> SOURCES <files...> [LIBS <libs...>]
#                  [TIMEOUT <seconds>] [LABELS <labels...>])
#
# Builds one `check` runner and registers it with ctest.  Every test
# executable in the tree goes through here so timeouts, labels and the
# environment (where the built daemons are) stay in one place.
function(aiproxy_add_test)
	cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
	if(NOT T_TIMEOUT)
		set(T_TIMEOUT 60)
	endif()
	add_executable(${T_NAME} ${T_SOURCES})
	target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} PkgConfig::CHECK)
	add_test(NAME ${T_NAME} COMMAND ${T_NAME})
	set_tests_properties(${T_NAME} PROPERTIES
		TIMEOUT ${T_TIMEOUT}
		LABELS "${T_LABELS}"
		ENVIRONMENT
		"AIPROXY_BUILD_DIR=${CMAKE_BINARY_DIR};AIPROXY_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endfunction()
