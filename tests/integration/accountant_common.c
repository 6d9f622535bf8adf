/*
 * Shared by the accountant's integration tests; see accountant_common.h.
 */
#include "accountant_common.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include "clock.h"
#include "nngx.h"

#define AIT_READY_MS   20000 /* start-up, generous for sanitizer builds */
#define AIT_STOP_MS    10000
#define AIT_CALL_MS    5000
#define AIT_SYNC_MS    250
#define AIT_DAY_MS     86400000LL
#define AIT_ENV_MAX    8
#define AIT_ENV_LEN    (PATH_MAX + 64)
#define AIT_MIGRATE_MS 60000

static char ait_root[PATH_MAX];
static struct h_pg ait_pg_srv;
static bool ait_pg_up;
static struct model_table *ait_model_table;
static int ait_dirs;

int64_t
ait_now_ms(void)
{
	return clock_mono_ms();
}

void
ait_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ---- suite ---- */

bool
ait_suite_init(bool with_pg)
{
	int n, rv;

	n = snprintf(ait_root, sizeof(ait_root), "/tmp/aiproxy-acct-it-XXXXXX");
	if (n < 0 || mkdtemp(ait_root) == NULL || chmod(ait_root, 0711) != 0 ||
	    setenv("TMPDIR", ait_root, 1) != 0) {
		perror("accountant tests: temporary folder");
		return false;
	}
	if (with_pg) {
		if ((rv = h_pg_start(&ait_pg_srv)) != 0) {
			fprintf(stderr, "accountant tests: PostgreSQL: %s\n",
			    strerror(-rv));
			return false;
		}
		ait_pg_up = true;
	}
	return true;
}

void
ait_suite_fini(void)
{
	if (ait_pg_up)
		h_pg_stop(&ait_pg_srv);
	ait_pg_up = false;
	models_free(ait_model_table);
	ait_model_table = NULL;
	if (ait_root[0] != '\0' && getenv("AIPROXY_KEEP_LOGS") == NULL)
		h_rmtree(ait_root);
}

struct h_pg *
ait_pg(void)
{
	return ait_pg_up ? &ait_pg_srv : NULL;
}

void
ait_test_dir(char *out, size_t len, const char *name)
{
	int n = snprintf(
	    out, len, "%s/%s-%d-%d", ait_root, name, (int)getpid(), ait_dirs++);

	ck_assert_int_lt(n, (int)len);
	ck_assert_int_eq(mkdir(out, 0711), 0);
}

/* ---- direct SQL ---- */

void
ait_db_open(struct ait_db *d, bool pg, const char *dir, const char *name)
{
	char sql[256];
	PGconn *admin;
	PGresult *res;
	const char *slash;
	int n;

	memset(d, 0, sizeof(*d));
	d->pg = pg;
	if (!pg) {
		n = snprintf(d->path, sizeof(d->path), "%s/%s.db", dir, name);
		ck_assert_int_lt(n, (int)sizeof(d->path));
		snprintf(d->url, sizeof(d->url), "sqlite://%s", d->path);
		return;
	}
	ck_assert_msg(ait_pg_up, "no PostgreSQL in this suite");
	/* Test names are ours: [a-z0-9_] only. */
	for (const char *p = name; *p != '\0'; p++)
		ck_assert((*p >= 'a' && *p <= 'z') ||
			  (*p >= '0' && *p <= '9') || *p == '_');
	admin = PQconnectdb(ait_pg_srv.url);
	ck_assert_int_eq(PQstatus(admin), CONNECTION_OK);
	snprintf(
	    sql, sizeof(sql), "CREATE DATABASE t_%s_%d", name, (int)getpid());
	res = PQexec(admin, sql);
	ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s: %s", sql,
	    PQerrorMessage(admin));
	PQclear(res);
	PQfinish(admin);
	slash = strrchr(ait_pg_srv.url, '/');
	ck_assert_ptr_nonnull(slash);
	n = snprintf(d->url, sizeof(d->url), "%.*s/t_%s_%d",
	    (int)(slash - ait_pg_srv.url), ait_pg_srv.url, name, (int)getpid());
	ck_assert_int_lt(n, (int)sizeof(d->url));
}

void
ait_db_close(struct ait_db *d)
{
	if (d->conn == NULL)
		return;
	if (d->pg)
		PQfinish(d->conn);
	else
		sqlite3_close_v2(d->conn);
	d->conn = NULL;
}

static void
ait_db_connect(struct ait_db *d)
{
	sqlite3 *db = NULL;

	if (d->conn != NULL) {
		if (!d->pg || PQstatus(d->conn) == CONNECTION_OK)
			return;
		PQfinish(d->conn); /* the server was restarted */
		d->conn = NULL;
	}
	if (d->pg) {
		d->conn = PQconnectdb(d->url);
		ck_assert_msg(PQstatus(d->conn) == CONNECTION_OK, "%s",
		    PQerrorMessage(d->conn));
		return;
	}
	ck_assert_int_eq(
	    sqlite3_open_v2(d->path, &db, SQLITE_OPEN_READWRITE, NULL),
	    SQLITE_OK);
	sqlite3_busy_timeout(db, 10000);
	d->conn = db;
}

void
ait_db_rows(struct ait_db *d, const char *sql, int n, const char *const *params,
    ait_row_fn fn, void *arg)
{
	const char *vals[32];
	sqlite3_stmt *s;
	PGresult *res;
	int rc, cols;

	ait_db_connect(d);
	if (d->pg) {
		res =
		    PQexecParams(d->conn, sql, n, NULL, params, NULL, NULL, 0);
		ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s",
		    sql, PQerrorMessage(d->conn));
		cols = PQnfields(res);
		ck_assert_int_le(cols, 32);
		for (int r = 0; r < PQntuples(res); r++) {
			for (int c = 0; c < cols; c++)
				vals[c] = PQgetisnull(res, r, c)
					      ? NULL
					      : PQgetvalue(res, r, c);
			fn(arg, cols, vals);
		}
		PQclear(res);
		return;
	}
	rc = sqlite3_prepare_v2(d->conn, sql, -1, &s, NULL);
	ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(d->conn));
	for (int i = 0; i < n; i++)
		sqlite3_bind_text(s, i + 1, params[i], -1, SQLITE_STATIC);
	cols = sqlite3_column_count(s);
	ck_assert_int_le(cols, 32);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		for (int c = 0; c < cols; c++)
			vals[c] = (const char *)sqlite3_column_text(s, c);
		fn(arg, cols, vals);
	}
	ck_assert_msg(
	    rc == SQLITE_DONE, "%s: %s", sql, sqlite3_errmsg(d->conn));
	sqlite3_finalize(s);
}

