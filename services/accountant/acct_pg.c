/*
 * The PostgreSQL ledger (libpq).  Every value travels as a parameter of a
 * prepared statement.  A batch is inserted in chunks of 1, 4, 16 ... 1024
 * rows, each chunk one statement that inserts the events (ON CONFLICT
 * (event_id) DO NOTHING) and adds exactly the rows it inserted (RETURNING)
 * to the daily roll-ups; the whole batch and the journal high-water marks
 * are one transaction.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "acct_db.h"
#include "buf.h"
#include "clock.h"
#include "log.h"

#define PG_COLS        22
#define PG_CHUNK_MAX   1024
#define PG_CHUNK_KINDS 6 /* 1, 4, 16, 64, 256, 1024 rows */
#define PG_NUM_LEN     24
#define PG_SQL_MAX     (256 * 1024)
#define PG_HWM_WINDOW  "100000"
#define PG_MIG_LOCK    "7120712"
#define PG_CONNECT_S   "3"

enum pg_stmt {
	PG_STREAM_GET,
	PG_STREAM_WALK,
	PG_STREAM_PUT,
	PG_COST_DAY,
	PG_STMT_MAX
};

static const char *const pg_stmt_sql[PG_STMT_MAX] = {
    [PG_STREAM_GET] =
	"SELECT committed_seq FROM usage_streams WHERE worker_id = $1",
    /* The highest S with base+1..S all present: rows are contiguous
     * exactly while seq - row_number() stays equal to base. */
    [PG_STREAM_WALK] =
	"SELECT COALESCE(MAX(seq), $2::bigint) FROM (SELECT seq, seq - "
	"ROW_NUMBER() OVER (ORDER BY seq) AS g FROM (SELECT seq FROM "
	"usage_events WHERE worker_id = $1 AND seq > $2::bigint ORDER BY seq "
	"LIMIT " PG_HWM_WINDOW ") s) t WHERE g = $2::bigint",
    [PG_STREAM_PUT] =
	"INSERT INTO usage_streams (worker_id, committed_seq, updated_ms) "
	"VALUES ($1, $2, $3) ON CONFLICT (worker_id) DO UPDATE SET "
	"committed_seq = GREATEST(usage_streams.committed_seq, "
	"EXCLUDED.committed_seq), updated_ms = EXCLUDED.updated_ms",
    [PG_COST_DAY] =
	"SELECT COALESCE(SUM(cost_micro_usd), 0)::bigint FROM usage_daily "
	"WHERE day = $1::date AND subject_type = $2 AND subject_id = $3",
};

static const char *const pg_stmt_name[PG_STMT_MAX] = {
    [PG_STREAM_GET] = "acct_stream_get",
    [PG_STREAM_WALK] = "acct_stream_walk",
    [PG_STREAM_PUT] = "acct_stream_put",
    [PG_COST_DAY] = "acct_cost_day",
};

/* The analytics filter: $1 from, $2 to, $3 provider ('' = all), $4
 * subject type ('' = everyone), $5 subject id. */
#define PG_FILTER                                                              \
	"day >= $1::date AND day <= $2::date AND ($3::text = '' OR provider "  \
	"= $3::text) AND ($4::text = '' OR (subject_type = $4::text AND "      \
	"subject_id = $5::text))"

struct pg_conn {
	PGconn *conn;
	bool prepared[PG_STMT_MAX];
	bool chunk_prepared[PG_CHUNK_KINDS];
	const char **values;      /* PG_CHUNK_MAX * PG_COLS */
	char (*nums)[PG_NUM_LEN]; /* text of the numbers, same shape */
	char (*days)[ACCT_DAY_LEN + 1];
};

/* Whether the last connection attempt failed (any connection). */
static atomic_bool pg_connect_failing;

static int
pg_chunk_rows(int kind)
{
	return 1 << (2 * kind);
}

static void
pg_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message; /* "relation already exists, skipping" and such */
}

