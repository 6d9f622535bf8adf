/*
 * The SQLite ledger (the embedded default): WAL, synchronous=FULL (an
 * acknowledged commit survives a crash of the machine, not only of the
 * process), one writer connection plus readers.  The daily roll-ups are
 * kept by a trigger on usage_events (migration 0002), which fires only for
 * rows actually inserted, so duplicates never count twice.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "acct_db.h"
#include "clock.h"
#include "log.h"

#define SQ_BUSY_MS 5000
/* Rows the committed-seq walk looks at per stream and commit. */
#define SQ_HWM_WINDOW "100000"

enum sq_stmt {
	SQ_INSERT,
	SQ_STREAM_GET,
	SQ_STREAM_WALK,
	SQ_STREAM_PUT,
	SQ_COST_DAY,
	SQ_STMT_MAX
};

static const char *const sq_sql[SQ_STMT_MAX] = {
    [SQ_INSERT] =
	"INSERT INTO usage_events (event_id, ts_ms, day, request_id, "
	"worker_id, seq, subject_type, subject_id, ip, provider, model, "
	"input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
	"cost_micro_usd, cached, status, http_status, upstream_ms, total_ms, "
	"received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, "
	"?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22) "
	"ON CONFLICT (event_id) DO NOTHING",
    [SQ_STREAM_GET] =
	"SELECT committed_seq FROM usage_streams WHERE worker_id = ?1",
    /* The highest S with base+1..S all present: rows are contiguous
     * exactly while seq - row_number() stays equal to base. */
    [SQ_STREAM_WALK] =
	"SELECT COALESCE(MAX(seq), ?2) FROM (SELECT seq, seq - ROW_NUMBER() "
	"OVER (ORDER BY seq) AS g FROM (SELECT seq FROM usage_events WHERE "
	"worker_id = ?1 AND seq > ?2 ORDER BY seq LIMIT " SQ_HWM_WINDOW
	")) WHERE g = ?2",
    [SQ_STREAM_PUT] =
	"INSERT INTO usage_streams (worker_id, committed_seq, updated_ms) "
	"VALUES (?1, ?2, ?3) ON CONFLICT (worker_id) DO UPDATE SET "
	"committed_seq = MAX(committed_seq, excluded.committed_seq), "
	"updated_ms = excluded.updated_ms",
    [SQ_COST_DAY] =
	"SELECT COALESCE(SUM(cost_micro_usd), 0) FROM usage_daily WHERE "
	"day = ?1 AND subject_type = ?2 AND subject_id = ?3",
};

/* The filter every analytics query shares: ?1 from, ?2 to, ?3 provider
 * ('' = all), ?4 subject type ('' = everyone), ?5 subject id. */
#define SQ_FILTER                                                              \
	"day >= ?1 AND day <= ?2 AND (?3 = '' OR provider = ?3) AND "          \
	"(?4 = '' OR (subject_type = ?4 AND subject_id = ?5))"

struct sq_conn {
	sqlite3 *db;
	char path[PATH_MAX];
	sqlite3_stmt *stmt[SQ_STMT_MAX];
};

/* Logs the connection's error once and maps it to an errno. */
static int
sq_err(struct sq_conn *c, int rc, const char *what)
{
	int ext = c->db != NULL ? sqlite3_extended_errcode(c->db) : rc;

	log_error(NULL, "sqlite: statement failed", LF_S("what", what),
	    LF_S("error",
		c->db != NULL ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc)),
	    LF_I("code", ext));
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_CANTOPEN:
	case SQLITE_NOTADB:
		return -ENOTCONN;
	default:
		return -EIO;
	}
}

static void
sq_disconnect(void *p)
{
	struct sq_conn *c = p;

	if (c == NULL)
		return;
	for (int i = 0; i < SQ_STMT_MAX; i++)
		sqlite3_finalize(c->stmt[i]);
	sqlite3_close_v2(c->db);
	free(c);
}