struct ait_one {
	int64_t v;
	int rows;
};

static void
ait_one_row(void *arg, int ncols, const char *const *vals)
{
	struct ait_one *o = arg;

	ck_assert_int_ge(ncols, 1);
	o->rows++;
	o->v = vals[0] != NULL ? strtoll(vals[0], NULL, 10) : 0;
}

int64_t
ait_db_int(struct ait_db *d, const char *sql, int n, const char *const *params)
{
	struct ait_one o = {0, 0};

	ait_db_rows(d, sql, n, params, ait_one_row, &o);
	ck_assert_msg(o.rows <= 1, "%s: %d rows", sql, o.rows);
	return o.v;
}

/* ---- the accountant ---- */

static void
ait_tcp_url(char *out, size_t len)
{
	int port = h_free_port();

	ck_assert_int_gt(port, 0);
	snprintf(out, len, "tcp://127.0.0.1:%d", port);
}

int
ait_call(const char *url, enum msg_type t, const void *m, enum msg_type want,
    union proto_msg *ret, char **ret_buf)
{
	enum msg_type got = MSG_NONE;
	char *req = NULL, *out = NULL;
	size_t len, out_len;
	int rv;

	if ((rv = proto_msg_encode(t, m, &req, &len)) != 0)
		return rv;
	rv = nngx_call(url, req, len, AIT_CALL_MS, &out, &out_len);
	free(req);
	if (rv != 0)
		return rv;
	if ((rv = proto_peek_type(out, out_len, &got)) == 0 && got != want)
		rv = -EPROTO;
	if (rv == 0)
		rv = proto_msg_decode(want, out, out_len, ret);
	if (rv != 0) {
		free(out);
		return rv;
	}
	*ret_buf = out;
	return 0;
}

static void
ait_dump_log(const struct ait_acct *a)
{
	size_t len = 0;
	char *text = h_read_file(a->log, &len);

	fprintf(stderr, "---- accountant log %s ----\n", a->log);
	if (text != NULL) {
		/* The tail is what explains a failure. */
		size_t from = len > 8000 ? len - 8000 : 0;

		fwrite(text + from, 1, len - from, stderr);
	}
	fprintf(stderr, "---- end ----\n");
	free(text);
}

static void
ait_wait_pong(struct ait_acct *a)
{
	struct msg_ping ping = {.request_id = "ait-ping", .ts_us = 1};
	int64_t deadline = ait_now_ms() + AIT_READY_MS;
	union proto_msg r;
	char *buf;

	for (;;) {
		if (ait_call(a->rep_url, MSG_PING, &ping, MSG_PONG, &r, &buf) ==
		    0) {
			free(buf);
			ck_assert_str_eq(r.pong.daemon, "accountant");
			return;
		}
		if (!h_proc_alive(&a->proc) || ait_now_ms() > deadline) {
			ait_dump_log(a);
			ck_abort_msg("the accountant did not answer a ping");
		}
		ait_sleep_ms(50);
	}
}

void
ait_acct_restart(struct ait_acct *a)
{
	char env_s[AIT_ENV_MAX][AIT_ENV_LEN];
	char *env[AIT_ENV_MAX + 1];
	char *argv[] = {a->bin, NULL};
	int n = 0;

	snprintf(
	    env_s[n++], AIT_ENV_LEN, "AI_PROXY_ACCOUNTANT_URL=%s", a->rep_url);
	snprintf(
	    env_s[n++], AIT_ENV_LEN, "AI_PROXY_USAGE_URL=%s", a->usage_url);
	snprintf(env_s[n++], AIT_ENV_LEN, "AI_PROXY_STATE_DIR=%.*s/state",
	    PATH_MAX, a->dir);
	snprintf(
	    env_s[n++], AIT_ENV_LEN, "DATABASE_URL=%.*s", PATH_MAX, a->db_url);
	snprintf(env_s[n++], AIT_ENV_LEN, "LOG_LEVEL=info");
	for (int i = 0; i < n; i++)
		env[i] = env_s[i];
	env[n] = NULL;
	ck_assert_int_eq(
	    h_proc_start(&a->proc, "accountant", argv, env, a->log, NULL), 0);
	a->running = true;
	a->starts++;
	ait_wait_pong(a);
}

void
ait_acct_start(struct ait_acct *a, const char *dir, const char *db_url)
{
	char *bin;

	memset(a, 0, sizeof(*a));
	bin = h_bin_path("aiproxy-accountant");
	ck_assert_msg(bin != NULL, "aiproxy-accountant is not built");
	snprintf(a->bin, sizeof(a->bin), "%s", bin);
	free(bin);
	snprintf(a->dir, sizeof(a->dir), "%s", dir);
	snprintf(
	    a->log, sizeof(a->log), "%.*s/accountant.log", PATH_MAX - 20, dir);
	snprintf(a->db_url, sizeof(a->db_url), "%s", db_url);
	ait_tcp_url(a->rep_url, sizeof(a->rep_url));
	ait_tcp_url(a->usage_url, sizeof(a->usage_url));
	ait_acct_restart(a);
}

void
ait_acct_stop(struct ait_acct *a, int sig)
{
	int status;

	if (!a->running)
		return;
	status = h_proc_stop(&a->proc, sig, AIT_STOP_MS);
	a->running = false;
	if (sig == SIGTERM &&
	    !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
		ait_dump_log(a);
		ck_abort_msg("the accountant did not stop cleanly: %d", status);
	}
}