/* Whether res has status want; if not, logs once and maps to an errno
 * (-ENOTCONN when the connection is gone).  Clears res on failure. */
static int
pg_check(
    struct pg_conn *c, PGresult *res, ExecStatusType want, const char *what)
{
	if (res != NULL && PQresultStatus(res) == want)
		return 0;
	log_error(NULL, "postgres: statement failed", LF_S("what", what),
	    LF_S("error", res != NULL ? PQresultErrorMessage(res)
				      : PQerrorMessage(c->conn)));
	PQclear(res);
	return PQstatus(c->conn) == CONNECTION_OK ? -EIO : -ENOTCONN;
}

static int
pg_exec(void *p, const char *sql)
{
	struct pg_conn *c = p;
	PGresult *res = PQexec(c->conn, sql);
	int rv;

	/* For a script PQexec returns the last result, or the first that
	 * failed. */
	if ((rv = pg_check(c, res, PGRES_COMMAND_OK, "script")) != 0)
		return rv;
	PQclear(res);
	return 0;
}

static void
pg_disconnect(void *p)
{
	struct pg_conn *c = p;

	if (c == NULL)
		return;
	PQfinish(c->conn);
	free(c->values);
	free(c->nums);
	free(c->days);
	free(c);
}

static int
pg_connect(const char *target, void **ret)
{
	const char *keys[] = {
	    "dbname", "connect_timeout", "application_name", NULL};
	const char *vals[] = {target, PG_CONNECT_S, "aiproxy-accountant", NULL};
	struct pg_conn *c;
	PGresult *res;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return -ENOMEM;
	c->values = calloc(PG_CHUNK_MAX * PG_COLS, sizeof(*c->values));
	c->nums = calloc(PG_CHUNK_MAX * PG_COLS, sizeof(*c->nums));
	c->days = calloc(PG_CHUNK_MAX, sizeof(*c->days));
	if (c->values == NULL || c->nums == NULL || c->days == NULL) {
		pg_disconnect(c);
		return -ENOMEM;
	}
	c->conn = PQconnectdbParams(keys, vals, 1);
	if (c->conn == NULL) {
		pg_disconnect(c);
		return -ENOMEM;
	}
	if (PQstatus(c->conn) != CONNECTION_OK) {
		/* Once per outage: the ledger retries every few seconds. */
		if (!atomic_exchange(&pg_connect_failing, true))
			log_warn(NULL, "postgres: cannot connect",
			    LF_S("error", PQerrorMessage(c->conn)));
		pg_disconnect(c);
		return -ENOTCONN;
	}
	if (atomic_exchange(&pg_connect_failing, false))
		log_info(NULL, "postgres: connected again");
	PQsetNoticeProcessor(c->conn, pg_notice, NULL);
	res = PQexec(c->conn, "SET TIME ZONE 'UTC'");
	if (pg_check(c, res, PGRES_COMMAND_OK, "set time zone") != 0) {
		pg_disconnect(c);
		return -ENOTCONN;
	}
	PQclear(res);
	*ret = c;
	return 0;
}

static int
pg_prepare(struct pg_conn *c, const char *name, const char *sql, int nparams)
{
	PGresult *res = PQprepare(c->conn, name, sql, nparams, NULL);
	int rv;

	if ((rv = pg_check(c, res, PGRES_COMMAND_OK, name)) != 0)
		return rv;
	PQclear(res);
	return 0;
}

/* Runs prepared statement i (preparing it first if need be); *ret is the
 * result (caller clears) with status want. */
static int
pg_run(struct pg_conn *c, enum pg_stmt i, int n, const char *const *vals,
    ExecStatusType want, PGresult **ret)
{
	PGresult *res;
	int rv;

	if (!c->prepared[i]) {
		if ((rv = pg_prepare(c, pg_stmt_name[i], pg_stmt_sql[i], n)) !=
		    0)
			return rv;
		c->prepared[i] = true;
	}
	res = PQexecPrepared(c->conn, pg_stmt_name[i], n, vals, NULL, NULL, 0);
	if ((rv = pg_check(c, res, want, pg_stmt_name[i])) != 0)
		return rv;
	*ret = res;
	return 0;
}

