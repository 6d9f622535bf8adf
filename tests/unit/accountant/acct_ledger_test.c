/*
 * acct_ledger_test: the ledger on SQLite in a temporary folder: commits
 * and the journal high-water mark (gaps mean "not yet"), idempotence by
 * event id, roll-ups, the daily cost and the analytics report (nearest
 * rank percentiles), the queue bound, the migrations (up, verify,
 * rollback, altered steps refused) and DATABASE_URL parsing.
 */
#include "acct_ledger.h"

#include <check.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "acct_db.h"
#include "acct_migrate.h"
#include "acct_unit.h"
#include "clock.h"

#define DAY_MS 86400000LL

static Suite *acct_ledger_suite(void);

struct lt_wait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	int result;
};

static void
lt_done(void *arg, int result)
{
	struct lt_wait *w = arg;

	pthread_mutex_lock(&w->mu);
	w->done = true;
	w->result = result;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

/* Submits ev[0..n) and waits for their commit; returns its result. */
static int
lt_commit(struct acct_ledger *l, const struct msg_usage_event *ev, size_t n)
{
	struct lt_wait w = {.done = false};
	struct timespec until;
	int rv;

	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cv, NULL);
	rv = acct_ledger_submit(l, ev, n, lt_done, &w);
	ck_assert_int_eq(rv, 0);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	pthread_mutex_lock(&w.mu);
	while (!w.done && pthread_cond_timedwait(&w.cv, &w.mu, &until) == 0)
		;
	pthread_mutex_unlock(&w.mu);
	ck_assert_msg(w.done, "no commit within 10 s");
	pthread_cond_destroy(&w.cv);
	pthread_mutex_destroy(&w.mu);
	return w.result;
}

static struct acct_ledger *
lt_open(const char *dir, size_t queue_max)
{
	struct acct_ledger_opts o;
	struct acct_ledger *l = NULL;
	char target[PATH_MAX];

	snprintf(target, sizeof(target), "%.*s/ledger.db", PATH_MAX - 16, dir);
	memset(&o, 0, sizeof(o));
	o.ops = &acct_sqlite_ops;
	o.target = target;
	o.queue_max = queue_max;
	ck_assert_int_eq(acct_ledger_open(&o, &l), 0);
	ck_assert(acct_ledger_db_up(l));
	ck_assert_str_eq(acct_ledger_backend(l), "sqlite");
	return l;
}

static void
lt_query(struct acct_query *q, const char *st, const char *sid,
    const char *provider, int64_t now, int days)
{
	memset(q, 0, sizeof(*q));
	snprintf(q->subject_type, sizeof(q->subject_type), "%s", st);
	snprintf(q->subject_id, sizeof(q->subject_id), "%s", sid);
	snprintf(q->provider, sizeof(q->provider), "%s", provider);
	clock_fmt_day(now - (days - 1) * DAY_MS, q->from, sizeof(q->from));
	clock_fmt_day(now, q->to, sizeof(q->to));
}

