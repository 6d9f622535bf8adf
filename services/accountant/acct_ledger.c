/*
 * The ledger's queue, writer thread and query connection; see
 * acct_ledger.h.
 */
#include "acct_ledger.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "acct_migrate.h"
#include "clock.h"
#include "log.h"

#define ACCT_STREAMS_MAX    1024
#define ACCT_TARGET_MAX     2048
#define ACCT_QUERY_RETRY_MS 1000
/* Event times outside [2000-01-01, 2100-01-01) are the worker's clock
 * gone wrong: recorded at the time of receipt instead. */
#define ACCT_TS_MIN 946684800000LL
#define ACCT_TS_MAX 4102444800000LL

struct acct_waiter {
	uint64_t ticket; /* done once ticket_done reaches it */
	acct_commit_fn fn;
	void *arg;
};

struct acct_stream {
	char id[PROTO_NAME_MAX + 1];
	int64_t committed;
};

struct acct_ledger {
	const struct acct_db_ops *ops;
	char target[ACCT_TARGET_MAX];
	char describe[512];
	size_t queue_max, batch_max;
	int flush_ms;

	pthread_mutex_t mu;
	pthread_cond_t cv; /* events queued, or stop */
	struct msg_usage_event *ring;
	size_t head, count;
	uint64_t ticket_in, ticket_done;
	struct acct_waiter *waiters;
	size_t nwaiters;
	bool stopping, stopped, db_up;
	struct acct_ledger_stats st;

	/* The writer thread's own. */
	pthread_t writer;
	bool writer_started;
	void *wconn;
	bool migrated;
	struct msg_usage_event *batch;
	struct acct_hwm *hwm;
	struct acct_waiter *fire;

	pthread_mutex_t cache_mu;
	struct acct_stream *streams;
	size_t nstreams;

	pthread_mutex_t qmu;
	void *qconn;
	int64_t q_retry_ms;
};

/* ---- committed seq cache ---- */

static void
ledger_cache_put(struct acct_ledger *l, const char *id, int64_t committed)
{
	size_t i;

	pthread_mutex_lock(&l->cache_mu);
	for (i = 0; i < l->nstreams; i++)
		if (strcmp(l->streams[i].id, id) == 0)
			break;
	if (i == l->nstreams) {
		if (l->nstreams == ACCT_STREAMS_MAX)
			goto out; /* the database answers the others */
		snprintf(l->streams[i].id, sizeof(l->streams[i].id), "%s", id);
		l->streams[i].committed = committed;
		l->nstreams++;
	} else if (committed > l->streams[i].committed) {
		l->streams[i].committed = committed;
	}
out:
	pthread_mutex_unlock(&l->cache_mu);
}

bool
acct_ledger_committed_cached(
    struct acct_ledger *l, const char *worker_id, int64_t *ret)
{
	bool hit = false;

	pthread_mutex_lock(&l->cache_mu);
	for (size_t i = 0; i < l->nstreams; i++)
		if (strcmp(l->streams[i].id, worker_id) == 0) {
			*ret = l->streams[i].committed;
			hit = true;
			break;
		}
	pthread_mutex_unlock(&l->cache_mu);
	return hit;
}

/* ---- the writer ---- */

/* A connection with every migration applied, in *ret. */
static int
ledger_connect(struct acct_ledger *l, void **ret)
{
	void *c = NULL;
	int rv;

	if ((rv = l->ops->connect(l->target, &c)) != 0)
		return rv;
	if (!l->migrated) {
		if ((rv = acct_migrate_up(l->ops, c, NULL, NULL)) != 0) {
			log_error(NULL, "cannot migrate the database",
			    LF_S("database", l->describe),
			    LF_S("error", strerror(-rv)));
			l->ops->disconnect(c);
			return rv;
		}
		l->migrated = true;
	}
	*ret = c;
	return 0;
}