static int64_t
pg_int(const PGresult *res, int row, int col)
{
	const char *s;
	char *end;
	long long v;

	if (row >= PQntuples(res) || PQgetisnull(res, row, col))
		return 0;
	s = PQgetvalue(res, row, col);
	v = strtoll(s, &end, 10);
	return *end == '\0' ? (int64_t)v : 0;
}

/* The SQL of an insert chunk of rows rows into b. */
static int
pg_chunk_sql(struct buf *b, int rows)
{
	int rv = buf_append_str(b,
	    "WITH ins AS (INSERT INTO usage_events (event_id, ts_ms, day, "
	    "request_id, worker_id, seq, subject_type, subject_id, ip, "
	    "provider, model, input_tokens, output_tokens, cache_read_tokens, "
	    "cache_write_tokens, cost_micro_usd, cached, status, http_status, "
	    "upstream_ms, total_ms, received_ms) VALUES ");

	for (int r = 0; rv == 0 && r < rows; r++) {
		rv = buf_append_str(b, r == 0 ? "(" : ",(");
		for (int k = 0; rv == 0 && k < PG_COLS; k++)
			rv = buf_printf(
			    b, "%s$%d", k == 0 ? "" : ",", r * PG_COLS + k + 1);
		if (rv == 0)
			rv = buf_append_str(b, ")");
	}
	if (rv == 0)
		rv = buf_append_str(b,
		    " ON CONFLICT (event_id) DO NOTHING RETURNING day, "
		    "subject_type, subject_id, provider, model, status, "
		    "cached, "
		    "input_tokens, output_tokens, cache_read_tokens, "
		    "cache_write_tokens, cost_micro_usd) "
		    "INSERT INTO usage_daily AS d (day, subject_type, "
		    "subject_id, provider, model, requests, errors, cached, "
		    "input_tokens, output_tokens, cache_read_tokens, "
		    "cache_write_tokens, cost_micro_usd) "
		    "SELECT day, subject_type, subject_id, provider, model, "
		    "COUNT(*), COUNT(*) FILTER (WHERE status = 'error'), "
		    "COUNT(*) FILTER (WHERE cached), SUM(input_tokens), "
		    "SUM(output_tokens), SUM(cache_read_tokens), "
		    "SUM(cache_write_tokens), SUM(cost_micro_usd) FROM ins "
		    "GROUP BY day, subject_type, subject_id, provider, model "
		    "ON CONFLICT (day, subject_type, subject_id, provider, "
		    "model) DO UPDATE SET requests = d.requests + "
		    "EXCLUDED.requests, errors = d.errors + EXCLUDED.errors, "
		    "cached = d.cached + EXCLUDED.cached, input_tokens = "
		    "d.input_tokens + EXCLUDED.input_tokens, output_tokens = "
		    "d.output_tokens + EXCLUDED.output_tokens, "
		    "cache_read_tokens = d.cache_read_tokens + "
		    "EXCLUDED.cache_read_tokens, cache_write_tokens = "
		    "d.cache_write_tokens + EXCLUDED.cache_write_tokens, "
		    "cost_micro_usd = d.cost_micro_usd + "
		    "EXCLUDED.cost_micro_usd");
	return rv;
}

static const char *
pg_num(struct pg_conn *c, size_t slot, int64_t v)
{
	snprintf(c->nums[slot], PG_NUM_LEN, "%" PRId64, v);
	return c->nums[slot];
}

/* Inserts ev[0..rows) with the prepared chunk statement of that size. */
static int
pg_insert_chunk(
    struct pg_conn *c, int kind, const struct msg_usage_event *ev, int64_t now)
{
	int rows = pg_chunk_rows(kind);
	PGresult *res;
	char name[32];
	struct buf sql;
	size_t base;
	int rv;

