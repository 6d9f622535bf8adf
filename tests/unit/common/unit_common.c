#include "unit_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef AIPROXY_TEST_SOURCE_DIR
#define AIPROXY_TEST_SOURCE_DIR "."
#endif

int
uc_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

char *
uc_temp_file(const char *content)
{
	const char *dir = getenv("TMPDIR");
	size_t len = strlen(content), off = 0;
	char *path;
	int fd;

	if (dir == NULL || dir[0] == '\0')
		dir = "/tmp";
	ck_assert_int_ge(asprintf(&path, "%s/aiproxy-ct-XXXXXX", dir), 0);
	fd = mkstemp(path);
	ck_assert_msg(fd >= 0, "mkstemp %s: %s", path, strerror(errno));
	while (off < len) {
		ssize_t w = write(fd, content + off, len - off);

		ck_assert_msg(w > 0, "write %s: %s", path, strerror(errno));
		off += (size_t)w;
	}
	ck_assert_int_eq(close(fd), 0);
	return path;
}

char *
uc_source_path(const char *rel)
{
	const char *dir = getenv("AIPROXY_SOURCE_DIR");
	char *path;

	if (dir == NULL || dir[0] == '\0')
		dir = AIPROXY_TEST_SOURCE_DIR;
	ck_assert_int_ge(asprintf(&path, "%s/%s", dir, rel), 0);
	return path;
}

int
uc_contains(const char *hay, size_t n, const char *needle)
{
	return memmem(hay, n, needle, strlen(needle)) != NULL;
}