int
ait_migrate(const char *dir, const char *db_url, const char *const *args,
    char **ret_out)
{
	static int runs;
	char env_s[2][AIT_ENV_LEN], *env[3], log[PATH_MAX];
	char *argv[8], arg_s[8][32];
	struct hproc p;
	char *bin;
	int n = 0, status;

	bin = h_bin_path("aiproxy-migrate");
	ck_assert_msg(bin != NULL, "aiproxy-migrate is not built");
	argv[n++] = bin;
	for (int i = 0; args[i] != NULL && n < 7; i++, n++) {
		snprintf(arg_s[n], sizeof(arg_s[n]), "%s", args[i]);
		argv[n] = arg_s[n];
	}
	argv[n] = NULL;
	snprintf(env_s[0], AIT_ENV_LEN, "DATABASE_URL=%.*s", PATH_MAX, db_url);
	snprintf(env_s[1], AIT_ENV_LEN, "AI_PROXY_STATE_DIR=%.*s/state",
	    PATH_MAX, dir);
	env[0] = env_s[0];
	env[1] = env_s[1];
	env[2] = NULL;
	snprintf(log, sizeof(log), "%.*s/migrate-%d.out", PATH_MAX - 32, dir,
	    runs++);
	memset(&p, 0, sizeof(p));
	ck_assert_int_eq(h_proc_start(&p, "migrate", argv, env, log, NULL), 0);
	status = h_proc_stop(&p, 0, AIT_MIGRATE_MS);
	free(bin);
	*ret_out = h_read_file(log, NULL);
	ck_assert_ptr_nonnull(*ret_out);
	ck_assert_msg(WIFEXITED(status), "aiproxy-migrate did not exit");
	return WEXITSTATUS(status);
}

/* ---- the worker side ---- */

struct usage_sender *
ait_sender_open(
    const struct ait_acct *a, const char *dir, const char *worker_id)
{
	return ait_sender_open_sized(a, dir, worker_id, 0, 256 * 1024);
}

struct usage_sender *
ait_sender_open_sized(const struct ait_acct *a, const char *dir,
    const char *worker_id, uint64_t max_bytes, size_t segment_bytes)
{
	struct usage_sender_cfg c;
	struct usage_sender *s = NULL;
	char state[PATH_MAX];

	snprintf(state, sizeof(state), "%.*s/worker", PATH_MAX - 10, dir);
	memset(&c, 0, sizeof(c));
	c.state_dir = state;
	c.worker_id = worker_id;
	c.usage_url = a->usage_url;
	c.accountant_url = a->rep_url;
	c.sync_interval_ms = AIT_SYNC_MS;
	c.call_timeout_ms = 3000;
	c.journal_max_bytes = max_bytes;
	c.segment_bytes = segment_bytes;
	ck_assert_int_eq(usage_sender_open(&c, &s), 0);
	return s;
}

void
ait_sender_drain(struct usage_sender *s, int64_t want, int timeout_ms)
{
	int64_t deadline = ait_now_ms() + timeout_ms;
	struct usage_sender_stats st;

	for (;;) {
		usage_sender_stats(s, &st);
		if (st.last_seq == want && st.committed_seq == want)
			return;
		ck_assert_msg(ait_now_ms() < deadline,
		    "not drained: last_seq %lld committed %lld (want %lld), "
		    "syncs %llu failed %llu resent %llu",
		    (long long)st.last_seq, (long long)st.committed_seq,
		    (long long)want, (unsigned long long)st.syncs,
		    (unsigned long long)st.sync_failures,
		    (unsigned long long)st.resent);
		usage_sender_kick(s);
		ait_sleep_ms(50);
	}
}

static void
ait_models_load(void)
{
	char path[PATH_MAX], err[256];

	snprintf(path, sizeof(path), "%s/config/models.json", h_source_dir());
	if (models_load(path, &ait_model_table, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s: %s\n", path, err);
		ait_model_table = NULL;
	}
}

const struct model_table *
ait_models(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, ait_models_load);
	ck_assert_msg(ait_model_table != NULL, "no model table");
	return ait_model_table;
}

void
ait_event(struct msg_usage_event *ev, int64_t i, const char *subject_id,
    int64_t ts_ms)
{
	const struct model_table *t = ait_models();
	const struct model *m = models_at(t, (size_t)i % models_count(t));
	struct model_usage u;

	memset(ev, 0, sizeof(*ev));
	snprintf(ev->request_id, sizeof(ev->request_id), "req-%" PRId64, i);
	ev->ts_ms = ts_ms;
	snprintf(ev->subject_type, sizeof(ev->subject_type), "user");
	snprintf(ev->subject_id, sizeof(ev->subject_id), "%s", subject_id);
	snprintf(ev->ip, sizeof(ev->ip), "10.0.0.%d", (int)(i % 250));
	snprintf(ev->provider, sizeof(ev->provider), "%s", m->provider);
	snprintf(ev->model, sizeof(ev->model), "%s", m->id);
	memset(&u, 0, sizeof(u));
	u.input = 50 + (i * 37) % 1000;
	u.output = 10 + (i * 91) % 500;
	u.cache_read = i % 3 == 0 ? (i * 13) % 700 : 0;
	u.cache_write_5m = i % 5 == 0 ? (i * 7) % 300 : 0;
	ev->input_tokens = u.input;
	ev->output_tokens = u.output;
	ev->cache_read_tokens = u.cache_read;
	ev->cache_write_tokens = u.cache_write_5m;
	ev->cost_micro_usd = models_cost(m, &u);
	ev->cached = i % 7 == 0;
	snprintf(ev->status, sizeof(ev->status), "%s",
	    i % 10 == 0   ? "error"
	    : i % 17 == 0 ? "aborted"
			  : "ok");
	ev->http_status = i % 10 == 0 ? 502 : 200;
	ev->total_ms = 20 + (i * 53) % 900;
	ev->upstream_ms = ev->total_ms - 5;
}

/* ---- bodies ---- */

struct ait_cost_check {
	int rows;
	int64_t sum;
};