static void
ledger_deadline(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Moves the waiters that are done (all when every is set) to l->fire.
 * Under mu. */
static size_t
ledger_take_waiters(struct acct_ledger *l, bool every)
{
	size_t i, k = 0, n = 0;

	for (i = 0; i < l->nwaiters; i++) {
		if (every || l->waiters[i].ticket <= l->ticket_done)
			l->fire[n++] = l->waiters[i];
		else
			l->waiters[k++] = l->waiters[i];
	}
	l->nwaiters = k;
	return n;
}

static void
ledger_fire(struct acct_ledger *l, size_t n, int result)
{
	for (size_t i = 0; i < n; i++)
		l->fire[i].fn(l->fire[i].arg, result);
}

/* Commits batch[0..n) on the writer connection (connecting first). */
static int
ledger_write(struct acct_ledger *l, size_t n, size_t *ret_nhwm)
{
	int rv;

	if (l->wconn == NULL && (rv = ledger_connect(l, &l->wconn)) != 0)
		return rv;
	rv = l->ops->commit(
	    l->wconn, l->batch, n, clock_real_ms(), l->hwm, ret_nhwm);
	if (rv != 0) {
		/* Start afresh: a broken connection, a stale statement. */
		l->ops->disconnect(l->wconn);
		l->wconn = NULL;
	}
	return rv;
}

static void
ledger_set_up(struct acct_ledger *l, bool up, int err)
{
	if (l->db_up == up)
		return;
	l->db_up = up;
	l->st.db_up = up;
	if (up)
		log_info(NULL, "database reachable again",
		    LF_S("database", l->describe), LF_I("queued", l->count));
	else
		log_error(NULL,
		    "database unavailable: events wait in the queue",
		    LF_S("database", l->describe),
		    LF_S("error", strerror(-err)), LF_I("queued", l->count));
}

static void *
ledger_main(void *arg)
{
	struct acct_ledger *l = arg;
	struct timespec until;
	size_t n, nh, nfire, i;
	int backoff = 0, rv;

	pthread_mutex_lock(&l->mu);
	for (;;) {
		while (!l->stopping && l->count == 0 && l->db_up)
			pthread_cond_wait(&l->cv, &l->mu);
		if (l->stopping && (l->count == 0 || !l->db_up))
			break;
		if (l->count == 0) {
			/* Down with nothing to write: probe the database. */
			pthread_mutex_unlock(&l->mu);
			rv =
			    l->wconn == NULL ? ledger_connect(l, &l->wconn) : 0;
			pthread_mutex_lock(&l->mu);
			if (rv == 0) {
				ledger_set_up(l, true, 0);
				backoff = 0;
				continue;
			}
			goto wait;
		}
		if (!l->stopping && l->count < l->batch_max && backoff == 0) {
			/* Let a batch fill for a few ms. */
			ledger_deadline(&until, l->flush_ms);
			while (
			    !l->stopping && l->count < l->batch_max &&
			    pthread_cond_timedwait(&l->cv, &l->mu, &until) == 0)
				;
		}
		n = l->count < l->batch_max ? l->count : l->batch_max;
		for (i = 0; i < n; i++)
			l->batch[i] = l->ring[(l->head + i) % l->queue_max];
		pthread_mutex_unlock(&l->mu);

		nh = 0;
		rv = ledger_write(l, n, &nh);
		if (rv == 0)
			for (i = 0; i < nh; i++)
				ledger_cache_put(l, l->hwm[i].worker_id,
				    l->hwm[i].committed_seq);

		pthread_mutex_lock(&l->mu);
		if (rv == 0) {
			ledger_set_up(l, true, 0);
			l->head = (l->head + n) % l->queue_max;
			l->count -= n;
			l->ticket_done += n;
			l->st.committed += n;
			l->st.commits++;
			backoff = 0;
			nfire = ledger_take_waiters(l, false);
		} else {
			l->st.commit_failures++;
			ledger_set_up(l, false, rv);
			nfire = ledger_take_waiters(l, true);
		}
		pthread_mutex_unlock(&l->mu);
		ledger_fire(l, nfire, rv == 0 ? 0 : -ENOTCONN);
		pthread_mutex_lock(&l->mu);
		if (rv == 0)
			continue;
	wait:
		if (l->stopping)
			break;
		backoff = backoff == 0 ? ACCT_RETRY_MIN_MS : backoff * 2;
		if (backoff > ACCT_RETRY_MAX_MS)
			backoff = ACCT_RETRY_MAX_MS;
		ledger_deadline(&until, backoff);
		while (!l->stopping &&
		       pthread_cond_timedwait(&l->cv, &l->mu, &until) == 0)
			;
	}
	if (l->count > 0)
		log_warn(NULL,
		    "stopping with events not committed (the "
		    "journals still hold them)",
		    LF_I("events", l->count));
	l->stopped = true;
	nfire = ledger_take_waiters(l, true);
	pthread_mutex_unlock(&l->mu);
	ledger_fire(l, nfire, -ESHUTDOWN);
	return NULL;
}

int
acct_ledger_submit(struct acct_ledger *l, const struct msg_usage_event *ev,
    size_t n, acct_commit_fn fn, void *arg)
{
	struct msg_usage_event *slot;
	int64_t now = 0;
	int rv = 0;

	pthread_mutex_lock(&l->mu);
	if (l->stopping)
		rv = -ESHUTDOWN;
	else if (fn != NULL && !l->db_up)
		rv = -ENOTCONN;
	else if (n > l->queue_max - l->count)
		rv = -ENOBUFS;
	else if (fn != NULL && l->nwaiters == ACCT_WAITERS_MAX)
		rv = -EBUSY;
	if (rv != 0) {
		l->st.refused += n;
		pthread_mutex_unlock(&l->mu);
		return rv;
	}
	for (size_t i = 0; i < n; i++) {
		slot = &l->ring[(l->head + l->count) % l->queue_max];
		*slot = ev[i];
		if (slot->ts_ms < ACCT_TS_MIN || slot->ts_ms >= ACCT_TS_MAX) {
			if (now == 0)
				now = clock_real_ms();
			log_warn(slot->request_id,
			    "usage event time out of range: using now",
			    LF_S("event_id", slot->event_id),
			    LF_I("ts_ms", slot->ts_ms));
			slot->ts_ms = now;
		}
		l->count++;
	}
	l->ticket_in += n;
	l->st.accepted += n;
	if (fn != NULL) {
		l->waiters[l->nwaiters].ticket = l->ticket_in;
		l->waiters[l->nwaiters].fn = fn;
		l->waiters[l->nwaiters].arg = arg;
		l->nwaiters++;
	}
	pthread_cond_signal(&l->cv);
	pthread_mutex_unlock(&l->mu);
	return 0;
}

/* ---- queries ---- */

/* The query connection, connecting when needed (at most once per
 * ACCT_QUERY_RETRY_MS while the database is down).  Under qmu. */
static int
ledger_qconn(struct acct_ledger *l)
{
	int64_t now;
	int rv;

	if (l->qconn != NULL)
		return 0;
	now = clock_mono_ms();
	if (now < l->q_retry_ms)
		return -ENOTCONN;
	if ((rv = l->ops->connect(l->target, &l->qconn)) != 0) {
		l->qconn = NULL;
		l->q_retry_ms = now + ACCT_QUERY_RETRY_MS;
		return rv;
	}
	return 0;
}

/* After a query failed: drop the connection so the next one starts
 * afresh.  Under qmu. */
static int
ledger_qfail(struct acct_ledger *l, int rv)
{
	if (rv == -ENOTCONN || rv == -EIO) {
		l->ops->disconnect(l->qconn);
		l->qconn = NULL;
	}
	return rv;
}

int
acct_ledger_committed(
    struct acct_ledger *l, const char *worker_id, int64_t *ret)
{
	int64_t v = 0;
	int rv;

	if (acct_ledger_committed_cached(l, worker_id, ret))
		return 0;
	pthread_mutex_lock(&l->qmu);
	if ((rv = ledger_qconn(l)) == 0 &&
	    (rv = l->ops->committed_seq(l->qconn, worker_id, &v)) != 0)
		rv = ledger_qfail(l, rv);
	pthread_mutex_unlock(&l->qmu);
	if (rv != 0)
		return rv;
	ledger_cache_put(l, worker_id, v);
	/* The writer may have moved it on meanwhile. */
	if (!acct_ledger_committed_cached(l, worker_id, ret))
		*ret = v;
	return 0;
}

int
acct_ledger_cost_day(struct acct_ledger *l, const char *subject_type,
    const char *subject_id, const char *day, int64_t *ret)
{
	int rv;

	pthread_mutex_lock(&l->qmu);
	if ((rv = ledger_qconn(l)) == 0 &&
	    (rv = l->ops->cost_day(
		 l->qconn, subject_type, subject_id, day, ret)) != 0)
		rv = ledger_qfail(l, rv);
	pthread_mutex_unlock(&l->qmu);
	return rv;
}

int
acct_ledger_report(
    struct acct_ledger *l, const struct acct_query *q, struct acct_report *ret)
{
	int rv;

	pthread_mutex_lock(&l->qmu);
	if ((rv = ledger_qconn(l)) == 0 &&
	    (rv = l->ops->report(l->qconn, q, ret)) != 0)
		rv = ledger_qfail(l, rv);
	pthread_mutex_unlock(&l->qmu);
	return rv;
}

bool
acct_ledger_db_up(struct acct_ledger *l)
{
	bool up;

	pthread_mutex_lock(&l->mu);
	up = l->db_up;
	pthread_mutex_unlock(&l->mu);
	return up;
}

const char *
acct_ledger_backend(const struct acct_ledger *l)
{
	return l->ops->name;
}

void
acct_ledger_stats(struct acct_ledger *l, struct acct_ledger_stats *ret)
{
	pthread_mutex_lock(&l->mu);
	*ret = l->st;
	ret->queued = l->count;
	ret->db_up = l->db_up;
	pthread_mutex_unlock(&l->mu);
}

/* ---- open / stop / free ---- */

int
acct_ledger_open(const struct acct_ledger_opts *o, struct acct_ledger **ret)
{
	struct acct_ledger *l;
	pthread_condattr_t ca;
	int n, rv;

	if (o->ops == NULL || o->target == NULL)
		return -EINVAL;
	if ((l = calloc(1, sizeof(*l))) == NULL)
		return -ENOMEM;
	l->ops = o->ops;
	n = snprintf(l->target, sizeof(l->target), "%s", o->target);
	if (n < 0 || (size_t)n >= sizeof(l->target)) {
		free(l);
		return -ENAMETOOLONG;
	}
	snprintf(l->describe, sizeof(l->describe), "%s",
	    o->describe != NULL ? o->describe : o->ops->name);
	l->queue_max = o->queue_max > 0 ? o->queue_max : ACCT_QUEUE_MAX;
	l->batch_max = o->batch_max > 0 ? o->batch_max : ACCT_BATCH_MAX;
	if (l->batch_max > l->queue_max)
		l->batch_max = l->queue_max;
	l->flush_ms = o->flush_ms > 0 ? o->flush_ms : ACCT_FLUSH_MS;
	pthread_mutex_init(&l->mu, NULL);
	pthread_mutex_init(&l->cache_mu, NULL);
	pthread_mutex_init(&l->qmu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->cv, &ca);
	pthread_condattr_destroy(&ca);
	l->ring = calloc(l->queue_max, sizeof(*l->ring));
	l->batch = calloc(l->batch_max, sizeof(*l->batch));
	l->hwm = calloc(l->batch_max, sizeof(*l->hwm));
	l->waiters = calloc(ACCT_WAITERS_MAX, sizeof(*l->waiters));
	l->fire = calloc(ACCT_WAITERS_MAX, sizeof(*l->fire));
	l->streams = calloc(ACCT_STREAMS_MAX, sizeof(*l->streams));
	if (l->ring == NULL || l->batch == NULL || l->hwm == NULL ||
	    l->waiters == NULL || l->fire == NULL || l->streams == NULL) {
		rv = -ENOMEM;
		goto fail;
	}

	rv = ledger_connect(l, &l->wconn);
	if (rv == 0) {
		l->db_up = true;
	} else if (rv == -ENOTCONN && l->ops->kind == ACCT_DB_POSTGRES) {
		/* It may come up later: run degraded until then. */
		log_warn(NULL, "database unreachable at start: will retry",
		    LF_S("database", l->describe));
	} else {
		goto fail;
	}
	l->st.db_up = l->db_up;
	if ((rv = pthread_create(&l->writer, NULL, ledger_main, l)) != 0) {
		rv = -rv;
		goto fail;
	}
	l->writer_started = true;
	*ret = l;
	return 0;
fail:
	acct_ledger_free(l);
	return rv;
}

void
acct_ledger_stop(struct acct_ledger *l)
{
	pthread_mutex_lock(&l->mu);
	l->stopping = true;
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->mu);
	if (l->writer_started) {
		pthread_join(l->writer, NULL);
		l->writer_started = false;
	}
}

void
acct_ledger_free(struct acct_ledger *l)
{
	if (l == NULL)
		return;
	acct_ledger_stop(l);
	l->ops->disconnect(l->wconn);
	l->ops->disconnect(l->qconn);
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->mu);
	pthread_mutex_destroy(&l->cache_mu);
	pthread_mutex_destroy(&l->qmu);
	free(l->ring);
	free(l->batch);
	free(l->hwm);
	free(l->waiters);
	free(l->fire);
	free(l->streams);
	free(l);
}
