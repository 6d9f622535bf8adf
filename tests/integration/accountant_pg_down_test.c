/*
 * accountant_pg_down_test: PostgreSQL halted for 30 s while a worker's
 * usage_sender keeps emitting: the accountant reports itself degraded,
 * the journal holds the events, and after the restart every one of them
 * lands exactly once.
 */
#include <check.h>
#include <stdlib.h>

#include "accountant_common.h"

static Suite *accountant_pg_down_suite(void);

START_TEST(pg_down_30s_during_load_every_row_lands)
{
	ait_body_pg_down();
}
END_TEST

static Suite *
accountant_pg_down_suite(void)
{
	Suite *s = suite_create("accountant_pg_down");
	TCase *tc = tcase_create("postgres_down");

	tcase_set_timeout(tc, 170);
	tcase_add_test(tc, pg_down_30s_during_load_every_row_lands);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	if (!ait_suite_init(false))
		return EXIT_FAILURE;
	sr = srunner_create(accountant_pg_down_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	ait_suite_fini();
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