/* model, input, output, cache_read, cache_write, cost */
static void
ait_cost_row(void *arg, int ncols, const char *const *v)
{
	struct ait_cost_check *c = arg;
	const struct model *m;
	struct model_usage u;
	int64_t cost;

	ck_assert_int_eq(ncols, 6);
	m = models_lookup(ait_models(), v[0]);
	ck_assert_msg(m != NULL, "row with unknown model %s", v[0]);
	memset(&u, 0, sizeof(u));
	u.input = strtoll(v[1], NULL, 10);
	u.output = strtoll(v[2], NULL, 10);
	u.cache_read = strtoll(v[3], NULL, 10);
	u.cache_write_5m = strtoll(v[4], NULL, 10);
	cost = strtoll(v[5], NULL, 10);
	ck_assert_msg(cost == models_cost(m, &u), "%s: cost %lld, formula %lld",
	    v[0], (long long)cost, (long long)models_cost(m, &u));
	c->rows++;
	c->sum += cost;
}

void
ait_body_exact_costs(bool pg)
{
	struct msg_usage_event ev;
	struct ait_cost_check chk = {0, 0};
	struct usage_sender *s;
	struct ait_acct a;
	struct ait_db d;
	const char *p[1];
	char dir[PATH_MAX];
	int64_t expect = 0, now = clock_real_ms();
	const int n = 300;

	ait_test_dir(dir, sizeof(dir), "costs");
	ait_db_open(&d, pg, dir, "costs");
	ait_acct_start(&a, dir, d.url);
	s = ait_sender_open(&a, dir, "w1");
	/* The first half one by one, the rest in batches of 7 (one
	 * fdatasync each), as the worker's emitters send them. */
	for (int i = 1; i <= n / 2; i++) {
		ait_event(&ev, i, i % 2 ? "alice" : "bob", now);
		ck_assert_int_eq(usage_sender_emit(s, &ev), 0);
		expect += ev.cost_micro_usd;
	}
	for (int i = n / 2 + 1; i <= n; i += 7) {
		struct msg_usage_event evs[7];
		const struct msg_usage_event *pe[7];
		size_t k = 0;

		for (; k < 7 && i + (int)k <= n; k++) {
			ait_event(&evs[k], i + (int)k,
			    (i + (int)k) % 2 ? "alice" : "bob", now);
			pe[k] = &evs[k];
			expect += evs[k].cost_micro_usd;
		}
		ck_assert_int_eq(usage_sender_emit_many(s, pe, k), 0);
	}
	ait_sender_drain(s, n, 30000);

	ck_assert_int_eq(
	    ait_db_int(&d, "SELECT COUNT(*) FROM usage_events", 0, NULL), n);
	ck_assert_int_eq(ait_db_int(&d,
			     "SELECT COUNT(DISTINCT event_id) FROM "
			     "usage_events",
			     0, NULL),
	    n);
	ait_db_rows(&d,
	    "SELECT model, input_tokens, output_tokens, cache_read_tokens, "
	    "cache_write_tokens, cost_micro_usd FROM usage_events",
	    0, NULL, ait_cost_row, &chk);
	ck_assert_int_eq(chk.rows, n);
	ck_assert_int_eq(chk.sum, expect);
	/* The roll-ups agree, and the journal's mark is the last event. */
	ck_assert_int_eq(
	    ait_db_int(&d, "SELECT SUM(requests) FROM usage_daily", 0, NULL),
	    n);
	ck_assert_int_eq(
	    ait_db_int(
		&d, "SELECT SUM(cost_micro_usd) FROM usage_daily", 0, NULL),
	    expect);
	p[0] = usage_sender_stream(s);
	ck_assert_int_eq(ait_db_int(&d,
			     "SELECT committed_seq FROM usage_streams WHERE "
			     "worker_id = $1",
			     1, p),
	    n);
	usage_sender_close(s);
	ait_acct_stop(&a, SIGTERM);
	ait_db_close(&d);
}

struct ait_load {
	struct usage_sender *s;
	int first, count, pace_ms;
	int64_t cost;
	atomic_int *done;
	int failures;
};

static void *
ait_load_main(void *arg)
{
	struct ait_load *l = arg;
	struct msg_usage_event ev;

	for (int i = l->first; i < l->first + l->count; i++) {
		ait_event(&ev, i, i % 3 ? "alice" : "carol", clock_real_ms());
		if (usage_sender_emit(l->s, &ev) != 0)
			l->failures++;
		else
			l->cost += ev.cost_micro_usd;
		if (l->pace_ms > 0)
			ait_sleep_ms(l->pace_ms);
	}
	atomic_fetch_add(l->done, 1);
	return NULL;
}

/* nthreads threads emitting total events, each pausing pace_ms between
 * events.  Returns when all are started. */
static void
ait_load_start(struct ait_load *l, pthread_t *th, int nthreads,
    struct usage_sender *s, int total, int pace_ms, atomic_int *done)
{
	for (int t = 0; t < nthreads; t++) {
		l[t].s = s;
		l[t].first = 1 + t * (total / nthreads);
		l[t].count = total / nthreads;
		l[t].pace_ms = pace_ms;
		l[t].done = done;
		ck_assert_int_eq(
		    pthread_create(&th[t], NULL, ait_load_main, &l[t]), 0);
	}
}

/* Joins the load threads; their events' total cost. */
static int64_t
ait_load_join(struct ait_load *l, pthread_t *th, int nthreads)
{
	int64_t cost = 0;

	for (int t = 0; t < nthreads; t++) {
		pthread_join(th[t], NULL);
		ck_assert_int_eq(l[t].failures, 0);
		cost += l[t].cost;
	}
	return cost;
}