	snprintf(name, sizeof(name), "acct_ins_%d", rows);
	if (!c->chunk_prepared[kind]) {
		buf_init(&sql, PG_SQL_MAX);
		rv = pg_chunk_sql(&sql, rows);
		if (rv == 0)
			rv = pg_prepare(c, name, sql.data, rows * PG_COLS);
		buf_free(&sql);
		if (rv != 0)
			return rv;
		c->chunk_prepared[kind] = true;
	}
	for (int r = 0; r < rows; r++) {
		const struct msg_usage_event *e = &ev[r];
		const char **v = &c->values[r * PG_COLS];

		base = (size_t)r * PG_COLS;
		clock_fmt_day(e->ts_ms, c->days[r], sizeof(c->days[r]));
		v[0] = e->event_id;
		v[1] = pg_num(c, base + 1, e->ts_ms);
		v[2] = c->days[r];
		v[3] = e->request_id;
		v[4] = e->worker_id;
		v[5] = pg_num(c, base + 5, e->seq);
		v[6] = e->subject_type;
		v[7] = e->subject_id;
		v[8] = e->ip;
		v[9] = e->provider;
		v[10] = e->model;
		v[11] = pg_num(c, base + 11, e->input_tokens);
		v[12] = pg_num(c, base + 12, e->output_tokens);
		v[13] = pg_num(c, base + 13, e->cache_read_tokens);
		v[14] = pg_num(c, base + 14, e->cache_write_tokens);
		v[15] = pg_num(c, base + 15, e->cost_micro_usd);
		v[16] = e->cached ? "t" : "f";
		v[17] = e->status;
		v[18] = pg_num(c, base + 18, e->http_status);
		v[19] = pg_num(c, base + 19, e->upstream_ms);
		v[20] = pg_num(c, base + 20, e->total_ms);
		v[21] = pg_num(c, base + 21, now);
	}
	res = PQexecPrepared(c->conn, name, rows * PG_COLS,
	    (const char *const *)c->values, NULL, NULL, 0);
	if ((rv = pg_check(c, res, PGRES_COMMAND_OK, name)) != 0)
		return rv;
	PQclear(res);
	return 0;
}

/* Advances the committed seq of one stream. */
static int
pg_stream(struct pg_conn *c, const char *worker_id, int64_t now, int64_t *ret)
{
	char base_s[PG_NUM_LEN], top_s[PG_NUM_LEN], now_s[PG_NUM_LEN];
	const char *v[3] = {worker_id, base_s, NULL};
	int64_t base, top;
	PGresult *res;
	int rv;

	if ((rv = pg_run(c, PG_STREAM_GET, 1, v, PGRES_TUPLES_OK, &res)) != 0)
		return rv;
	base = pg_int(res, 0, 0);
	PQclear(res);
	snprintf(base_s, sizeof(base_s), "%" PRId64, base);
	if ((rv = pg_run(c, PG_STREAM_WALK, 2, v, PGRES_TUPLES_OK, &res)) != 0)
		return rv;
	top = pg_int(res, 0, 0);
	PQclear(res);
	if (top > base) {
		snprintf(top_s, sizeof(top_s), "%" PRId64, top);
		snprintf(now_s, sizeof(now_s), "%" PRId64, now);
		v[1] = top_s;
		v[2] = now_s;
		if ((rv = pg_run(
			 c, PG_STREAM_PUT, 3, v, PGRES_COMMAND_OK, &res)) != 0)
			return rv;
		PQclear(res);
	}
	*ret = top > base ? top : base;
	return 0;
}

