/*
 * The harness's private Redis and PostgreSQL: they start on their own
 * loopback ports, hold data, survive a PostgreSQL halt/restart, run side by
 * side, and are gone (process and folder) after *_stop().
 */
#include "harness.h"

#include <check.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool
path_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* ---- redis helpers ---- */

static redisContext *
redis_connect(int port)
{
	struct timeval tv = {2, 0};
	redisContext *c;

	c = redisConnectWithTimeout("127.0.0.1", port, tv);
	ck_assert_ptr_nonnull(c);
	ck_assert_msg(c->err == 0, "redis connect to %d: %s", port, c->errstr);
	ck_assert_int_eq(redisSetTimeout(c, tv), REDIS_OK);
	return c;
}

static void
redis_set(redisContext *c, const char *key, const char *value)
{
	redisReply *reply;

	reply = redisCommand(c, "SET %s %s", key, value);
	ck_assert_ptr_nonnull(reply);
	ck_assert_int_eq(reply->type, REDIS_REPLY_STATUS);
	ck_assert_str_eq(reply->str, "OK");
	freeReplyObject(reply);
}

/* Caller frees.  NULL when the key does not exist. */
static char *
redis_get(redisContext *c, const char *key)
{
	redisReply *reply;
	char *value = NULL;

	reply = redisCommand(c, "GET %s", key);
	ck_assert_ptr_nonnull(reply);
	if (reply->type == REDIS_REPLY_STRING) {
		value = strdup(reply->str);
		ck_assert_ptr_nonnull(value);
	} else {
		ck_assert_int_eq(reply->type, REDIS_REPLY_NIL);
	}
	freeReplyObject(reply);
	return value;
}

static bool
redis_reachable(int port)
{
	struct timeval tv = {1, 0};
	redisContext *c;
	bool ok;

	c = redisConnectWithTimeout("127.0.0.1", port, tv);
	if (c == NULL)
		return false;
	ok = c->err == 0;
	redisFree(c);
	return ok;
}

/* ---- postgres helpers ---- */

static PGconn *
pg_connect(const char *url)
{
	PGconn *conn = PQconnectdb(url);

	ck_assert_ptr_nonnull(conn);
	ck_assert_msg(PQstatus(conn) == CONNECTION_OK, "connect %s: %s", url,
	    PQerrorMessage(conn));
	return conn;
}

static void
pg_exec_ok(PGconn *conn, const char *sql)
{
	PGresult *res = PQexec(conn, sql);
	ExecStatusType st = PQresultStatus(res);

	ck_assert_msg(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s",
	    sql, PQerrorMessage(conn));
	PQclear(res);
}

/* The single text value a query returns; caller frees. */
static char *
pg_scalar(PGconn *conn, const char *sql)
{
	PGresult *res = PQexec(conn, sql);
	char *value;

	ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", sql,
	    PQerrorMessage(conn));
	ck_assert_int_eq(PQntuples(res), 1);
	ck_assert_int_eq(PQnfields(res), 1);
	value = strdup(PQgetvalue(res, 0, 0));
	ck_assert_ptr_nonnull(value);
	PQclear(res);
	return value;
}

/* ---- tests ---- */

START_TEST(redis_set_get_and_stop)
{
	struct h_redis r;
	redisContext *c;
	char expect_url[64], *dir, *v;
	int port;

	ck_assert_int_eq(h_redis_start(&r), 0);
	ck_assert_int_gt(r.port, 0);
	snprintf(
	    expect_url, sizeof(expect_url), "redis://127.0.0.1:%d", r.port);
	ck_assert_str_eq(r.url, expect_url);
	ck_assert_ptr_nonnull(r.dir);
	ck_assert(path_exists(r.dir));
	ck_assert(h_proc_alive(&r.proc));

	c = redis_connect(r.port);
	redis_set(c, "aiproxy:test", "hello world");
	v = redis_get(c, "aiproxy:test");
	ck_assert_ptr_nonnull(v);
	ck_assert_str_eq(v, "hello world");
	free(v);
	ck_assert_ptr_null(redis_get(c, "aiproxy:missing"));
	redisFree(c);

	port = r.port;
	dir = strdup(r.dir);
	ck_assert_ptr_nonnull(dir);
	h_redis_stop(&r);
	ck_assert(!redis_reachable(port));
	ck_assert(!path_exists(dir));
	ck_assert_ptr_null(r.dir);
	free(dir);
	/* A second stop is harmless. */
	h_redis_stop(&r);
}
END_TEST