/* Every event of the load is in the database once. */
static void
ait_check_exactly(struct ait_db *d, struct usage_sender *s, int n, int64_t cost)
{
	const char *p[1] = {usage_sender_stream(s)};

	ck_assert_int_eq(
	    ait_db_int(d, "SELECT COUNT(*) FROM usage_events", 0, NULL), n);
	ck_assert_int_eq(ait_db_int(d,
			     "SELECT COUNT(DISTINCT event_id) FROM "
			     "usage_events",
			     0, NULL),
	    n);
	ck_assert_int_eq(ait_db_int(d,
			     "SELECT COUNT(DISTINCT seq) FROM usage_events "
			     "WHERE worker_id = $1",
			     1, p),
	    n);
	ck_assert_int_eq(ait_db_int(d,
			     "SELECT MIN(seq) FROM usage_events WHERE "
			     "worker_id = $1",
			     1, p),
	    1);
	ck_assert_int_eq(ait_db_int(d,
			     "SELECT MAX(seq) FROM usage_events WHERE "
			     "worker_id = $1",
			     1, p),
	    n);
	ck_assert_int_eq(
	    ait_db_int(
		d, "SELECT SUM(cost_micro_usd) FROM usage_events", 0, NULL),
	    cost);
	ck_assert_int_eq(
	    ait_db_int(d, "SELECT SUM(requests) FROM usage_daily", 0, NULL), n);
	ck_assert_int_eq(
	    ait_db_int(
		d, "SELECT SUM(cost_micro_usd) FROM usage_daily", 0, NULL),
	    cost);
}

#define AIT_KILL_EVENTS  5000
#define AIT_KILL_THREADS 4
#define AIT_KILL_EVERY   2000

void
ait_body_sigkill(bool pg)
{
	struct ait_load l[AIT_KILL_THREADS];
	pthread_t th[AIT_KILL_THREADS];
	struct usage_sender_stats st;
	struct usage_sender *s;
	atomic_int done = 0;
	struct ait_acct a;
	struct ait_db d;
	char dir[PATH_MAX];
	int64_t cost, t0;
	int kills = 0;

	memset(l, 0, sizeof(l));
	ait_test_dir(dir, sizeof(dir), "sigkill");
	ait_db_open(&d, pg, dir, "sigkill");
	ait_acct_start(&a, dir, d.url);
	s = ait_sender_open(&a, dir, "w1");
	/* About 10 s of load: 4 x 1250 events, 8 ms apart. */
	t0 = ait_now_ms();
	ait_load_start(l, th, AIT_KILL_THREADS, s, AIT_KILL_EVENTS, 8, &done);
	while (atomic_load(&done) < AIT_KILL_THREADS) {
		/* The pace of the kills, not a wait for something. */
		ait_sleep_ms(AIT_KILL_EVERY);
		if (atomic_load(&done) == AIT_KILL_THREADS)
			break;
		ait_acct_stop(&a, SIGKILL);
		kills++;
		ait_acct_restart(&a);
	}
	cost = ait_load_join(l, th, AIT_KILL_THREADS);
	fprintf(stderr, "sigkill (%s): %d kills during %lld ms of load\n",
	    pg ? "postgres" : "sqlite", kills, (long long)(ait_now_ms() - t0));
	ck_assert_int_ge(kills, 3);
	ait_sender_drain(s, AIT_KILL_EVENTS, 90000);
	usage_sender_stats(s, &st);
	fprintf(stderr,
	    "sigkill (%s): published %llu, re-sent %llu, syncs %llu (%llu "
	    "unanswered)\n",
	    pg ? "postgres" : "sqlite", (unsigned long long)st.published,
	    (unsigned long long)st.resent, (unsigned long long)st.syncs,
	    (unsigned long long)st.sync_failures);
	ait_check_exactly(&d, s, AIT_KILL_EVENTS, cost);
	/* Catch-up trimmed the journal down to its last segment. */
	ck_assert_int_gt(st.first_seq, 1);
	usage_sender_close(s);
	ait_acct_stop(&a, SIGTERM);
	ait_db_close(&d);
}

static bool
ait_has(const char *out, const char *needle)
{
	return out != NULL && strstr(out, needle) != NULL;
}

void
ait_body_migrations(bool pg)
{
	static const char *const verify[] = {"--verify-only", NULL};
	static const char *const up[] = {NULL};
	static const char *const rollback[] = {"--rollback", NULL};
	static const char *const rollback_yes[] = {"--rollback", "--yes", NULL};
	static const char *const bad[] = {"--yes", NULL};
	struct ait_acct a;
	struct ait_db d;
	char dir[PATH_MAX], *out;

	ait_test_dir(dir, sizeof(dir), "migrations");
	ait_db_open(&d, pg, dir, "migrations");

	/* Fresh: everything pending, not up to date, nothing created. */
	ck_assert_int_eq(ait_migrate(dir, d.url, verify, &out), 1);
	ck_assert_msg(ait_has(out, "pending  0001 usage_events") &&
			  ait_has(out, "pending  0002 usage_daily") &&
			  ait_has(out, "NOT up to date"),
	    "%s", out);
	free(out);
	ck_assert_int_eq(ait_migrate(dir, d.url, bad, &out), 1);
	free(out);

	/* Up: every step, then verify checks the objects. */
	ck_assert_int_eq(ait_migrate(dir, d.url, up, &out), 0);
	ck_assert_msg(ait_has(out, "applied  0001 usage_events") &&
			  ait_has(out, "applied  0002 usage_daily"),
	    "%s", out);
	free(out);
	ck_assert_int_eq(ait_migrate(dir, d.url, verify, &out), 0);
	ck_assert_msg(ait_has(out, "index   usage_events_worker_seq: ok") &&
			  ait_has(out, "table   usage_daily: ok") &&
			  ait_has(out, ": up to date"),
	    "%s", out);
	free(out);
	ck_assert_int_eq(ait_migrate(dir, d.url, up, &out), 0);
	ck_assert_msg(ait_has(out, "up to date"), "%s", out);
	free(out);

	/* Down one step, only with --yes. */
	ck_assert_int_eq(ait_migrate(dir, d.url, rollback, &out), 1);
	ck_assert_msg(ait_has(out, "would roll back 0002"), "%s", out);
	free(out);
	ck_assert_int_eq(ait_migrate(dir, d.url, verify, &out), 0);
	free(out);
	ck_assert_int_eq(ait_migrate(dir, d.url, rollback_yes, &out), 0);
	ck_assert_msg(ait_has(out, "rolled back 0002 usage_daily"), "%s", out);
	free(out);
	ck_assert_int_eq(ait_migrate(dir, d.url, verify, &out), 1);
	ck_assert_msg(ait_has(out, "applied  0001 usage_events") &&
			  ait_has(out, "pending  0002 usage_daily"),
	    "%s", out);
	free(out);
	ck_assert_int_eq(
	    ait_db_int(&d, "SELECT COUNT(*) FROM schema_migrations", 0, NULL),
	    1);

	/* Up again: the accountant applies what is pending at start. */
	ait_acct_start(&a, dir, d.url);
	ait_acct_stop(&a, SIGTERM);
	ck_assert_int_eq(ait_migrate(dir, d.url, verify, &out), 0);
	free(out);
	ck_assert_int_eq(ait_migrate(dir, d.url, rollback_yes, &out), 0);
	free(out);
	ck_assert_int_eq(ait_migrate(dir, d.url, rollback_yes, &out), 0);
	ck_assert_msg(ait_has(out, "rolled back 0001 usage_events"), "%s", out);
	free(out);
	ck_assert_int_eq(ait_migrate(dir, d.url, up, &out), 0);
	free(out);
	ck_assert_int_eq(ait_migrate(dir, d.url, verify, &out), 0);
	free(out);
	ck_assert_int_eq(
	    ait_db_int(&d, "SELECT COUNT(*) FROM usage_daily", 0, NULL), 0);
	ait_db_close(&d);
}

