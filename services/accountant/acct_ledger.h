/*
 * The ledger: a bounded queue of usage events drained by one writer
 * thread, which commits them in batches (every few ms, or batch_max at a
 * time) in one transaction each, through a database backend (acct_db.h).
 * A second connection answers the queries (committed seqs, daily cost,
 * analytics), serialised by a mutex.
 *
 * When the database is down the writer keeps the queued events and
 * retries (backing off up to ACCT_RETRY_MAX_MS); events beyond the queue
 * are refused, never acknowledged: the workers' journals still hold them.
 * An event is acknowledged (its commit callback called with 0) only after
 * its transaction committed.
 */
#ifndef AIPROXY_ACCT_LEDGER_H
#define AIPROXY_ACCT_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "acct_db.h"
#include "proto.h"

#define ACCT_QUEUE_MAX    16384 /* events waiting for the writer */
#define ACCT_BATCH_MAX    2000  /* events per transaction */
#define ACCT_FLUSH_MS     5     /* longest wait to fill a batch */
#define ACCT_WAITERS_MAX  256
#define ACCT_RETRY_MIN_MS 100
#define ACCT_RETRY_MAX_MS 2000

struct acct_ledger_opts {
	const struct acct_db_ops *ops;
	const char *target;   /* connect string (kept secret) */
	const char *describe; /* printable, for logs */
	size_t queue_max;     /* 0: ACCT_QUEUE_MAX */
	size_t batch_max;     /* 0: ACCT_BATCH_MAX */
	int flush_ms;         /* 0: ACCT_FLUSH_MS */
};

struct acct_ledger_stats {
	bool db_up;
	uint64_t queued;          /* now */
	uint64_t accepted;        /* events queued since start */
	uint64_t refused;         /* not queued: full or shutting down */
	uint64_t committed;       /* events through a committed batch */
	uint64_t commits;         /* transactions */
	uint64_t commit_failures; /* transactions that failed */
};

struct acct_ledger;

/*
 * Connects and applies pending migrations.  A database that cannot be
 * reached is not fatal (the writer keeps trying, migrating first); one
 * that refuses the migrations is (-EPROTO, -EIO).  Starts the writer.
 * Caller frees with acct_ledger_stop() then acct_ledger_free().
 */
int acct_ledger_open(
    const struct acct_ledger_opts *o, struct acct_ledger **ret);

/* 0: committed, -ENOTCONN: the database failed (the events stay queued
 * and may still land), -ESHUTDOWN: stopped before they committed. */
typedef void (*acct_commit_fn)(void *arg, int result);

/*
 * Queues n events (copied).  fn (may be NULL) is called exactly once, on
 * the writer thread, when they are committed or have failed.  -ENOBUFS:
 * no room for all n (none queued); -ENOTCONN: fn given and the database
 * is down (none queued: the caller answers now); -EBUSY: too many waiters;
 * -ESHUTDOWN.  fn is not called when this fails.
 */
int acct_ledger_submit(struct acct_ledger *l, const struct msg_usage_event *ev,
    size_t n, acct_commit_fn fn, void *arg);

/* The committed seq of a journal stream from the cache kept by the
 * writer; false when the stream is not cached. */
bool acct_ledger_committed_cached(
    struct acct_ledger *l, const char *worker_id, int64_t *ret);
/* Same, asking the database on a cache miss (then cached). */
int acct_ledger_committed(
    struct acct_ledger *l, const char *worker_id, int64_t *ret);
/* Settled cost of a subject on a UTC day. */
int acct_ledger_cost_day(struct acct_ledger *l, const char *subject_type,
    const char *subject_id, const char *day, int64_t *ret);
int acct_ledger_report(
    struct acct_ledger *l, const struct acct_query *q, struct acct_report *ret);

bool acct_ledger_db_up(struct acct_ledger *l);
const char *acct_ledger_backend(const struct acct_ledger *l);
void acct_ledger_stats(struct acct_ledger *l, struct acct_ledger_stats *ret);

/*
 * Stops taking events, gives the writer one last chance to commit what is
 * queued, fails the remaining waiters (-ESHUTDOWN) and joins it.  After
 * it, submit fails with -ESHUTDOWN but l stays valid until
 * acct_ledger_free().  Idempotent.
 */
void acct_ledger_stop(struct acct_ledger *l);
/* Stops if needed and frees.  Accepts NULL. */
void acct_ledger_free(struct acct_ledger *l);

#endif