START_TEST(test_committed_seq_waits_for_gaps)
{
	struct msg_usage_event ev[3];
	struct acct_ledger_stats st;
	struct acct_report *r = calloc(1, sizeof(*r));
	struct acct_ledger *l;
	struct acct_query q;
	int64_t now = clock_real_ms(), c = -1;
	char dir[PATH_MAX];

	au_tmpdir(dir, sizeof(dir));
	l = lt_open(dir, 0);
	ck_assert(!acct_ledger_committed_cached(l, "w1:aa", &c));
	ck_assert_int_eq(acct_ledger_committed(l, "w1:aa", &c), 0);
	ck_assert_int_eq(c, 0);

	/* 1, 2 and 4: committed stops before the gap. */
	au_event(&ev[0], "e1", "w1:aa", 1, now);
	au_event(&ev[1], "e2", "w1:aa", 2, now);
	au_event(&ev[2], "e4", "w1:aa", 4, now);
	ck_assert_int_eq(lt_commit(l, ev, 3), 0);
	ck_assert(acct_ledger_committed_cached(l, "w1:aa", &c));
	ck_assert_int_eq(c, 2);
	/* 3 fills it. */
	au_event(&ev[0], "e3", "w1:aa", 3, now);
	ck_assert_int_eq(lt_commit(l, ev, 1), 0);
	ck_assert(acct_ledger_committed_cached(l, "w1:aa", &c));
	ck_assert_int_eq(c, 4);

	/* The same events again (the live path and a re-sent batch): no
	 * new row, no double count. */
	au_event(&ev[0], "e2", "w1:aa", 2, now);
	au_event(&ev[1], "e3", "w1:aa", 3, now);
	ck_assert_int_eq(lt_commit(l, ev, 2), 0);
	/* An event outside any journal (seq 0) makes no stream. */
	au_event(&ev[0], "e-free", "w1:other", 0, now);
	ck_assert_int_eq(lt_commit(l, ev, 1), 0);
	ck_assert(!acct_ledger_committed_cached(l, "w1:other", &c));

	lt_query(&q, "", "", "", now, 1);
	ck_assert_int_eq(acct_ledger_report(l, &q, r), 0);
	ck_assert_int_eq(r->totals.requests, 5);
	ck_assert_int_eq(r->totals.cost_micro_usd, 5 * 160);
	acct_ledger_stats(l, &st);
	ck_assert_uint_eq(st.committed, 7);
	ck_assert(st.db_up);
	acct_ledger_free(l);

	/* A new ledger on the same file reads the mark from the database. */
	l = lt_open(dir, 0);
	ck_assert(!acct_ledger_committed_cached(l, "w1:aa", &c));
	ck_assert_int_eq(acct_ledger_committed(l, "w1:aa", &c), 0);
	ck_assert_int_eq(c, 4);
	acct_ledger_free(l);
	free(r);
	au_rmtree(dir);
}
END_TEST

/* One subject's numbers over two days, against values worked out by
 * hand (nearest-rank percentiles). */