/* ---- analytics against the test's own SQL ---- */

/* A query built piece by piece: values only as parameters. */
struct ait_sql {
	char text[AIT_SQL_MAX];
	const char *p[8];
	char num[8][24];
	int n;
};

static void
ait_sql_init(struct ait_sql *q, const char *head)
{
	memset(q, 0, sizeof(*q));
	snprintf(q->text, sizeof(q->text), "%s", head);
}

/* Appends text then "$<n>", n the number of the new parameter v. */
static void
ait_sql_add(struct ait_sql *q, const char *text, const char *v)
{
	size_t len = strlen(q->text);

	ck_assert_int_lt(q->n, 8);
	q->p[q->n] = v;
	q->n++;
	snprintf(q->text + len, sizeof(q->text) - len, "%s$%d", text, q->n);
}

static void
ait_sql_add_int(struct ait_sql *q, const char *fmt, int64_t v)
{
	snprintf(q->num[q->n], sizeof(q->num[0]), "%" PRId64, v);
	ait_sql_add(q, fmt, q->num[q->n]);
}

struct ait_an {
	const char *subject_id; /* NULL: everyone */
	const char *provider;   /* "" all */
	int days;
};

/* The WHERE of one analytics query over day (NULL: the window). */
static void
ait_sql_filter(struct ait_sql *q, const struct ait_an *an, const char *from,
    const char *to, const char *day)
{
	if (day != NULL) {
		ait_sql_add(q, " WHERE day = ", day);
	} else {
		ait_sql_add(q, " WHERE day >= ", from);
		ait_sql_add(q, " AND day <= ", to);
	}
	if (an->subject_id != NULL) {
		ait_sql_add(q, " AND subject_type = ", "user");
		ait_sql_add(q, " AND subject_id = ", an->subject_id);
	}
	if (an->provider[0] != '\0')
		ait_sql_add(q, " AND provider = ", an->provider);
}

static int64_t
ait_sql_int(struct ait_db *d, const struct ait_sql *q)
{
	return ait_db_int(d, q->text, q->n, q->p);
}

static int64_t
ait_jint(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	ck_assert_msg(json_is_integer(v), "%s is not an integer", key);
	return json_integer_value(v);
}

static double
ait_jreal(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	ck_assert_msg(json_is_real(v), "%s is not a real", key);
	return json_real_value(v);
}

/* One counter from SQL (aggregate expr) against the document. */
static int64_t
ait_expect(struct ait_db *d, const struct ait_an *an, const char *from,
    const char *to, const char *day, const char *expr)
{
	struct ait_sql q;
	char head[256];

	snprintf(head, sizeof(head), "SELECT %s FROM usage_events", expr);
	ait_sql_init(&q, head);
	ait_sql_filter(&q, an, from, to, day);
	return ait_sql_int(d, &q);
}

/* The total latency at nearest rank p, by the test's own SQL. */
static int64_t
ait_expect_pct(struct ait_db *d, const struct ait_an *an, const char *from,
    const char *to, const char *day, double p, int64_t n)
{
	struct ait_sql q;
	int64_t rank;

	if (n == 0)
		return 0;
	rank = (int64_t)ceil(p * (double)n);
	if (rank < 1)
		rank = 1;
	ait_sql_init(&q, "SELECT total_ms FROM usage_events");
	ait_sql_filter(&q, an, from, to, day);
	ait_sql_add_int(&q, " ORDER BY total_ms LIMIT 1 OFFSET ", rank - 1);
	return ait_sql_int(d, &q);
}

/* Every counter of o (a day, or the totals with day NULL) equals SQL. */
static void
ait_check_counters(struct ait_db *d, const struct ait_an *an, json_t *o,
    const char *from, const char *to, const char *day)
{
	int64_t n = ait_expect(d, an, from, to, day, "COUNT(*)");
	int64_t cached =
	    ait_expect(d, an, from, to, day, "COUNT(*) FILTER (WHERE cached)");
	int64_t errors = ait_expect(
	    d, an, from, to, day, "COUNT(*) FILTER (WHERE status = 'error')");
	int64_t cost = ait_expect(
	    d, an, from, to, day, "COALESCE(SUM(cost_micro_usd), 0)");

	ck_assert_int_eq(ait_jint(o, "requests"), n);
	ck_assert_int_eq(ait_jint(o, "cached"), cached);
	ck_assert_int_eq(ait_jint(o, "errors"), errors);
	ck_assert_int_eq(ait_jint(o, "cost_micro_usd"), cost);
	ck_assert_int_eq(ait_jint(o, "input_tokens"),
	    ait_expect(d, an, from, to, day, "COALESCE(SUM(input_tokens), 0)"));
	ck_assert_int_eq(ait_jint(o, "output_tokens"),
	    ait_expect(
		d, an, from, to, day, "COALESCE(SUM(output_tokens), 0)"));
	ck_assert_int_eq(ait_jint(o, "cache_read_tokens"),
	    ait_expect(
		d, an, from, to, day, "COALESCE(SUM(cache_read_tokens), 0)"));
	ck_assert_int_eq(ait_jint(o, "cache_write_tokens"),
	    ait_expect(
		d, an, from, to, day, "COALESCE(SUM(cache_write_tokens), 0)"));
	ck_assert(ait_jreal(o, "cost_usd") == (double)cost / 1e6);
	ck_assert(ait_jreal(o, "cache_hit_ratio") ==
		  (n > 0 ? (double)cached / (double)n : 0.0));
	ck_assert(ait_jreal(o, "error_rate") ==
		  (n > 0 ? (double)errors / (double)n : 0.0));
	ck_assert_int_eq(ait_jint(o, "p50_latency_ms"),
	    ait_expect_pct(d, an, from, to, day, 0.5, n));
	ck_assert_int_eq(ait_jint(o, "p95_latency_ms"),
	    ait_expect_pct(d, an, from, to, day, 0.95, n));
}