static int
pg_commit(void *p, const struct msg_usage_event *ev, size_t n,
    int64_t received_ms, struct acct_hwm *hwm, size_t *ret_nhwm)
{
	struct pg_conn *c = p;
	size_t i = 0, k, nh = 0;
	int kind, rows, rv;

	if ((rv = pg_exec(c, "BEGIN")) != 0)
		return rv;
	while (i < n) {
		for (kind = PG_CHUNK_KINDS - 1; kind > 0; kind--)
			if ((size_t)pg_chunk_rows(kind) <= n - i)
				break;
		rows = pg_chunk_rows(kind);
		if ((rv = pg_insert_chunk(c, kind, &ev[i], received_ms)) != 0)
			goto rollback;
		i += (size_t)rows;
	}
	nh = acct_hwm_streams(ev, n, hwm);
	for (k = 0; k < nh; k++)
		if ((rv = pg_stream(c, hwm[k].worker_id, received_ms,
			 &hwm[k].committed_seq)) != 0)
			goto rollback;
	if ((rv = pg_exec(c, "COMMIT")) != 0)
		return rv;
	*ret_nhwm = nh;
	return 0;
rollback:
	if (PQstatus(c->conn) == CONNECTION_OK)
		PQclear(PQexec(c->conn, "ROLLBACK"));
	return rv;
}

static int
pg_committed_seq(void *p, const char *worker_id, int64_t *ret)
{
	const char *v[1] = {worker_id};
	PGresult *res;
	int rv;

	if ((rv = pg_run(p, PG_STREAM_GET, 1, v, PGRES_TUPLES_OK, &res)) != 0)
		return rv;
	*ret = pg_int(res, 0, 0);
	PQclear(res);
	return 0;
}

static int
pg_cost_day(void *p, const char *subject_type, const char *subject_id,
    const char *day, int64_t *ret)
{
	const char *v[3] = {day, subject_type, subject_id};
	PGresult *res;
	int rv;

	if ((rv = pg_run(p, PG_COST_DAY, 3, v, PGRES_TUPLES_OK, &res)) != 0)
		return rv;
	*ret = pg_int(res, 0, 0);
	PQclear(res);
	return 0;
}

static int
pg_query(struct pg_conn *c, const char *sql, const struct acct_query *q,
    PGresult **ret)
{
	const char *v[5] = {
	    q->from, q->to, q->provider, q->subject_type, q->subject_id};
	PGresult *res = PQexecParams(c->conn, sql, 5, NULL, v, NULL, NULL, 0);
	int rv;

	if ((rv = pg_check(c, res, PGRES_TUPLES_OK, "report")) != 0)
		return rv;
	*ret = res;
	return 0;
}