static int
sq_exec(void *p, const char *sql)
{
	struct sq_conn *c = p;
	char *msg = NULL;
	int rc;

	rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);
	if (rc == SQLITE_OK)
		return 0;
	log_error(NULL, "sqlite: script failed",
	    LF_S("error", msg != NULL ? msg : sqlite3_errstr(rc)));
	sqlite3_free(msg);
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

static int
sq_connect(const char *target, void **ret)
{
	struct sq_conn *c;
	int rc, rv;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return -ENOMEM;
	snprintf(c->path, sizeof(c->path), "%s", target);
	rc = sqlite3_open_v2(target, &c->db,
	    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
	    NULL);
	if (rc != SQLITE_OK) {
		rv = sq_err(c, rc, "open");
		sq_disconnect(c);
		return rv == -EIO ? -ENOTCONN : rv;
	}
	sqlite3_busy_timeout(c->db, SQ_BUSY_MS);
	if ((rv = sq_exec(c, "PRAGMA journal_mode=WAL; "
			     "PRAGMA synchronous=FULL;")) != 0) {
		sq_disconnect(c);
		return rv;
	}
	*ret = c;
	return 0;
}

/* The prepared statement i, prepared on first use (the tables exist only
 * after the migrations). */
static int
sq_stmt(struct sq_conn *c, enum sq_stmt i, sqlite3_stmt **ret)
{
	int rc;

	if (c->stmt[i] == NULL) {
		rc = sqlite3_prepare_v3(c->db, sq_sql[i], -1,
		    SQLITE_PREPARE_PERSISTENT, &c->stmt[i], NULL);
		if (rc != SQLITE_OK)
			return sq_err(c, rc, "prepare");
	}
	sqlite3_reset(c->stmt[i]);
	sqlite3_clear_bindings(c->stmt[i]);
	*ret = c->stmt[i];
	return 0;
}

static void
sq_text(sqlite3_stmt *s, int i, const char *v)
{
	sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
}

/* Steps a statement that returns nothing, or one integer (ret may be
 * NULL). */
static int
sq_step(struct sq_conn *c, sqlite3_stmt *s, int64_t *ret)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW) {
		if (ret != NULL)
			*ret = sqlite3_column_int64(s, 0);
		rc = sqlite3_step(s);
	} else if (rc == SQLITE_DONE && ret != NULL) {
		*ret = 0;
	}
	if (rc != SQLITE_DONE) {
		int rv = sq_err(c, rc, sqlite3_sql(s));

		sqlite3_reset(s);
		return rv;
	}
	sqlite3_reset(s);
	return 0;
}

static int
sq_insert(struct sq_conn *c, const struct msg_usage_event *e, int64_t now)
{
	char day[ACCT_DAY_LEN + 1];
	sqlite3_stmt *s = NULL;
	int rv;

	if ((rv = sq_stmt(c, SQ_INSERT, &s)) != 0)
		return rv;
	clock_fmt_day(e->ts_ms, day, sizeof(day));
	sq_text(s, 1, e->event_id);
	sqlite3_bind_int64(s, 2, e->ts_ms);
	sq_text(s, 3, day);
	sq_text(s, 4, e->request_id);
	sq_text(s, 5, e->worker_id);
	sqlite3_bind_int64(s, 6, e->seq);
	sq_text(s, 7, e->subject_type);
	sq_text(s, 8, e->subject_id);
	sq_text(s, 9, e->ip);
	sq_text(s, 10, e->provider);
	sq_text(s, 11, e->model);
	sqlite3_bind_int64(s, 12, e->input_tokens);
	sqlite3_bind_int64(s, 13, e->output_tokens);
	sqlite3_bind_int64(s, 14, e->cache_read_tokens);
	sqlite3_bind_int64(s, 15, e->cache_write_tokens);
	sqlite3_bind_int64(s, 16, e->cost_micro_usd);
	sqlite3_bind_int(s, 17, e->cached ? 1 : 0);
	sq_text(s, 18, e->status);
	sqlite3_bind_int64(s, 19, e->http_status);
	sqlite3_bind_int64(s, 20, e->upstream_ms);
	sqlite3_bind_int64(s, 21, e->total_ms);
	sqlite3_bind_int64(s, 22, now);
	return sq_step(c, s, NULL);
}