START_TEST(test_report_and_cost_day)
{
	static const int64_t today_ms[] = {30, 10, 50, 20, 40};
	struct acct_report *r = calloc(1, sizeof(*r));
	struct msg_usage_event ev[10];
	struct acct_ledger *l;
	struct acct_query q;
	int64_t now = clock_real_ms(), cost = -1;
	char dir[PATH_MAX], id[32], today[16], yesterday[16];
	size_t n = 0;

	au_tmpdir(dir, sizeof(dir));
	l = lt_open(dir, 0);
	clock_fmt_day(now, today, sizeof(today));
	clock_fmt_day(now - DAY_MS, yesterday, sizeof(yesterday));
	for (int i = 0; i < 5; i++, n++) {
		snprintf(id, sizeof(id), "a-today-%d", i);
		au_event(&ev[n], id, "w1:bb", (int64_t)n + 1, now);
		ev[n].total_ms = today_ms[i];
		ev[n].cost_micro_usd = 100;
		ev[n].cache_read_tokens = 3;
		ev[n].cache_write_tokens = 5;
	}
	snprintf(ev[1].status, sizeof(ev[1].status), "error");
	ev[2].cached = true;
	for (int i = 0; i < 2; i++, n++) {
		snprintf(id, sizeof(id), "a-yday-%d", i);
		au_event(&ev[n], id, "w1:bb", (int64_t)n + 1, now - DAY_MS);
		snprintf(ev[n].provider, sizeof(ev[n].provider), "openai");
		snprintf(ev[n].model, sizeof(ev[n].model), "gpt-4o-mini");
		ev[n].total_ms = i == 0 ? 9 : 7;
		ev[n].cost_micro_usd = 1000;
	}
	for (int i = 0; i < 3; i++, n++) {
		snprintf(id, sizeof(id), "b-%d", i);
		au_event(&ev[n], id, "w1:bb", (int64_t)n + 1, now);
		snprintf(ev[n].subject_id, sizeof(ev[n].subject_id), "bob");
		ev[n].total_ms = 999;
	}
	ck_assert_int_eq(lt_commit(l, ev, n), 0);

	lt_query(&q, "user", "alice", "", now, 7);
	ck_assert_int_eq(acct_ledger_report(l, &q, r), 0);
	ck_assert_uint_eq(r->ndays, 2);
	ck_assert_str_eq(r->days[0].day, yesterday);
	ck_assert_str_eq(r->days[1].day, today);
	ck_assert_int_eq(r->days[1].requests, 5);
	ck_assert_int_eq(r->days[1].errors, 1);
	ck_assert_int_eq(r->days[1].cached, 1);
	ck_assert_int_eq(r->days[1].input_tokens, 500);
	ck_assert_int_eq(r->days[1].output_tokens, 100);
	ck_assert_int_eq(r->days[1].cache_read_tokens, 15);
	ck_assert_int_eq(r->days[1].cache_write_tokens, 25);
	ck_assert_int_eq(r->days[1].cost_micro_usd, 500);
	ck_assert_int_eq(r->days[1].p50_ms, 30); /* rank ceil(2.5) = 3 */
	ck_assert_int_eq(r->days[1].p95_ms, 50); /* rank ceil(4.75) = 5 */
	ck_assert_int_eq(r->days[0].requests, 2);
	ck_assert_int_eq(r->days[0].p50_ms, 7); /* rank 1 */
	ck_assert_int_eq(r->days[0].p95_ms, 9); /* rank 2 */
	ck_assert_int_eq(r->totals.requests, 7);
	ck_assert_int_eq(r->totals.cost_micro_usd, 2500);
	ck_assert_int_eq(r->totals.p50_ms, 20); /* 7 9 10 20 ..: rank 4 */
	ck_assert_int_eq(r->totals.p95_ms, 50);

	/* Provider filter; today only; everyone; the other subject. */
	lt_query(&q, "user", "alice", "openai", now, 7);
	ck_assert_int_eq(acct_ledger_report(l, &q, r), 0);
	ck_assert_int_eq(r->totals.requests, 2);
	lt_query(&q, "user", "alice", "", now, 1);
	ck_assert_int_eq(acct_ledger_report(l, &q, r), 0);
	ck_assert_int_eq(r->totals.requests, 5);
	lt_query(&q, "", "", "", now, 7);
	ck_assert_int_eq(acct_ledger_report(l, &q, r), 0);
	ck_assert_int_eq(r->totals.requests, 10);
	lt_query(&q, "user", "bob", "", now, 7);
	ck_assert_int_eq(acct_ledger_report(l, &q, r), 0);
	ck_assert_int_eq(r->totals.requests, 3);
	ck_assert_int_eq(r->totals.p50_ms, 999);
	lt_query(&q, "session", "alice", "", now, 7);
	ck_assert_int_eq(acct_ledger_report(l, &q, r), 0);
	ck_assert_int_eq(r->totals.requests, 0);
	ck_assert_uint_eq(r->ndays, 0);

	ck_assert_int_eq(
	    acct_ledger_cost_day(l, "user", "alice", today, &cost), 0);
	ck_assert_int_eq(cost, 500);
	ck_assert_int_eq(
	    acct_ledger_cost_day(l, "user", "alice", yesterday, &cost), 0);
	ck_assert_int_eq(cost, 2000);
	ck_assert_int_eq(
	    acct_ledger_cost_day(l, "user", "nobody", today, &cost), 0);
	ck_assert_int_eq(cost, 0);
	acct_ledger_free(l);
	free(r);
	au_rmtree(dir);
}
END_TEST

