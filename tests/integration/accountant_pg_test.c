/*
 * accountant_pg_test: the real aiproxy-accountant on a private PostgreSQL
 * (one server for the suite, a database per test) with a usage_sender
 * playing a worker: N events -> N rows at the formula's cost, SIGKILL
 * every ~2 s during 5,000 events -> exactly 5,000 rows, migrations
 * up/down/up and --verify-only, analytics equal to the test's own SQL,
 * one subject's view.  (PostgreSQL halted during the load:
 * accountant_pg_down_test.)
 */
#include <check.h>
#include <stdlib.h>

#include "accountant_common.h"

static Suite *accountant_pg_suite(void);

START_TEST(pg_n_events_n_rows_exact_costs)
{
	ait_body_exact_costs(true);
}
END_TEST

START_TEST(pg_sigkill_during_load_loses_nothing)
{
	ait_body_sigkill(true);
}
END_TEST

START_TEST(pg_migrations_up_down_up_and_verify)
{
	ait_body_migrations(true);
}
END_TEST

START_TEST(pg_analytics_equal_sql)
{
	ait_body_analytics(true);
}
END_TEST

static Suite *
accountant_pg_suite(void)
{
	Suite *s = suite_create("accountant_pg");
	TCase *tc = tcase_create("postgres");

	tcase_set_timeout(tc, 150);
	tcase_add_test(tc, pg_n_events_n_rows_exact_costs);
	tcase_add_test(tc, pg_migrations_up_down_up_and_verify);
	tcase_add_test(tc, pg_analytics_equal_sql);
	tcase_add_test(tc, pg_sigkill_during_load_loses_nothing);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	if (!ait_suite_init(true))
		return EXIT_FAILURE;
	sr = srunner_create(accountant_pg_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	ait_suite_fini();
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
