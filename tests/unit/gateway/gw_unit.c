#include "gw_unit.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef AIPROXY_TEST_SOURCE_DIR
#define AIPROXY_TEST_SOURCE_DIR "."
#endif

int
gw_unit_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

struct model_table *
gw_unit_models(void)
{
	const char *dir = getenv("AIPROXY_SOURCE_DIR");
	struct model_table *t = NULL;
	char path[PATH_MAX], err[256];

	if (dir == NULL || dir[0] == '\0')
		dir = AIPROXY_TEST_SOURCE_DIR;
	snprintf(path, sizeof(path), "%s/config/models.json", dir);
	if (models_load(path, &t, err, sizeof(err)) != 0)
		ck_abort_msg("cannot load %s: %s", path, err);
	return t;
}