/* Asks the accountant and checks the whole document; returns its total
 * of requests. */
static int64_t
ait_check_analytics(struct ait_db *d, const char *url, const struct ait_an *an)
{
	struct msg_analytics_req req;
	union proto_msg r;
	json_t *doc, *series, *e;
	const char *from, *to;
	char *buf;
	int64_t total;
	size_t i;

	memset(&req, 0, sizeof(req));
	snprintf(req.request_id, sizeof(req.request_id), "an");
	if (an->subject_id != NULL) {
		snprintf(req.subject_type, sizeof(req.subject_type), "user");
		snprintf(req.subject_id, sizeof(req.subject_id), "%s",
		    an->subject_id);
	}
	snprintf(req.provider, sizeof(req.provider), "%s", an->provider);
	req.days = an->days;
	ck_assert_int_eq(ait_call(url, MSG_ANALYTICS_REQ, &req,
			     MSG_ANALYTICS_RESP, &r, &buf),
	    0);
	ck_assert_int_eq(r.analytics_resp.status, 200);
	doc = json_loadb(
	    r.analytics_resp.payload, r.analytics_resp.payload_len, 0, NULL);
	free(buf);
	ck_assert_ptr_nonnull(doc);
	from = json_string_value(json_object_get(doc, "from"));
	to = json_string_value(json_object_get(doc, "to"));
	ck_assert(from != NULL && to != NULL);
	series = json_object_get(doc, "series");
	ck_assert_uint_eq(json_array_size(series), (size_t)an->days);
	json_array_foreach(series, i, e) {
		const char *day = json_string_value(json_object_get(e, "day"));

		ck_assert_ptr_nonnull(day);
		ait_check_counters(d, an, e, from, to, day);
	}
	ck_assert_str_eq(json_string_value(
			     json_object_get(json_array_get(series, 0), "day")),
	    from);
	ait_check_counters(
	    d, an, json_object_get(doc, "totals"), from, to, NULL);
	total = ait_jint(json_object_get(doc, "totals"), "requests");
	json_decref(doc);
	return total;
}

void
ait_body_analytics(bool pg)
{
	static const struct ait_an alice7 = {"alice", "", 7};
	static const struct ait_an alice_claude = {"alice", "claude", 7};
	static const struct ait_an alice1 = {"alice", "", 1};
	static const struct ait_an bob3 = {"bob", "", 3};
	static const struct ait_an all7 = {NULL, "", 7};
	static const struct ait_an all_openai = {NULL, "openai", 90};
	struct msg_cost_today_req cq = {
	    .request_id = "ct", .subject_type = "user", .subject_id = "alice"};
	struct msg_usage_event ev;
	struct usage_sender *s;
	union proto_msg r;
	struct ait_acct a;
	struct ait_db d;
	struct ait_sql q;
	char dir[PATH_MAX], today[16], *buf;
	int64_t now = clock_real_ms(), n_alice, n_bob, n_all;
	const int n = 400;

	ait_test_dir(dir, sizeof(dir), "analytics");
	ait_db_open(&d, pg, dir, "analytics");
	ait_acct_start(&a, dir, d.url);
	s = ait_sender_open(&a, dir, "w1");
	/* Two subjects over today and the three days before. */
	for (int i = 1; i <= n; i++) {
		ait_event(&ev, i, i % 3 == 0 ? "bob" : "alice",
		    now - (i % 4) * AIT_DAY_MS);
		ck_assert_int_eq(usage_sender_emit(s, &ev), 0);
	}
	ait_sender_drain(s, n, 30000);

	n_alice = ait_check_analytics(&d, a.rep_url, &alice7);
	n_bob = ait_check_analytics(&d, a.rep_url, &bob3);
	n_all = ait_check_analytics(&d, a.rep_url, &all7);
	(void)ait_check_analytics(&d, a.rep_url, &alice_claude);
	(void)ait_check_analytics(&d, a.rep_url, &alice1);
	(void)ait_check_analytics(&d, a.rep_url, &all_openai);
	/* One subject's numbers hold nobody else's. */
	ck_assert_int_gt(n_alice, 0);
	ck_assert_int_gt(n_bob, 0);
	ck_assert_int_eq(n_all, n);
	ck_assert_int_lt(n_alice, n_all);
	ait_sql_init(&q, "SELECT COUNT(*) FROM usage_events WHERE subject_id "
			 "<> 'alice'");
	ck_assert_int_eq(n_all - n_alice, ait_sql_int(&d, &q));

	/* The settled cost of today, as the rate limiter asks for it. */
	ck_assert_int_eq(ait_call(a.rep_url, MSG_COST_TODAY_REQ, &cq,
			     MSG_COST_TODAY_RESP, &r, &buf),
	    0);
	clock_fmt_day(now, today, sizeof(today));
	ck_assert_str_eq(r.cost_today_resp.day, today);
	ck_assert_str_eq(r.cost_today_resp.code, "ok");
	ait_sql_init(&q, "SELECT COALESCE(SUM(cost_micro_usd), 0) FROM "
			 "usage_events");
	ait_sql_add(&q, " WHERE day = ", today);
	ait_sql_add(&q, " AND subject_type = ", "user");
	ait_sql_add(&q, " AND subject_id = ", "alice");
	ck_assert_int_eq(r.cost_today_resp.micro_usd, ait_sql_int(&d, &q));
	ck_assert_int_gt(r.cost_today_resp.micro_usd, 0);
	free(buf);

	usage_sender_close(s);
	ait_acct_stop(&a, SIGTERM);
	ait_db_close(&d);
}

