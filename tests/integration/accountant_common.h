/*
 * Shared by the accountant's integration tests: a database (a private
 * PostgreSQL, or an SQLite file), the real aiproxy-accountant on free
 * loopback ports, a usage_sender playing a worker, events with costs from
 * the model table, direct SQL on the database, and the test bodies that
 * run against either database.
 */
#ifndef AIPROXY_ACCOUNTANT_COMMON_H
#define AIPROXY_ACCOUNTANT_COMMON_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <check.h>

#include "harness.h"
#include "models.h"
#include "proto.h"
#include "usage_sender.h"

#define AIT_SQL_MAX 1024

/* The database of one test: a database in the suite's PostgreSQL, or an
 * SQLite file in the test's folder. */
struct ait_db {
	bool pg;
	char url[PATH_MAX + 32]; /* DATABASE_URL */
	char path[PATH_MAX];     /* SQLite file */
	void *conn;              /* PGconn * or sqlite3 * */
};

struct ait_acct {
	struct hproc proc;
	bool running;
	char bin[PATH_MAX];
	char dir[PATH_MAX];
	char log[PATH_MAX];
	char rep_url[64];
	char usage_url[64];
	char db_url[PATH_MAX + 32];
	int starts;
};

/* ---- suite set-up (main) ---- */

/* A private folder for the run (TMPDIR points into it); PostgreSQL too
 * when with_pg.  Returns false when something is missing. */
bool ait_suite_init(bool with_pg);
void ait_suite_fini(void);
/* The suite's PostgreSQL (NULL without one). */
struct h_pg *ait_pg(void);

/* ---- per test ---- */

/* A new folder for this test (under the run's folder). */
void ait_test_dir(char *out, size_t len, const char *name);
/* A fresh database for test name: CREATE DATABASE in the suite's
 * PostgreSQL, or a file in dir. */
void ait_db_open(struct ait_db *d, bool pg, const char *dir, const char *name);
void ait_db_close(struct ait_db *d);
/* One integer from sql with text parameters $1..$n (used in order). */
int64_t ait_db_int(
    struct ait_db *d, const char *sql, int n, const char *const *params);
/* Calls fn for each row (values as text, NULL for NULL). */
typedef void (*ait_row_fn)(void *arg, int ncols, const char *const *vals);
void ait_db_rows(struct ait_db *d, const char *sql, int n,
    const char *const *params, ait_row_fn fn, void *arg);

/* Starts aiproxy-accountant on db_url and waits for its pong. */
void ait_acct_start(struct ait_acct *a, const char *dir, const char *db_url);
/* Starts it again on the same ports and database. */
void ait_acct_restart(struct ait_acct *a);
/* Stops it with sig (SIGTERM: a clean stop; SIGKILL). */
void ait_acct_stop(struct ait_acct *a, int sig);
/* One request to the accountant; reply decoded into *ret (payload
 * borrowed from *ret_buf, caller frees). */
int ait_call(const char *url, enum msg_type t, const void *m,
    enum msg_type want, union proto_msg *ret, char **ret_buf);

/* Runs aiproxy-migrate with args (NULL-ended) on db_url; its stdout and
 * stderr in *ret_out (caller frees).  Returns the exit status. */
int ait_migrate(const char *dir, const char *db_url, const char *const *args,
    char **ret_out);

/* A usage_sender for worker_id, dialing a. */
struct usage_sender *ait_sender_open(
    const struct ait_acct *a, const char *dir, const char *worker_id);
/* Same with a journal bound and segment size (0: defaults). */
struct usage_sender *ait_sender_open_sized(const struct ait_acct *a,
    const char *dir, const char *worker_id, uint64_t max_bytes,
    size_t segment_bytes);
/* Polls until the sender's committed seq reaches its last seq, and that
 * is want.  Fails the test after timeout_ms. */
void ait_sender_drain(struct usage_sender *s, int64_t want, int timeout_ms);

/* The model table (config/models.json), loaded once. */
const struct model_table *ait_models(void);
/* A usage event number i: its model, tokens, status and latency vary
 * with i; cost_micro_usd from the model table's formula. */
void ait_event(struct msg_usage_event *ev, int64_t i, const char *subject_id,
    int64_t ts_ms);

/* Milliseconds since an arbitrary start (monotonic). */
int64_t ait_now_ms(void);
void ait_sleep_ms(int ms);

/* ---- test bodies, for either database ---- */

/* N events -> N rows, each cost equal to the formula on its own row. */
void ait_body_exact_costs(bool pg);
/* SIGKILL the accountant about every 2 s during 5,000 events: exactly
 * 5,000 rows, seqs 1..5000, after the drain. */
void ait_body_sigkill(bool pg);
/* aiproxy-migrate: verify on fresh, up, verify, rollback, up. */
void ait_body_migrations(bool pg);
/* Analytics and the daily cost equal to the test's own SQL over the raw
 * rows; a subject sees only its own. */
void ait_body_analytics(bool pg);
/* PostgreSQL halted 30 s during the load: every row lands after. */
void ait_body_pg_down(void);
/* A full journal: emit fails (-ENOSPC), the sender is not ready (the
 * worker answers 503) until catch-up trimmed it. */
void ait_body_journal_full(void);

#endif