/* Advances the committed seq of one stream. */
static int
sq_stream(struct sq_conn *c, const char *worker_id, int64_t now, int64_t *ret)
{
	sqlite3_stmt *s = NULL;
	int64_t base, top;
	int rv;

	if ((rv = sq_stmt(c, SQ_STREAM_GET, &s)) != 0)
		return rv;
	sq_text(s, 1, worker_id);
	if ((rv = sq_step(c, s, &base)) != 0)
		return rv;
	if ((rv = sq_stmt(c, SQ_STREAM_WALK, &s)) != 0)
		return rv;
	sq_text(s, 1, worker_id);
	sqlite3_bind_int64(s, 2, base);
	if ((rv = sq_step(c, s, &top)) != 0)
		return rv;
	if (top > base) {
		if ((rv = sq_stmt(c, SQ_STREAM_PUT, &s)) != 0)
			return rv;
		sq_text(s, 1, worker_id);
		sqlite3_bind_int64(s, 2, top);
		sqlite3_bind_int64(s, 3, now);
		if ((rv = sq_step(c, s, NULL)) != 0)
			return rv;
	}
	*ret = top > base ? top : base;
	return 0;
}

static int
sq_commit(void *p, const struct msg_usage_event *ev, size_t n,
    int64_t received_ms, struct acct_hwm *hwm, size_t *ret_nhwm)
{
	struct sq_conn *c = p;
	size_t i, k, nh = 0;
	int rv;

	if ((rv = sq_exec(c, "BEGIN IMMEDIATE")) != 0)
		return rv;
	for (i = 0; i < n; i++) {
		if ((rv = sq_insert(c, &ev[i], received_ms)) != 0)
			goto rollback;
	}
	nh = acct_hwm_streams(ev, n, hwm);
	for (k = 0; k < nh; k++)
		if ((rv = sq_stream(c, hwm[k].worker_id, received_ms,
			 &hwm[k].committed_seq)) != 0)
			goto rollback;
	if ((rv = sq_exec(c, "COMMIT")) != 0)
		goto rollback;
	*ret_nhwm = nh;
	return 0;
rollback:
	(void)sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
	return rv;
}

static int
sq_committed_seq(void *p, const char *worker_id, int64_t *ret)
{
	struct sq_conn *c = p;
	sqlite3_stmt *s = NULL;
	int rv;

	if ((rv = sq_stmt(c, SQ_STREAM_GET, &s)) != 0)
		return rv;
	sq_text(s, 1, worker_id);
	return sq_step(c, s, ret);
}

static int
sq_cost_day(void *p, const char *subject_type, const char *subject_id,
    const char *day, int64_t *ret)
{
	struct sq_conn *c = p;
	sqlite3_stmt *s = NULL;
	int rv;

	if ((rv = sq_stmt(c, SQ_COST_DAY, &s)) != 0)
		return rv;
	sq_text(s, 1, day);
	sq_text(s, 2, subject_type);
	sq_text(s, 3, subject_id);
	return sq_step(c, s, ret);
}

/* A one-off statement with the analytics filter bound. */
static int
sq_query(struct sq_conn *c, const char *sql, const struct acct_query *q,
    sqlite3_stmt **ret)
{
	int rc = sqlite3_prepare_v2(c->db, sql, -1, ret, NULL);

	if (rc != SQLITE_OK)
		return sq_err(c, rc, "prepare report");
	sq_text(*ret, 1, q->from);
	sq_text(*ret, 2, q->to);
	sq_text(*ret, 3, q->provider);
	sq_text(*ret, 4, q->subject_type);
	sq_text(*ret, 5, q->subject_id);
	return 0;
}

/* The total latency at nearest rank of fraction p among the n requests
 * of one day (day NULL: of the whole window). */