START_TEST(test_queue_bound_and_stop)
{
	struct msg_usage_event ev[9];
	struct acct_ledger_stats st;
	struct acct_report *r = calloc(1, sizeof(*r));
	struct acct_ledger *l;
	struct acct_query q;
	int64_t now = clock_real_ms();
	char dir[PATH_MAX], id[16];

	au_tmpdir(dir, sizeof(dir));
	l = lt_open(dir, 8);
	for (int i = 0; i < 9; i++) {
		snprintf(id, sizeof(id), "q%d", i);
		au_event(&ev[i], id, "w9:cc", i + 1, now);
	}
	/* Nothing queued when all n do not fit. */
	ck_assert_int_eq(acct_ledger_submit(l, ev, 9, NULL, NULL), -ENOBUFS);
	ck_assert_int_eq(lt_commit(l, ev, 8), 0);
	/* A clock gone wrong is recorded at the time of receipt. */
	ev[8].ts_ms = 5;
	ck_assert_int_eq(lt_commit(l, &ev[8], 1), 0);
	lt_query(&q, "", "", "", now, 1);
	ck_assert_int_eq(acct_ledger_report(l, &q, r), 0);
	ck_assert_int_eq(r->totals.requests, 9);
	acct_ledger_stats(l, &st);
	ck_assert_uint_eq(st.refused, 9);
	ck_assert_uint_eq(st.committed, 9);

	acct_ledger_stop(l);
	ck_assert_int_eq(acct_ledger_submit(l, ev, 1, NULL, NULL), -ESHUTDOWN);
	acct_ledger_stop(l);
	acct_ledger_free(l);
	free(r);
	au_rmtree(dir);
}
END_TEST

START_TEST(test_migrations)
{
	const struct acct_db_ops *ops = &acct_sqlite_ops;
	char dir[PATH_MAX], target[PATH_MAX];
	void *c = NULL;
	bool ok = true, has = true;
	int applied = -1;

	au_tmpdir(dir, sizeof(dir));
	snprintf(target, sizeof(target), "%.*s/m.db", PATH_MAX - 8, dir);
	ck_assert_uint_ge(acct_migrations_n, 2);
	ck_assert_int_eq(ops->connect(target, &c), 0);

	ck_assert_int_eq(acct_migrate_verify(ops, c, NULL, &ok), 0);
	ck_assert(!ok);
	/* Verifying changes nothing. */
	ck_assert_int_eq(
	    ops->has_object(c, ACCT_OBJ_TABLE, "schema_migrations", &has), 0);
	ck_assert(!has);

	ck_assert_int_eq(acct_migrate_up(ops, c, NULL, &applied), 0);
	ck_assert_int_eq(applied, (int)acct_migrations_n);
	ck_assert_int_eq(acct_migrate_verify(ops, c, NULL, &ok), 0);
	ck_assert(ok);
	ck_assert_int_eq(acct_migrate_up(ops, c, NULL, &applied), 0);
	ck_assert_int_eq(applied, 0);

	/* Down one step, only with yes. */
	ck_assert_int_eq(acct_migrate_rollback(ops, c, false, NULL), -EPERM);
	ck_assert_int_eq(
	    ops->has_object(c, ACCT_OBJ_TABLE, "usage_daily", &has), 0);
	ck_assert(has);
	ck_assert_int_eq(acct_migrate_rollback(ops, c, true, NULL), 0);
	ck_assert_int_eq(
	    ops->has_object(c, ACCT_OBJ_TABLE, "usage_daily", &has), 0);
	ck_assert(!has);
	ck_assert_int_eq(
	    ops->has_object(c, ACCT_OBJ_TRIGGER, "usage_events_daily", &has),
	    0);
	ck_assert(!has);
	ck_assert_int_eq(acct_migrate_verify(ops, c, NULL, &ok), 0);
	ck_assert(!ok);
	ck_assert_int_eq(acct_migrate_up(ops, c, NULL, &applied), 0);
	ck_assert_int_eq(applied, 1);
	ck_assert_int_eq(acct_migrate_verify(ops, c, NULL, &ok), 0);
	ck_assert(ok);

	/* A missing index is found. */
	ck_assert_int_eq(ops->exec(c, "DROP INDEX usage_events_day"), 0);
	ck_assert_int_eq(acct_migrate_verify(ops, c, NULL, &ok), 0);
	ck_assert(!ok);
	ck_assert_int_eq(
	    ops->exec(c, "CREATE INDEX usage_events_day ON usage_events (day)"),
	    0);
	/* A step changed since it was applied is refused. */
	ck_assert_int_eq(ops->exec(c, "UPDATE schema_migrations SET checksum "
				      "= '0000000000000000' WHERE version = 1"),
	    0);
	ck_assert_int_eq(acct_migrate_verify(ops, c, NULL, &ok), 0);
	ck_assert(!ok);
	ck_assert_int_eq(acct_migrate_up(ops, c, NULL, NULL), -EPROTO);
	ops->disconnect(c);
	au_rmtree(dir);
}
END_TEST

