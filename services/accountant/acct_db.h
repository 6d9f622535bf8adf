/*
 * The accountant's databases behind one ops struct: PostgreSQL (libpq,
 * acct_pg.c) and SQLite (the embedded default, acct_sqlite.c).  One
 * connection (void *c) is used by one thread at a time.
 *
 * Errors: -ENOTCONN when the connection is gone (the caller disconnects
 * and connects again later), -EBUSY when the database is locked, -EIO for
 * a statement the database refused on a live connection, -ENOMEM.  Every
 * failure is logged once, where it happens.
 */
#ifndef AIPROXY_ACCT_DB_H
#define AIPROXY_ACCT_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "acct_migrate.h"
#include "proto.h"

#define ACCT_DAY_LEN 10 /* "YYYY-MM-DD" */

/* Counters of one day (or of the whole window, for totals). */
struct acct_day {
	char day[ACCT_DAY_LEN + 1];
	int64_t requests;
	int64_t errors; /* status "error" */
	int64_t cached; /* answered from the response cache */
	int64_t input_tokens;
	int64_t output_tokens;
	int64_t cache_read_tokens;
	int64_t cache_write_tokens;
	int64_t cost_micro_usd;
	int64_t p50_ms; /* total latency, nearest rank; 0 with no request */
	int64_t p95_ms;
};

/* What an analytics request selects: days from..to (UTC, inclusive). */
struct acct_query {
	char subject_type[PROTO_ENUM_MAX + 1]; /* "": everyone */
	char subject_id[PROTO_SUBJECT_MAX + 1];
	char provider[PROTO_NAME_MAX + 1]; /* "": every provider */
	char from[ACCT_DAY_LEN + 1];
	char to[ACCT_DAY_LEN + 1];
};

/* Days with at least one request, ascending, and the totals. */
struct acct_report {
	struct acct_day totals;
	struct acct_day days[PROTO_DAYS_MAX];
	size_t ndays;
};

/* The committed seq of a journal stream after a commit. */
struct acct_hwm {
	char worker_id[PROTO_NAME_MAX + 1];
	int64_t committed_seq;
};

/* A row of schema_migrations. */
struct acct_mig_row {
	int version;
	char name[64];
	char checksum[ACCT_CHECKSUM_LEN + 1];
};

enum acct_object { ACCT_OBJ_TABLE, ACCT_OBJ_INDEX, ACCT_OBJ_TRIGGER };

struct acct_db_ops {
	const char *name; /* "postgres" | "sqlite" */
	enum acct_db_kind kind;
	/* target: a libpq URL, or a file path. */
	int (*connect)(const char *target, void **ret);
	void (*disconnect)(void *c); /* accepts NULL */

	/*
	 * One transaction: inserts ev[0..n) (ON CONFLICT (event_id) DO
	 * NOTHING), adds the new ones to the daily roll-ups, and advances the
	 * committed seq of every journal stream in the batch (seq > 0) to the
	 * highest S with 1..S all recorded.  hwm (room for n) receives those
	 * streams, *ret_nhwm their count.
	 */
	int (*commit)(void *c, const struct msg_usage_event *ev, size_t n,
	    int64_t received_ms, struct acct_hwm *hwm, size_t *ret_nhwm);
	/* 0 for a stream never seen. */
	int (*committed_seq)(void *c, const char *worker_id, int64_t *ret);
	/* Settled cost of a subject on one UTC day. */
	int (*cost_day)(void *c, const char *subject_type,
	    const char *subject_id, const char *day, int64_t *ret);
	/* Counters from the roll-ups, latency percentiles from the events,
	 * in one consistent snapshot. */
	int (*report)(
	    void *c, const struct acct_query *q, struct acct_report *ret);

	/* Migrations.  begin/end: a transaction holding the migration lock. */
	int (*mig_begin)(void *c);
	int (*mig_end)(void *c, bool commit);
	int (*exec)(void *c, const char *sql); /* a script, no parameters */
	/* Whether schema_migrations exists (created first when create). */
	int (*mig_table)(void *c, bool create, bool *ret_exists);
	int (*mig_list)(
	    void *c, struct acct_mig_row *rows, size_t cap, size_t *ret_n);
	/* Records (applied) or forgets (!applied) step m. */
	int (*mig_mark)(void *c, const struct acct_migration *m,
	    const char *checksum, bool applied);
	int (*has_object)(
	    void *c, enum acct_object kind, const char *name, bool *ret);
};

extern const struct acct_db_ops acct_pg_ops;
extern const struct acct_db_ops acct_sqlite_ops;

/*
 * DATABASE_URL -> backend and target.  NULL or "": SQLite in
 * <state_dir>/aiproxy.db (the folder is created); "sqlite:///abs/path" or
 * "sqlite://rel/path": SQLite there; "postgresql://..." or
 * "postgres://...": PostgreSQL.  describe gets a printable form without
 * credentials.  -EINVAL (message in err) for anything else.
 */
int acct_db_resolve(const char *database_url, const char *state_dir,
    const struct acct_db_ops **ret_ops, char *target, size_t target_len,
    char *describe, size_t describe_len, char *err, size_t err_len);

/* Nearest-rank percentile position (1..n) of fraction p among n values:
 * ceil(p * n), as PostgreSQL's percentile_disc. */
int64_t acct_pct_rank(double p, int64_t n);

/* The journal streams (worker_id of events with seq > 0) in ev[0..n),
 * each once, into hwm (room for n); their count.  For commit(). */
size_t acct_hwm_streams(
    const struct msg_usage_event *ev, size_t n, struct acct_hwm *hwm);

#endif