static int
pg_report(void *p, const struct acct_query *q, struct acct_report *ret)
{
	static const char sql_days[] =
	    "SELECT day::text, SUM(requests)::bigint, SUM(errors)::bigint, "
	    "SUM(cached)::bigint, SUM(input_tokens)::bigint, "
	    "SUM(output_tokens)::bigint, SUM(cache_read_tokens)::bigint, "
	    "SUM(cache_write_tokens)::bigint, SUM(cost_micro_usd)::bigint "
	    "FROM usage_daily WHERE " PG_FILTER " GROUP BY day ORDER BY day";
	static const char sql_pct_days[] =
	    "SELECT day::text, percentile_disc(0.5) WITHIN GROUP (ORDER BY "
	    "total_ms), percentile_disc(0.95) WITHIN GROUP (ORDER BY total_ms) "
	    "FROM usage_events WHERE " PG_FILTER " GROUP BY day";
	static const char sql_pct_all[] =
	    "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY total_ms), "
	    "percentile_disc(0.95) WITHIN GROUP (ORDER BY total_ms) FROM "
	    "usage_events WHERE " PG_FILTER;
	struct pg_conn *c = p;
	struct acct_day *d;
	PGresult *res = NULL;
	int rv, r, rows;

	memset(ret, 0, sizeof(*ret));
	if ((rv = pg_exec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ "
			     "ONLY")) != 0)
		return rv;
	if ((rv = pg_query(c, sql_days, q, &res)) != 0)
		goto out;
	rows = PQntuples(res);
	for (r = 0; r < rows && ret->ndays < PROTO_DAYS_MAX; r++) {
		d = &ret->days[ret->ndays++];
		snprintf(d->day, sizeof(d->day), "%s", PQgetvalue(res, r, 0));
		d->requests = pg_int(res, r, 1);
		d->errors = pg_int(res, r, 2);
		d->cached = pg_int(res, r, 3);
		d->input_tokens = pg_int(res, r, 4);
		d->output_tokens = pg_int(res, r, 5);
		d->cache_read_tokens = pg_int(res, r, 6);
		d->cache_write_tokens = pg_int(res, r, 7);
		d->cost_micro_usd = pg_int(res, r, 8);
		ret->totals.requests += d->requests;
		ret->totals.errors += d->errors;
		ret->totals.cached += d->cached;
		ret->totals.input_tokens += d->input_tokens;
		ret->totals.output_tokens += d->output_tokens;
		ret->totals.cache_read_tokens += d->cache_read_tokens;
		ret->totals.cache_write_tokens += d->cache_write_tokens;
		ret->totals.cost_micro_usd += d->cost_micro_usd;
	}
	PQclear(res);
	if ((rv = pg_query(c, sql_pct_days, q, &res)) != 0)
		goto out;
	rows = PQntuples(res);
	for (r = 0; r < rows; r++)
		for (size_t i = 0; i < ret->ndays; i++)
			if (strcmp(ret->days[i].day, PQgetvalue(res, r, 0)) ==
			    0) {
				ret->days[i].p50_ms = pg_int(res, r, 1);
				ret->days[i].p95_ms = pg_int(res, r, 2);
			}
	PQclear(res);
	if ((rv = pg_query(c, sql_pct_all, q, &res)) != 0)
		goto out;
	ret->totals.p50_ms = pg_int(res, 0, 0);
	ret->totals.p95_ms = pg_int(res, 0, 1);
	PQclear(res);
out:
	if (rv == 0)
		rv = pg_exec(c, "COMMIT");
	else if (PQstatus(c->conn) == CONNECTION_OK)
		PQclear(PQexec(c->conn, "ROLLBACK"));
	return rv;
}

/* ---- migrations ---- */

static int
pg_mig_begin(void *p)
{
	struct pg_conn *c = p;
	PGresult *res;
	int rv;

	if ((rv = pg_exec(c, "BEGIN")) != 0)
		return rv;
	res = PQexec(c->conn, "SELECT pg_advisory_xact_lock(" PG_MIG_LOCK ")");
	if ((rv = pg_check(c, res, PGRES_TUPLES_OK, "migration lock")) == 0) {
		PQclear(res);
		return 0;
	}
	if (PQstatus(c->conn) == CONNECTION_OK)
		PQclear(PQexec(c->conn, "ROLLBACK"));
	return rv;
}

static int
pg_mig_end(void *p, bool commit)
{
	struct pg_conn *c = p;

	if (commit)
		return pg_exec(c, "COMMIT");
	if (PQstatus(c->conn) == CONNECTION_OK)
		PQclear(PQexec(c->conn, "ROLLBACK"));
	return 0;
}

static int
pg_has_object(void *p, enum acct_object kind, const char *name, bool *ret)
{
	static const char sql_rel[] =
	    "SELECT COUNT(*) FROM pg_class c JOIN pg_namespace n ON n.oid = "
	    "c.relnamespace WHERE c.relname = $1 AND c.relkind = $2 AND "
	    "n.nspname = ANY (current_schemas(false))";
	static const char sql_trigger[] =
	    "SELECT COUNT(*) FROM pg_trigger WHERE tgname = $1 AND NOT "
	    "tgisinternal";
	struct pg_conn *c = p;
	const char *v[2] = {name, kind == ACCT_OBJ_TABLE ? "r" : "i"};
	PGresult *res;
	int rv;

	res = PQexecParams(c->conn,
	    kind == ACCT_OBJ_TRIGGER ? sql_trigger : sql_rel,
	    kind == ACCT_OBJ_TRIGGER ? 1 : 2, NULL, v, NULL, NULL, 0);
	if ((rv = pg_check(c, res, PGRES_TUPLES_OK, "has_object")) != 0)
		return rv;
	*ret = pg_int(res, 0, 0) > 0;
	PQclear(res);
	return 0;
}