struct resolve_case {
	const char *url;
	int want;
	const char *backend;
	const char *target; /* NULL: not checked */
	const char *describe;
};

static const struct resolve_case resolve_cases[] = {
    {NULL, 0, "sqlite", "@/aiproxy.db", NULL},
    {"", 0, "sqlite", "@/aiproxy.db", NULL},
    {"sqlite:///var/lib/a.db", 0, "sqlite", "/var/lib/a.db",
	"sqlite:///var/lib/a.db"},
    {"sqlite://rel/a.db", 0, "sqlite", "rel/a.db", NULL},
    {"sqlite://", -EINVAL, NULL, NULL, NULL},
    {"postgresql://bob:s3cret-pw@db.example:5433/ledger", 0, "postgres", NULL,
	"postgresql://db.example:5433/ledger"},
    {"postgres://db/ledger", 0, "postgres", NULL, "postgresql://db/ledger"},
    {"mysql://x", -EINVAL, NULL, NULL, NULL},
    {"postgresql://[bad", -EINVAL, NULL, NULL, NULL},
};

START_TEST(test_resolve)
{
	const struct resolve_case *t = &resolve_cases[_i];
	const struct acct_db_ops *ops = NULL;
	char dir[PATH_MAX], target[PATH_MAX + 32], describe[512], err[256];
	char want[PATH_MAX + 32];
	int rv;

	au_tmpdir(dir, sizeof(dir));
	rv = acct_db_resolve(t->url, dir, &ops, target, sizeof(target),
	    describe, sizeof(describe), err, sizeof(err));
	ck_assert_msg(rv == t->want, "%s: %d", t->url ? t->url : "(null)", rv);
	if (rv == 0) {
		ck_assert_str_eq(ops->name, t->backend);
		if (t->target != NULL && t->target[0] == '@') {
			snprintf(
			    want, sizeof(want), "%s%s", dir, t->target + 1);
			ck_assert_str_eq(target, want);
		} else if (t->target != NULL) {
			ck_assert_str_eq(target, t->target);
		}
		if (t->describe != NULL)
			ck_assert_str_eq(describe, t->describe);
		ck_assert_ptr_null(strstr(describe, "s3cret"));
		ck_assert_ptr_null(strstr(describe, "bob"));
	} else {
		ck_assert_uint_gt(strlen(err), 0);
	}
	au_rmtree(dir);
}
END_TEST

START_TEST(test_pct_rank)
{
	ck_assert_int_eq(acct_pct_rank(0.5, 0), 0);
	ck_assert_int_eq(acct_pct_rank(0.5, 1), 1);
	ck_assert_int_eq(acct_pct_rank(0.95, 1), 1);
	ck_assert_int_eq(acct_pct_rank(0.5, 4), 2);
	ck_assert_int_eq(acct_pct_rank(0.5, 5), 3);
	ck_assert_int_eq(acct_pct_rank(0.95, 20), 19);
	ck_assert_int_eq(acct_pct_rank(0.95, 100), 95);
	ck_assert_int_eq(acct_pct_rank(0.95, 101), 96);
}
END_TEST

static Suite *
acct_ledger_suite(void)
{
	Suite *s = suite_create("acct_ledger");
	TCase *tc = tcase_create("ledger");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_committed_seq_waits_for_gaps);
	tcase_add_test(tc, test_report_and_cost_day);
	tcase_add_test(tc, test_queue_bound_and_stop);
	suite_add_tcase(s, tc);
	tc = tcase_create("migrations");
	tcase_add_test(tc, test_migrations);
	suite_add_tcase(s, tc);
	tc = tcase_create("config");
	tcase_add_loop_test(tc, test_resolve, 0,
	    (int)(sizeof(resolve_cases) / sizeof(resolve_cases[0])));
	tcase_add_test(tc, test_pct_rank);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(acct_ledger_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