START_TEST(pg_data_survives_halt_and_restart)
{
	struct h_pg pg;
	PGconn *conn;
	char expect_url[256], *dir, *v;
	int port;

	ck_assert_int_eq(h_pg_start(&pg), 0);
	ck_assert_int_gt(pg.port, 0);
	snprintf(expect_url, sizeof(expect_url),
	    "postgresql://aiproxy@127.0.0.1:%d/aiproxy", pg.port);
	ck_assert_str_eq(pg.url, expect_url);
	ck_assert(path_exists(pg.dir));

	conn = pg_connect(pg.url);
	v = pg_scalar(conn, "SELECT current_database()");
	ck_assert_str_eq(v, "aiproxy");
	free(v);
	pg_exec_ok(conn, "CREATE TABLE t (id integer PRIMARY KEY, note text)");
	pg_exec_ok(conn, "INSERT INTO t VALUES (1, 'kept'), (2, 'also')");
	PQfinish(conn);

	port = pg.port;
	ck_assert_int_eq(h_pg_halt(&pg), 0);
	ck_assert_int_eq(PQping(pg.url), PQPING_NO_RESPONSE);
	ck_assert(path_exists(pg.dir));

	ck_assert_int_eq(h_pg_restart(&pg), 0);
	ck_assert_int_eq(pg.port, port);
	ck_assert_int_eq(PQping(pg.url), PQPING_OK);
	conn = pg_connect(pg.url);
	v = pg_scalar(conn, "SELECT note FROM t WHERE id = 1");
	ck_assert_str_eq(v, "kept");
	free(v);
	v = pg_scalar(conn, "SELECT count(*) FROM t");
	ck_assert_str_eq(v, "2");
	free(v);
	PQfinish(conn);

	dir = strdup(pg.dir);
	ck_assert_ptr_nonnull(dir);
	h_pg_stop(&pg);
	ck_assert_int_eq(PQping(expect_url), PQPING_NO_RESPONSE);
	ck_assert(!path_exists(dir));
	free(dir);
	h_pg_stop(&pg);
}
END_TEST

START_TEST(two_instances_side_by_side)
{
	struct h_redis r1, r2;
	struct h_pg p1, p2;
	redisContext *c1, *c2;
	PGconn *k1, *k2;
	char *v;

	ck_assert_int_eq(h_redis_start(&r1), 0);
	ck_assert_int_eq(h_redis_start(&r2), 0);
	ck_assert_int_ne(r1.port, r2.port);
	ck_assert_str_ne(r1.dir, r2.dir);
	c1 = redis_connect(r1.port);
	c2 = redis_connect(r2.port);
	redis_set(c1, "k", "one");
	redis_set(c2, "k", "two");
	redis_set(c1, "only1", "x");
	v = redis_get(c1, "k");
	ck_assert_str_eq(v, "one");
	free(v);
	v = redis_get(c2, "k");
	ck_assert_str_eq(v, "two");
	free(v);
	ck_assert_ptr_null(redis_get(c2, "only1"));
	redisFree(c1);
	redisFree(c2);

	ck_assert_int_eq(h_pg_start(&p1), 0);
	ck_assert_int_eq(h_pg_start(&p2), 0);
	ck_assert_int_ne(p1.port, p2.port);
	ck_assert_str_ne(p1.url, p2.url);
	k1 = pg_connect(p1.url);
	k2 = pg_connect(p2.url);
	pg_exec_ok(k1, "CREATE TABLE only_in_one (x integer)");
	v = pg_scalar(k1, "SELECT to_regclass('only_in_one') IS NOT NULL");
	ck_assert_str_eq(v, "t");
	free(v);
	v = pg_scalar(k2, "SELECT to_regclass('only_in_one') IS NOT NULL");
	ck_assert_str_eq(v, "f");
	free(v);
	PQfinish(k1);

	/* Stopping one leaves the other serving. */
	h_pg_stop(&p1);
	h_redis_stop(&r1);
	v = pg_scalar(k2, "SELECT 40 + 2");
	ck_assert_str_eq(v, "42");
	free(v);
	PQfinish(k2);
	c2 = redis_connect(r2.port);
	v = redis_get(c2, "k");
	ck_assert_str_eq(v, "two");
	free(v);
	redisFree(c2);

	h_pg_stop(&p2);
	h_redis_stop(&r2);
}
END_TEST

static Suite *
harness_db_suite(void)
{
	Suite *s = suite_create("harness_db");
	TCase *tc = tcase_create("services");

	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, redis_set_get_and_stop);
	tcase_add_test(tc, pg_data_survives_halt_and_restart);
	tcase_add_test(tc, two_instances_side_by_side);
	suite_add_tcase(s, tc);
	return s;
}

/*
 * A failed check aborts its test before *_stop() runs; the servers die with
 * the test process (PR_SET_PDEATHSIG) and their folders live under a
 * per-run TMPDIR that is removed here.  0711: the postgres user must be
 * able to reach its folder inside when the test runs as root.
 */
int
main(void)
{
	char root[] = "/tmp/aiproxy-harness-db-XXXXXX";
	SRunner *sr;
	int failed;

	if (mkdtemp(root) == NULL || chmod(root, 0711) != 0 ||
	    setenv("TMPDIR", root, 1) != 0) {
		perror("harness_db_test: temporary folder");
		return EXIT_FAILURE;
	}
	sr = srunner_create(harness_db_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	h_rmtree(root);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