/* ---- PostgreSQL down during the load ---- */

#define AIT_DOWN_EVENTS  3000
#define AIT_DOWN_THREADS 3
#define AIT_DOWN_MS      30000

void
ait_body_pg_down(void)
{
	struct ait_load l[AIT_DOWN_THREADS];
	pthread_t th[AIT_DOWN_THREADS];
	struct usage_sender_stats st;
	struct msg_status_req sq = {.request_id = "st", .what = "health"};
	struct usage_sender *s;
	union proto_msg r;
	atomic_int done = 0;
	struct h_pg pg;
	struct ait_acct a;
	struct ait_db d;
	char dir[PATH_MAX], *buf;
	int64_t cost, t_halt, committed_before;

	memset(l, 0, sizeof(l));
	ait_test_dir(dir, sizeof(dir), "pgdown");
	/* Its own server: this process must be the one to stop it. */
	ck_assert_int_eq(h_pg_start(&pg), 0);
	memset(&d, 0, sizeof(d));
	d.pg = true;
	snprintf(d.url, sizeof(d.url), "%s", pg.url);
	ait_acct_start(&a, dir, d.url);
	s = ait_sender_open(&a, dir, "w1");
	/* About 40 s of load: 3 x 1000 events, 40 ms apart. */
	ait_load_start(l, th, AIT_DOWN_THREADS, s, AIT_DOWN_EVENTS, 40, &done);
	ait_sleep_ms(4000);
	usage_sender_stats(s, &st);
	committed_before = st.committed_seq;
	ck_assert_int_gt(committed_before, 0);

	ck_assert_int_eq(h_pg_halt(&pg), 0);
	t_halt = ait_now_ms();
	/* The accountant notices and says so. */
	for (;;) {
		ck_assert_int_eq(ait_call(a.rep_url, MSG_STATUS_REQ, &sq,
				     MSG_STATUS_RESP, &r, &buf),
		    0);
		if (strcmp(r.status_resp.state, "degraded") == 0) {
			free(buf);
			break;
		}
		free(buf);
		ck_assert_int_lt(ait_now_ms() - t_halt, 10000);
		ait_sleep_ms(100);
	}
	/* Down for 30 s while events keep coming: none is committed, the
	 * worker keeps them all in its journal. */
	if (ait_now_ms() - t_halt < AIT_DOWN_MS)
		ait_sleep_ms((int)(AIT_DOWN_MS - (ait_now_ms() - t_halt)));
	usage_sender_stats(s, &st);
	ck_assert(st.ready);
	ck_assert_int_gt(st.last_seq, st.committed_seq + 500);
	ck_assert_int_eq(h_pg_restart(&pg), 0);
	fprintf(stderr,
	    "pg_down: halted %lld ms; journal %lld..%lld, committed %lld "
	    "before the halt\n",
	    (long long)(ait_now_ms() - t_halt), (long long)st.first_seq,
	    (long long)st.last_seq, (long long)committed_before);

	cost = ait_load_join(l, th, AIT_DOWN_THREADS);
	ait_sender_drain(s, AIT_DOWN_EVENTS, 90000);
	ait_check_exactly(&d, s, AIT_DOWN_EVENTS, cost);
	usage_sender_close(s);
	ait_acct_stop(&a, SIGTERM);
	ait_db_close(&d);
	h_pg_stop(&pg);
}

/* ---- the journal full: fail closed, then recover ---- */

void
ait_body_journal_full(void)
{
	struct usage_sender_stats st;
	struct msg_usage_event ev;
	struct usage_sender *s;
	struct ait_acct a;
	struct ait_db d;
	char dir[PATH_MAX];
	int64_t deadline, journaled = 0, refused = 0;
	int rv = 0, i;

	ait_test_dir(dir, sizeof(dir), "full");
	ait_db_open(&d, false, dir, "full");
	ait_acct_start(&a, dir, d.url);
	ait_acct_stop(&a, SIGTERM);
	/* The accountant is away: a 64 kB journal fills. */
	s = ait_sender_open_sized(&a, dir, "w1", 64 * 1024, 16 * 1024);
	ck_assert(usage_sender_ready(s));
	for (i = 1; i <= 1000 && rv == 0; i++) {
		ait_event(&ev, i, "alice", clock_real_ms());
		if ((rv = usage_sender_emit(s, &ev)) == 0)
			journaled++;
	}
	ck_assert_int_eq(rv, -ENOSPC);
	ck_assert_int_gt(journaled, 20);
	ck_assert(!usage_sender_ready(s));
	/* Still full a while later: billable requests stay refused. */
	ait_sleep_ms(600);
	ck_assert(!usage_sender_ready(s));
	ait_event(&ev, ++i, "alice", clock_real_ms());
	ck_assert_int_eq(usage_sender_emit(s, &ev), -ENOSPC);
	refused = 2;

	/* Back: catch-up commits and trims, the sender is ready again. */
	ait_acct_restart(&a);
	deadline = ait_now_ms() + 30000;
	while (!usage_sender_ready(s)) {
		ck_assert_msg(ait_now_ms() < deadline, "never ready again");
		ait_sleep_ms(50);
	}
	ait_event(&ev, ++i, "alice", clock_real_ms());
	ck_assert_int_eq(usage_sender_emit(s, &ev), 0);
	ait_sender_drain(s, journaled + 1, 30000);
	usage_sender_stats(s, &st);
	ck_assert_uint_eq(st.journal_errors, (uint64_t)refused);
	/* Every journaled event landed; the refused ones went out only on
	 * the live path, to nobody. */
	ck_assert_int_eq(
	    ait_db_int(&d, "SELECT COUNT(*) FROM usage_events", 0, NULL),
	    journaled + 1);
	usage_sender_close(s);
	ait_acct_stop(&a, SIGTERM);
	ait_db_close(&d);
}