static int
pg_mig_table(void *p, bool create, bool *ret_exists)
{
	int rv;

	if (create &&
	    (rv = pg_exec(p, "CREATE TABLE IF NOT EXISTS schema_migrations ("
			     "version INTEGER PRIMARY KEY, name TEXT NOT "
			     "NULL, checksum TEXT NOT NULL, applied_ms "
			     "BIGINT NOT NULL)")) != 0)
		return rv;
	return pg_has_object(
	    p, ACCT_OBJ_TABLE, "schema_migrations", ret_exists);
}

static int
pg_mig_list(void *p, struct acct_mig_row *rows, size_t cap, size_t *ret_n)
{
	struct pg_conn *c = p;
	PGresult *res;
	size_t n = 0;
	int rv;

	res = PQexec(c->conn, "SELECT version, name, checksum FROM "
			      "schema_migrations ORDER BY version");
	if ((rv = pg_check(c, res, PGRES_TUPLES_OK, "mig_list")) != 0)
		return rv;
	for (int r = 0; r < PQntuples(res) && n < cap; r++, n++) {
		rows[n].version = (int)pg_int(res, r, 0);
		snprintf(rows[n].name, sizeof(rows[n].name), "%s",
		    PQgetvalue(res, r, 1));
		snprintf(rows[n].checksum, sizeof(rows[n].checksum), "%s",
		    PQgetvalue(res, r, 2));
	}
	PQclear(res);
	*ret_n = n;
	return 0;
}

static int
pg_mig_mark(
    void *p, const struct acct_migration *m, const char *checksum, bool applied)
{
	struct pg_conn *c = p;
	char ver[16], now[PG_NUM_LEN];
	const char *v[4] = {ver, m->name, checksum, now};
	PGresult *res;
	int rv;

	snprintf(ver, sizeof(ver), "%d", m->version);
	snprintf(now, sizeof(now), "%" PRId64, clock_real_ms());
	res = applied ? PQexecParams(c->conn,
			    "INSERT INTO schema_migrations (version, name, "
			    "checksum, applied_ms) VALUES ($1, $2, $3, $4)",
			    4, NULL, v, NULL, NULL, 0)
		      : PQexecParams(c->conn,
			    "DELETE FROM schema_migrations WHERE version = $1",
			    1, NULL, v, NULL, NULL, 0);
	if ((rv = pg_check(c, res, PGRES_COMMAND_OK, "mig_mark")) != 0)
		return rv;
	PQclear(res);
	/* Plans prepared against the old schema: prepare again. */
	if ((rv = pg_exec(c, "DEALLOCATE ALL")) != 0)
		return rv;
	memset(c->prepared, 0, sizeof(c->prepared));
	memset(c->chunk_prepared, 0, sizeof(c->chunk_prepared));
	return 0;
}

const struct acct_db_ops acct_pg_ops = {
    .name = "postgres",
    .kind = ACCT_DB_POSTGRES,
    .connect = pg_connect,
    .disconnect = pg_disconnect,
    .commit = pg_commit,
    .committed_seq = pg_committed_seq,
    .cost_day = pg_cost_day,
    .report = pg_report,
    .mig_begin = pg_mig_begin,
    .mig_end = pg_mig_end,
    .exec = pg_exec,
    .mig_table = pg_mig_table,
    .mig_list = pg_mig_list,
    .mig_mark = pg_mig_mark,
    .has_object = pg_has_object,
};
