/*
 * accountant_sqlite_test: the real aiproxy-accountant on SQLite (the
 * embedded default) with a usage_sender playing a worker: N events -> N
 * rows at the formula's cost, SIGKILL every ~2 s during 5,000 events ->
 * exactly 5,000 rows, migrations up/down/up and --verify-only, analytics
 * equal to the test's own SQL, one subject's view; and a full worker
 * journal failing closed until catch-up trims it.
 */
#include <check.h>
#include <stdlib.h>

#include "accountant_common.h"

static Suite *accountant_sqlite_suite(void);

START_TEST(sqlite_n_events_n_rows_exact_costs)
{
	ait_body_exact_costs(false);
}
END_TEST

START_TEST(sqlite_sigkill_during_load_loses_nothing)
{
	ait_body_sigkill(false);
}
END_TEST

START_TEST(sqlite_migrations_up_down_up_and_verify)
{
	ait_body_migrations(false);
}
END_TEST

START_TEST(sqlite_analytics_equal_sql)
{
	ait_body_analytics(false);
}
END_TEST

START_TEST(journal_full_fails_closed_then_recovers)
{
	ait_body_journal_full();
}
END_TEST

static Suite *
accountant_sqlite_suite(void)
{
	Suite *s = suite_create("accountant_sqlite");
	TCase *tc = tcase_create("sqlite");

	tcase_set_timeout(tc, 150);
	tcase_add_test(tc, sqlite_n_events_n_rows_exact_costs);
	tcase_add_test(tc, sqlite_migrations_up_down_up_and_verify);
	tcase_add_test(tc, sqlite_analytics_equal_sql);
	tcase_add_test(tc, sqlite_sigkill_during_load_loses_nothing);
	tcase_add_test(tc, journal_full_fails_closed_then_recovers);
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
	sr = srunner_create(accountant_sqlite_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	ait_suite_fini();
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