static int
sq_percentile(struct sq_conn *c, const struct acct_query *q, const char *day,
    double p, int64_t n, int64_t *ret)
{
	static const char sql_day[] =
	    "SELECT total_ms FROM usage_events WHERE " SQ_FILTER
	    " AND day = ?7 ORDER BY total_ms LIMIT 1 OFFSET ?6";
	static const char sql_all[] =
	    "SELECT total_ms FROM usage_events WHERE " SQ_FILTER
	    " ORDER BY total_ms LIMIT 1 OFFSET ?6";
	sqlite3_stmt *s = NULL;
	int rv;

	*ret = 0;
	if (n <= 0)
		return 0;
	if ((rv = sq_query(c, day != NULL ? sql_day : sql_all, q, &s)) != 0)
		return rv;
	sqlite3_bind_int64(s, 6, acct_pct_rank(p, n) - 1);
	if (day != NULL)
		sq_text(s, 7, day);
	rv = sq_step(c, s, ret);
	sqlite3_finalize(s);
	return rv;
}

static void
sq_day_add(struct acct_day *t, const struct acct_day *d)
{
	t->requests += d->requests;
	t->errors += d->errors;
	t->cached += d->cached;
	t->input_tokens += d->input_tokens;
	t->output_tokens += d->output_tokens;
	t->cache_read_tokens += d->cache_read_tokens;
	t->cache_write_tokens += d->cache_write_tokens;
	t->cost_micro_usd += d->cost_micro_usd;
}

static int
sq_report(void *p, const struct acct_query *q, struct acct_report *ret)
{
	static const char sql_days[] =
	    "SELECT day, SUM(requests), SUM(errors), SUM(cached), "
	    "SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), "
	    "SUM(cache_write_tokens), SUM(cost_micro_usd) FROM usage_daily "
	    "WHERE " SQ_FILTER " GROUP BY day ORDER BY day";
	struct sq_conn *c = p;
	struct acct_day *d;
	sqlite3_stmt *s = NULL;
	int rc, rv;

	memset(ret, 0, sizeof(*ret));
	/* One read transaction: one snapshot for every query below. */
	if ((rv = sq_exec(c, "BEGIN")) != 0)
		return rv;
	if ((rv = sq_query(c, sql_days, q, &s)) != 0)
		goto out;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW &&
	       ret->ndays < PROTO_DAYS_MAX) {
		d = &ret->days[ret->ndays++];
		snprintf(d->day, sizeof(d->day), "%s",
		    (const char *)sqlite3_column_text(s, 0));
		d->requests = sqlite3_column_int64(s, 1);
		d->errors = sqlite3_column_int64(s, 2);
		d->cached = sqlite3_column_int64(s, 3);
		d->input_tokens = sqlite3_column_int64(s, 4);
		d->output_tokens = sqlite3_column_int64(s, 5);
		d->cache_read_tokens = sqlite3_column_int64(s, 6);
		d->cache_write_tokens = sqlite3_column_int64(s, 7);
		d->cost_micro_usd = sqlite3_column_int64(s, 8);
		sq_day_add(&ret->totals, d);
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		rv = sq_err(c, rc, "report");
	sqlite3_finalize(s);
	for (size_t i = 0; rv == 0 && i < ret->ndays; i++) {
		d = &ret->days[i];
		if ((rv = sq_percentile(
			 c, q, d->day, 0.5, d->requests, &d->p50_ms)) == 0)
			rv = sq_percentile(
			    c, q, d->day, 0.95, d->requests, &d->p95_ms);
	}
	if (rv == 0 && (rv = sq_percentile(c, q, NULL, 0.5,
			    ret->totals.requests, &ret->totals.p50_ms)) == 0)
		rv = sq_percentile(c, q, NULL, 0.95, ret->totals.requests,
		    &ret->totals.p95_ms);
out:
	(void)sqlite3_exec(
	    c->db, rv == 0 ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL);
	return rv;
}

/* ---- migrations ---- */

static int
sq_mig_begin(void *p)
{
	return sq_exec(p, "BEGIN IMMEDIATE");
}

static int
sq_mig_end(void *p, bool commit)
{
	struct sq_conn *c = p;

	if (commit)
		return sq_exec(c, "COMMIT");
	(void)sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
	return 0;
}

