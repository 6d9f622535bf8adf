/*
 * End to end into the ledger: requests through the gateway and the
 * provider-workers land in the accountant's SQLite ledger exactly once,
 * with the costs the envelope reported.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <check.h>
#include <jansson.h>
#include <sqlite3.h>

#include "clock.h"
#include "suite.h"

#define N_CHATS 12

/* Runs one integer query on the ledger; -1 when it cannot. */
static long long
ledger_int(const char *db_path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	long long v = -1;

	if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) ==
		SQLITE_OK &&
	    sqlite3_busy_timeout(db, 2000) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

/* totals.requests of GET analytics<query>, or -status when not 200. */
static long long
analytics_requests(const struct suite *s, const char *query, const char *hdr)
{
	const char *h[2] = {hdr, NULL};
	char path[256];
	struct h_resp r;
	json_t *doc;
	long long n;

	snprintf(
	    path, sizeof(path), "/api/v1/ai-proxy/usage/analytics%s", query);
	ck_assert_int_eq(suite_get(s, path, hdr ? h : NULL, &r), 0);
	if (r.status != 200) {
		n = -r.status;
		h_resp_free(&r);
		return n;
	}
	doc = suite_json(&r);
	ck_assert_ptr_nonnull(doc);
	n = json_integer_value(json_object_get(
	    json_object_get(json_object_get(doc, "data"), "totals"),
	    "requests"));
	json_decref(doc);
	h_resp_free(&r);
	return n;
}

START_TEST(test_chats_land_in_the_ledger_once)
{
	struct suite_opts o = {.workers = 2};
	struct suite s;
	char db[PATH_MAX + 64];
	long long want_micro = 0, rows = -1, sum;
	int64_t deadline;

	if (!suite_have("aiproxy-accountant") ||
	    !suite_have("aiproxy-provider-worker")) {
		printf("note: accountant or worker not built, skipped\n");
		return;
	}
	ck_assert_int_eq(suite_start(&s, &o), 0);
	for (int i = 0; i < N_CHATS; i++) {
		const char *path = i % 2 ? "/api/v1/ai-proxy/openai/chat"
					 : "/api/v1/ai-proxy/claude/chat";
		char body[256];
		struct h_resp r;
		json_t *doc;
		double cost;

		snprintf(body, sizeof(body),
		    "{\"messages\":[{\"role\":\"user\",\"content\":"
		    "\"ledger test number %d, a few words\"}],"
		    "\"max_tokens\":32}",
		    i);
		ck_assert_int_eq(suite_post(&s, path, body, NULL, &r), 0);
		ck_assert_int_eq(r.status, 200);
		doc = suite_json(&r);
		ck_assert_ptr_nonnull(doc);
		cost = json_number_value(json_object_get(doc, "cost"));
		ck_assert(cost > 0);
		want_micro += llround(cost * 1e6);
		json_decref(doc);
		h_resp_free(&r);
	}
	snprintf(db, sizeof(db), "%s/accountant/aiproxy.db", s.dir);
	/* The live path or the journal's catch-up: poll, bounded. */
	deadline = clock_mono_ms() + 15000;
	while (clock_mono_ms() < deadline) {
		rows = ledger_int(db, "SELECT count(*) FROM usage_events");
		if (rows >= N_CHATS)
			break;
		nanosleep(&(struct timespec){0, 50000000L}, NULL);
	}
	ck_assert_int_eq(rows, N_CHATS);
	ck_assert_int_eq(
	    ledger_int(db, "SELECT count(DISTINCT event_id) FROM usage_events"),
	    N_CHATS);
	sum = ledger_int(db, "SELECT sum(cost_micro_usd) FROM usage_events");
	ck_assert_int_eq(sum, want_micro);
	ck_assert_int_eq(ledger_int(db, "SELECT count(*) FROM usage_events "
					"WHERE status = 'ok'"),
	    N_CHATS);

	/* Analytics: the caller's own subject (anon:<ip> here) sees all N,
	 * another session nothing, the admin everyone; bad days -> 400. */
	ck_assert_int_eq(analytics_requests(&s, "?days=7", NULL), N_CHATS);
	ck_assert_int_eq(
	    analytics_requests(&s, "?days=1&provider=claude", NULL),
	    N_CHATS / 2);
	ck_assert_int_eq(analytics_requests(
			     &s, "?days=7", "X-Session-ID: somebody-else-0001"),
	    0);
	ck_assert_int_eq(analytics_requests(&s, "?days=7",
			     "Authorization: Bearer " SUITE_ADMIN_KEY),
	    N_CHATS);
	ck_assert_int_eq(analytics_requests(&s, "?days=0", NULL), -400);
	ck_assert_int_eq(analytics_requests(&s, "?days=91", NULL), -400);
	ck_assert_int_eq(analytics_requests(&s, "?days=abc", NULL), -400);
	ck_assert_int_eq(
	    analytics_requests(&s, "?provider=gemini", NULL), -400);
	suite_stop(&s);
	ck_assert_int_eq(s.gw_exit, 0);
}
END_TEST

static Suite *
ledger_suite(void)
{
	Suite *su = suite_create("gateway_ledger");
	TCase *tc = tcase_create("ledger");

	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, test_chats_land_in_the_ledger_once);
	suite_add_tcase(su, tc);
	return su;
}

int
main(void)
{
	SRunner *sr = srunner_create(ledger_suite());
	int failed;

	/* nng cannot be used in a forked child once the parent started it. */
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