static int
sq_has_object(void *p, enum acct_object kind, const char *name, bool *ret)
{
	static const char sql[] =
	    "SELECT COUNT(*) FROM sqlite_master WHERE type = ?1 AND name = ?2";
	static const char *const kinds[] = {"table", "index", "trigger"};
	struct sq_conn *c = p;
	sqlite3_stmt *s = NULL;
	int64_t n = 0;
	int rc, rv;

	if ((rc = sqlite3_prepare_v2(c->db, sql, -1, &s, NULL)) != SQLITE_OK)
		return sq_err(c, rc, "has_object");
	sq_text(s, 1, kinds[kind]);
	sq_text(s, 2, name);
	rv = sq_step(c, s, &n);
	sqlite3_finalize(s);
	if (rv == 0)
		*ret = n > 0;
	return rv;
}

static int
sq_mig_table(void *p, bool create, bool *ret_exists)
{
	int rv;

	if (create &&
	    (rv = sq_exec(p, "CREATE TABLE IF NOT EXISTS schema_migrations ("
			     "version INTEGER PRIMARY KEY, name TEXT NOT "
			     "NULL, checksum TEXT NOT NULL, applied_ms "
			     "INTEGER NOT NULL)")) != 0)
		return rv;
	return sq_has_object(
	    p, ACCT_OBJ_TABLE, "schema_migrations", ret_exists);
}

static int
sq_mig_list(void *p, struct acct_mig_row *rows, size_t cap, size_t *ret_n)
{
	static const char sql[] = "SELECT version, name, checksum FROM "
				  "schema_migrations ORDER BY version";
	struct sq_conn *c = p;
	sqlite3_stmt *s = NULL;
	size_t n = 0;
	int rc;

	if ((rc = sqlite3_prepare_v2(c->db, sql, -1, &s, NULL)) != SQLITE_OK)
		return sq_err(c, rc, "mig_list");
	while ((rc = sqlite3_step(s)) == SQLITE_ROW && n < cap) {
		rows[n].version = sqlite3_column_int(s, 0);
		snprintf(rows[n].name, sizeof(rows[n].name), "%s",
		    (const char *)sqlite3_column_text(s, 1));
		snprintf(rows[n].checksum, sizeof(rows[n].checksum), "%s",
		    (const char *)sqlite3_column_text(s, 2));
		n++;
	}
	sqlite3_finalize(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return sq_err(c, rc, "mig_list");
	*ret_n = n;
	return 0;
}

static int
sq_mig_mark(
    void *p, const struct acct_migration *m, const char *checksum, bool applied)
{
	struct sq_conn *c = p;
	sqlite3_stmt *s = NULL;
	int rc, rv;

	rc = sqlite3_prepare_v2(c->db,
	    applied ? "INSERT INTO schema_migrations (version, name, checksum, "
		      "applied_ms) VALUES (?1, ?2, ?3, ?4)"
		    : "DELETE FROM schema_migrations WHERE version = ?1",
	    -1, &s, NULL);
	if (rc != SQLITE_OK)
		return sq_err(c, rc, "mig_mark");
	sqlite3_bind_int(s, 1, m->version);
	if (applied) {
		sq_text(s, 2, m->name);
		sq_text(s, 3, checksum);
		sqlite3_bind_int64(s, 4, clock_real_ms());
	}
	rv = sq_step(c, s, NULL);
	sqlite3_finalize(s);
	/* Statements prepared against the old schema are stale now. */
	for (int i = 0; i < SQ_STMT_MAX; i++) {
		sqlite3_finalize(c->stmt[i]);
		c->stmt[i] = NULL;
	}
	return rv;
}

const struct acct_db_ops acct_sqlite_ops = {
    .name = "sqlite",
    .kind = ACCT_DB_SQLITE,
    .connect = sq_connect,
    .disconnect = sq_disconnect,
    .commit = sq_commit,
    .committed_seq = sq_committed_seq,
    .cost_day = sq_cost_day,
    .report = sq_report,
    .mig_begin = sq_mig_begin,
    .mig_end = sq_mig_end,
    .exec = sq_exec,
    .mig_table = sq_mig_table,
    .mig_list = sq_mig_list,
    .mig_mark = sq_mig_mark,
    .has_object = sq_has_object,
};
