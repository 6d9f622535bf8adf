/*
 * Ratelimiter requests: decode strictly, decide on the right store, answer,
 * never crash on what a peer sends and never answer an error because Redis
 * failed.  See rl_server.h for the messages and the fallback.
 */
#include "rl_server.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "buf.h"
#include "ids.h"
#include "log.h"
#include "nngx.h"
#include "proto.h"
#include "rl_store.h"

/* Bad requests logged one by one, then only every RL_BAD_LOG_EVERY-th, so
 * a misbehaving peer cannot flood the log. */
#define RL_BAD_LOG_FIRST 10
#define RL_BAD_LOG_EVERY 1000
/* A full memory table refuses new subjects for this long. */
#define RL_FULL_RETRY_S 60

#define RL_SET(dst, src) snprintf((dst), sizeof(dst), "%s", (src))

struct rl_job {
	struct nngx_rep_ctx *ctx;
	const char *buf; /* borrowed from the context until the reply */
	size_t len;
	enum msg_type type; /* as peeked on the nng thread */
	int peek_rv;
};

/* One check of a limit_check_batch and, once decided, its verdict. */
struct rl_item {
	struct rl_item *next; /* in the workers' item list */
	struct rl_batch *batch;
	struct msg_limit_check check;
	char *out; /* encoded limit_verdict */
	size_t out_len;
};

/* A limit_check_batch being decided.  With Redis its checks are spread
 * over the workers like single requests (each a Redis round trip), and
 * whoever decides the last one answers. */
struct rl_batch {
	struct nngx_rep_ctx *ctx;
	char request_id[PROTO_ID_MAX + 1];
	size_t count;
	size_t left; /* under the server's mtx */
	bool failed; /* a verdict could not be made */
	struct rl_item item[];
};

/* A settle Redis has not seen yet (it was down). */
struct rl_pending {
	char subject[RL_SUBJECT_MAX + 1];
	char token[RL_TOKEN_MAX + 1];
	int64_t actual;
};

struct rl_server {
	struct rl_limits limits; /* as configured */
	struct rl_limits share;  /* the in-process share while Redis is down */
	int64_t replicas;
	struct rl_store *mem;
	struct rl_store *redis; /* NULL: REDIS_ENABLED=false */
	atomic_bool redis_up;

	/* workers and probe */
	pthread_mutex_t mtx;
	pthread_cond_t work_cond;
	pthread_cond_t probe_cond; /* CLOCK_MONOTONIC */
	bool stopping;
	struct rl_job queue[RL_REP_CONTEXTS];
	size_t qhead, qlen;
	struct rl_item *items, *items_tail; /* checks of batches */
	pthread_t *workers;
	int nworkers;
	int nthreads_started;
	pthread_t probe;
	bool probe_started;

	/* settles waiting for Redis */
	pthread_mutex_t pmtx;
	struct rl_pending *pending;
	size_t phead, plen;
	uint64_t pdropped;

	atomic_uint_fast64_t nreq;
	atomic_uint_fast64_t nbad;
	atomic_uint_fast64_t nallow;
	atomic_uint_fast64_t ndeny;
	atomic_uint_fast64_t ndegraded;
	struct nngx_rep *rep;
};

/* One decoded request of any kind the ratelimiter serves. */
union rl_req {
	struct msg_ping ping;
	struct msg_status_req status;
	struct msg_limit_check check;
	struct msg_limit_settle settle;
	struct msg_limit_settle_batch settle_batch;
	struct msg_quota_req quota;
	struct msg_threat_report threat;
	struct msg_block_list blocks;
	struct msg_unblock unblock;
};

static int64_t
rl_div(int64_t v, int64_t n)
{
	v /= n;
	return v < 1 ? 1 : v;
}

/* The configured limits, each divided by div (the replica share). */
static void
rl_limits_set(const struct cfg *c, int64_t div, struct rl_limits *l)
{
	double cost = round(c->cost_limit_daily * 1e6);

	l->per_minute = rl_div(c->rate_limit_per_minute, div);
	l->per_hour = rl_div(c->rate_limit_per_hour, div);
	l->per_ip_minute = rl_div(c->rate_limit_per_ip_minute > 0
				      ? c->rate_limit_per_ip_minute
				      : 3 * c->rate_limit_per_minute,
	    div);
	l->cost_micro_usd = cost > 0 ? (int64_t)cost / div : 0;
	l->block_s = c->block_seconds > 0 ? c->block_seconds : 900;
	l->reserve_ttl_s = (c->timeout_seconds > 0 ? c->timeout_seconds : 60) +
			   RL_RESERVE_MARGIN_S;
}

struct rl_server *
rl_server_new(const struct cfg *c)
{
	pthread_condattr_t ca;
	struct rl_server *s;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	s->replicas = c->ratelimiter_replicas > 0 ? c->ratelimiter_replicas : 1;
	s->nworkers = RL_WORKERS_MEMORY;
	rl_limits_set(c, 1, &s->limits);
	rl_limits_set(c, s->replicas, &s->share);
	atomic_init(&s->redis_up, false);
	atomic_init(&s->nreq, 0);
	atomic_init(&s->nbad, 0);
	atomic_init(&s->nallow, 0);
	atomic_init(&s->ndeny, 0);
	atomic_init(&s->ndegraded, 0);
	pthread_mutex_init(&s->mtx, NULL);
	pthread_mutex_init(&s->pmtx, NULL);
	pthread_cond_init(&s->work_cond, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->probe_cond, &ca);
	pthread_condattr_destroy(&ca);
	if ((s->mem = rl_store_mem_new(NULL, NULL, 0)) == NULL)
		goto err;
	if (c->redis_enabled) {
		int pool = c->redis_max_connections > 0
			       ? (int)c->redis_max_connections
			       : 1;

		/* One worker per pooled connection: none waits for one. */
		s->nworkers = pool;
		s->redis = rl_store_redis_new(c->redis_url, pool,
		    c->redis_timeout_ms > 0 ? (int)c->redis_timeout_ms : 50,
		    NULL, NULL);
		s->pending = calloc(RL_PENDING_MAX, sizeof(*s->pending));
		if (s->redis == NULL || s->pending == NULL)
			goto err;
		if (s->redis->ops->ping(s->redis->impl) == 0)
			atomic_store(&s->redis_up, true);
		else
			log_warn(NULL,
			    "redis unavailable at start: in-process "
			    "limits until it answers",
			    LF_I("share_of", s->replicas));
	}
	return s;
err:
	rl_server_free(s);
	return NULL;
}

/* ---- backend choice ---- */

static bool
rl_redis_ok(struct rl_server *s)
{
	return s->redis != NULL && atomic_load(&s->redis_up);
}

/* Redis failed at what: fall back (once) until the probe says otherwise.
 * A busy pool is this request's problem only. */
static void
rl_redis_failed(struct rl_server *s, const char *what, int rv)
{
	if (rv == -EBUSY)
		return;
	if (atomic_exchange(&s->redis_up, false)) {
		log_warn(NULL, "redis unavailable: in-process limits",
		    LF_S("during", what), LF_S("error", strerror(-rv)),
		    LF_I("share_of", s->replicas));
		s->redis->ops->reset(s->redis->impl);
	}
}

/* The memory store's limits: all of them, or the share while it stands in
 * for Redis. */
static const struct rl_limits *
rl_mem_limits(const struct rl_server *s)
{
	return s->redis != NULL ? &s->share : &s->limits;
}

static void
rl_pending_push(
    struct rl_server *s, const char *subject, const char *token, int64_t actual)
{
	struct rl_pending *p;

	pthread_mutex_lock(&s->pmtx);
	if (s->plen == RL_PENDING_MAX) {
		s->phead = (s->phead + 1) % RL_PENDING_MAX;
		s->plen--;
		if (s->pdropped++ % 1000 == 0)
			log_warn(NULL,
			    "settles for redis dropped: too many "
			    "while it is down",
			    LF_I("dropped", s->pdropped));
	}
	p = &s->pending[(s->phead + s->plen) % RL_PENDING_MAX];
	snprintf(p->subject, sizeof(p->subject), "%s", subject);
	snprintf(p->token, sizeof(p->token), "%s", token);
	p->actual = actual;
	s->plen++;
	pthread_mutex_unlock(&s->pmtx);
}

/* Sends the settles recorded while Redis was down.  0 when all landed. */
static int
rl_pending_replay(struct rl_server *s)
{
	struct rl_pending p;
	enum rl_settle_state st;
	size_t n = 0;
	int rv = 0;

	for (;;) {
		pthread_mutex_lock(&s->pmtx);
		if (s->plen == 0) {
			pthread_mutex_unlock(&s->pmtx);
			break;
		}
		p = s->pending[s->phead];
		pthread_mutex_unlock(&s->pmtx);
		rv = s->redis->ops->settle(
		    s->redis->impl, p.subject, p.token, p.actual, &st);
		if (rv != 0)
			break;
		pthread_mutex_lock(&s->pmtx);
		/* Unless a full ring dropped it meanwhile (then the new head
		 * is another settle, still to send). */
		if (s->plen > 0 &&
		    strcmp(s->pending[s->phead].token, p.token) == 0 &&
		    strcmp(s->pending[s->phead].subject, p.subject) == 0) {
			s->phead = (s->phead + 1) % RL_PENDING_MAX;
			s->plen--;
		}
		pthread_mutex_unlock(&s->pmtx);
		n++;
	}
	if (n > 0)
		log_info(NULL, "settles replayed to redis", LF_I("settles", n));
	return rv;
}

static size_t
rl_pending_count(struct rl_server *s)
{
	size_t n;

	pthread_mutex_lock(&s->pmtx);
	n = s->plen;
	pthread_mutex_unlock(&s->pmtx);
	return n;
}

/* ---- threads ---- */

static void *
rl_probe_main(void *arg)
{
	struct rl_server *s = arg;
	struct timespec until;

	pthread_mutex_lock(&s->mtx);
	while (!s->stopping) {
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += RL_PROBE_MS / 1000;
		until.tv_nsec += (long)(RL_PROBE_MS % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&s->probe_cond, &s->mtx, &until);
		if (s->stopping || atomic_load(&s->redis_up))
			continue;
		pthread_mutex_unlock(&s->mtx);
		if (s->redis->ops->ping(s->redis->impl) == 0 &&
		    rl_pending_replay(s) == 0) {
			atomic_store(&s->redis_up, true);
			log_info(NULL, "redis is back: shared limits");
		}
		pthread_mutex_lock(&s->mtx);
	}
	pthread_mutex_unlock(&s->mtx);
	return NULL;
}

static int rl_handle(struct rl_server *s, enum msg_type t, int peek_rv,
    const char *buf, size_t len, char **ret_buf, size_t *ret_len);
static int rl_reply_verdict(struct rl_server *s,
    const struct msg_limit_check *req, char **ret_buf, size_t *ret_len);
static int rl_reply_ack(const char *request_id, bool ok, const char *code,
    const char *message, char **ret_buf, size_t *ret_len);
static int rl_reply_bad(struct rl_server *s, enum msg_type t, int err,
    char **ret_buf, size_t *ret_len);

static void
rl_batch_free(struct rl_batch *b)
{
	if (b == NULL)
		return;
	for (size_t i = 0; i < b->count; i++)
		free(b->item[i].out);
	free(b);
}

/*
 * Decodes a limit_check_batch and every check in it.  All or nothing: one
 * bad line refuses the batch (the gateway then lets those requests through
 * as when the ratelimiter does not answer, and logs it).
 */
static int
rl_batch_parse(const char *buf, size_t len, struct rl_batch **ret)
{
	struct msg_limit_check_batch m;
	struct rl_batch *b;
	const char *p, *end, *line;
	size_t n = 0, line_len;
	int rv;

	if ((rv = msg_limit_check_batch_decode(buf, len, &m)) != 0)
		return rv;
	b = calloc(1, sizeof(*b) + (size_t)m.count * sizeof(b->item[0]));
	if (b == NULL)
		return -ENOMEM;
	RL_SET(b->request_id, m.request_id);
	p = m.payload;
	end = m.payload + m.payload_len;
	while (proto_batch_next(&p, end, &line, &line_len)) {
		if (n == (size_t)m.count) {
			rv = -EPROTO;
			break;
		}
		if ((rv = msg_limit_check_decode(
			 line, line_len, &b->item[n].check)) != 0)
			break;
		b->item[n].batch = b;
		n++;
	}
	if (rv == 0 && n != (size_t)m.count)
		rv = -EPROTO;
	if (rv != 0) {
		free(b);
		return rv;
	}
	b->count = b->left = n;
	*ret = b;
	return 0;
}

/* The limit_verdict_batch of a decided batch, verdicts in check order. */
static int
rl_batch_answer(const struct rl_batch *b, char **ret_buf, size_t *ret_len)
{
	struct msg_limit_verdict_batch m;
	struct buf payload;
	int rv = 0;

	buf_init(&payload, b->count * PROTO_HEADER_MAX);
	for (size_t i = 0; i < b->count && rv == 0; i++)
		rv = buf_append(&payload, b->item[i].out, b->item[i].out_len);
	memset(&m, 0, sizeof(m));
	RL_SET(m.request_id, b->request_id);
	m.count = (int64_t)b->count;
	m.payload = payload.data;
	m.payload_len = payload.len;
	if (rv == 0)
		rv = msg_limit_verdict_batch_encode(&m, ret_buf, ret_len);
	buf_free(&payload);
	return rv;
}

/* Without Redis: every check of the batch decided here, in order. */
static int
rl_reply_check_batch(
    struct rl_server *s, struct rl_batch *b, char **ret_buf, size_t *ret_len)
{
	int rv = 0;

	for (size_t i = 0; i < b->count && rv == 0; i++)
		rv = rl_reply_verdict(
		    s, &b->item[i].check, &b->item[i].out, &b->item[i].out_len);
	if (rv == 0)
		rv = rl_batch_answer(b, ret_buf, ret_len);
	return rv;
}

/* A worker decides the next check of a batch; whoever decides the last
 * one answers the batch.  Called and returns under s->mtx. */
static void
rl_item_run(struct rl_server *s)
{
	struct rl_item *it = s->items;
	struct rl_batch *b = it->batch;
	char *out = NULL;
	size_t out_len = 0;
	int rv;

	if ((s->items = it->next) == NULL)
		s->items_tail = NULL;
	pthread_mutex_unlock(&s->mtx);
	rv = rl_reply_verdict(s, &it->check, &it->out, &it->out_len);
	pthread_mutex_lock(&s->mtx);
	if (rv != 0)
		b->failed = true;
	if (--b->left > 0)
		return;
	pthread_mutex_unlock(&s->mtx);
	if (b->failed || rl_batch_answer(b, &out, &out_len) != 0) {
		log_error(b->request_id, "limit_check_batch not decided");
		free(out);
		out = NULL;
		if (rl_reply_ack(b->request_id, false, "internal_error",
			"the verdicts could not be made", &out,
			&out_len) != 0) {
			nngx_rep_drop(b->ctx);
			goto done;
		}
	}
	nngx_rep_reply(b->ctx, out, out_len);
done:
	free(out);
	rl_batch_free(b);
	pthread_mutex_lock(&s->mtx);
}

static void *
rl_worker_main(void *arg)
{
	struct rl_server *s = arg;
	struct rl_job job;
	char *out;
	size_t out_len;
	int rv;

	pthread_mutex_lock(&s->mtx);
	for (;;) {
		while (!s->stopping && s->qlen == 0 && s->items == NULL)
			pthread_cond_wait(&s->work_cond, &s->mtx);
		if (s->stopping)
			break;
		if (s->items != NULL) {
			rl_item_run(s); /* drops and retakes mtx */
			continue;
		}
		job = s->queue[s->qhead];
		s->qhead = (s->qhead + 1) % RL_REP_CONTEXTS;
		s->qlen--;
		pthread_mutex_unlock(&s->mtx);
		out = NULL;
		out_len = 0;
		rv = rl_handle(
		    s, job.type, job.peek_rv, job.buf, job.len, &out, &out_len);
		if (rv != 0) {
			log_error(NULL, "request dropped: no reply",
			    LF_S("error", strerror(-rv)));
			nngx_rep_drop(job.ctx);
		} else {
			nngx_rep_reply(job.ctx, out, out_len);
		}
		free(out);
		pthread_mutex_lock(&s->mtx);
	}
	pthread_mutex_unlock(&s->mtx);
	return NULL;
}

/* On an nng thread, with Redis: a batch's checks go to the workers one by
 * one, so they run in parallel as single checks do. */
static void
rl_on_check_batch(
    struct rl_server *s, struct nngx_rep_ctx *ctx, const char *buf, size_t len)
{
	struct rl_batch *b = NULL;
	char *out = NULL;
	size_t out_len = 0;
	int rv;

	atomic_fetch_add(&s->nreq, 1);
	if ((rv = rl_batch_parse(buf, len, &b)) != 0) {
		if (rv == -ENOMEM || rl_reply_bad(s, MSG_LIMIT_CHECK_BATCH, rv,
					 &out, &out_len) != 0)
			nngx_rep_drop(ctx);
		else
			nngx_rep_reply(ctx, out, out_len);
		free(out);
		return;
	}
	b->ctx = ctx;
	pthread_mutex_lock(&s->mtx);
	if (s->stopping) {
		pthread_mutex_unlock(&s->mtx);
		rl_batch_free(b);
		return;
	}
	for (size_t i = 0; i < b->count; i++) {
		struct rl_item *it = &b->item[i];

		if (s->items_tail != NULL)
			s->items_tail->next = it;
		else
			s->items = it;
		s->items_tail = it;
	}
	pthread_cond_broadcast(&s->work_cond);
	pthread_mutex_unlock(&s->mtx);
}

/* On an nng thread: with Redis, queue the request for a worker (Redis
 * calls block), nothing more; without, answer at once.  While stopping,
 * the context is left as is (nngx_rep_free() drops it). */
static void
rl_on_request(void *arg, struct nngx_rep_ctx *ctx, const char *buf, size_t len)
{
	struct rl_server *s = arg;
	enum msg_type t = MSG_NONE;
	char *out = NULL;
	size_t out_len = 0;
	int rv;

	/* Without Redis nothing blocks: decide right here, on the nng
	 * thread, and spare every request a hand-off to a worker thread. */
	if (s->redis == NULL) {
		if ((rv = rl_server_handle(s, buf, len, &out, &out_len)) != 0) {
			log_error(NULL, "request dropped: no reply",
			    LF_S("error", strerror(-rv)));
			nngx_rep_drop(ctx);
		} else {
			nngx_rep_reply(ctx, out, out_len);
		}
		free(out);
		return;
	}
	/* Peeked once here; the worker does not parse the header again. */
	rv = proto_peek_type(buf, len, &t);
	if (rv == 0 && t == MSG_LIMIT_CHECK_BATCH) {
		rl_on_check_batch(s, ctx, buf, len);
		return;
	}
	pthread_mutex_lock(&s->mtx);
	if (!s->stopping && s->qlen < RL_REP_CONTEXTS) {
		s->queue[(s->qhead + s->qlen) % RL_REP_CONTEXTS] =
		    (struct rl_job){ctx, buf, len, t, rv};
		s->qlen++;
		pthread_cond_signal(&s->work_cond);
	}
	pthread_mutex_unlock(&s->mtx);
}

/* Stops the probe and the workers (queued requests are abandoned). */
static void
rl_threads_stop(struct rl_server *s)
{
	int i;

	pthread_mutex_lock(&s->mtx);
	s->stopping = true;
	pthread_cond_broadcast(&s->work_cond);
	pthread_cond_broadcast(&s->probe_cond);
	pthread_mutex_unlock(&s->mtx);
	if (s->probe_started)
		pthread_join(s->probe, NULL);
	s->probe_started = false;
	for (i = 0; i < s->nthreads_started; i++)
		pthread_join(s->workers[i], NULL);
	s->nthreads_started = 0;
	/* Checks of batches nobody decided: their contexts are abandoned
	 * like queued requests, their memory freed with the last one. */
	while (s->items != NULL) {
		struct rl_item *it = s->items;

		s->items = it->next;
		if (--it->batch->left == 0)
			rl_batch_free(it->batch);
	}
	s->items_tail = NULL;
}

int
rl_server_listen(struct rl_server *s, const char *url)
{
	int rv, i;

	if (s->rep != NULL || s->workers != NULL)
		return -EALREADY;
	if ((s->workers = calloc((size_t)s->nworkers, sizeof(*s->workers))) ==
	    NULL)
		return -ENOMEM;
	for (i = 0; i < s->nworkers; i++) {
		if ((rv = pthread_create(
			 &s->workers[i], NULL, rl_worker_main, s)) != 0) {
			rl_threads_stop(s);
			return -rv;
		}
		s->nthreads_started++;
	}
	if (s->redis != NULL) {
		if ((rv = pthread_create(&s->probe, NULL, rl_probe_main, s)) !=
		    0) {
			rl_threads_stop(s);
			return -rv;
		}
		s->probe_started = true;
	}
	rv = nngx_rep_start(
	    url, true, RL_REP_CONTEXTS, rl_on_request, s, &s->rep);
	if (rv != 0) {
		rl_threads_stop(s);
		return rv;
	}
	log_info(NULL, "listening", LF_S("socket", "rep"), LF_S("url", url),
	    LF_I("contexts", RL_REP_CONTEXTS), LF_I("workers", s->nworkers));
	return 0;
}

uint64_t
rl_server_requests(const struct rl_server *s)
{
	return atomic_load(&s->nreq);
}

uint64_t
rl_server_bad_requests(const struct rl_server *s)
{
	return atomic_load(&s->nbad);
}

bool
rl_server_degraded(const struct rl_server *s)
{
	return s->redis != NULL && !atomic_load(&s->redis_up);
}

void
rl_server_free(struct rl_server *s)
{
	if (s == NULL)
		return;
	/* Workers answer asynchronously: stop them before the socket. */
	rl_threads_stop(s);
	nngx_rep_free(s->rep);
	rl_store_free(s->redis);
	rl_store_free(s->mem);
	free(s->workers);
	free(s->pending);
	pthread_cond_destroy(&s->work_cond);
	pthread_cond_destroy(&s->probe_cond);
	pthread_mutex_destroy(&s->mtx);
	pthread_mutex_destroy(&s->pmtx);
	free(s);
}

/* ---- replies ---- */

static int
rl_reply_ack(const char *request_id, bool ok, const char *code,
    const char *message, char **ret_buf, size_t *ret_len)
{
	struct msg_ack a;

	memset(&a, 0, sizeof(a));
	RL_SET(a.request_id, request_id);
	a.ok = ok;
	RL_SET(a.code, code);
	RL_SET(a.message, message);
	return msg_ack_encode(&a, ret_buf, ret_len);
}

static int
rl_reply_pong(const struct msg_ping *req, char **ret_buf, size_t *ret_len)
{
	struct msg_pong p;

	memset(&p, 0, sizeof(p));
	RL_SET(p.request_id, req->request_id);
	p.ts_us = req->ts_us;
	RL_SET(p.daemon, RL_DAEMON_NAME);
	p.pid = (int64_t)getpid();
	return msg_pong_encode(&p, ret_buf, ret_len);
}

static int
rl_reply_status(struct rl_server *s, const struct msg_status_req *req,
    char **ret_buf, size_t *ret_len)
{
	struct msg_status_resp r;
	json_t *doc;
	char *payload;
	int rv;

	doc = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
			"s:I, s:I, s:I, s:I}",
	    "backend", s->redis != NULL ? "redis" : "memory", "redis",
	    s->redis == NULL ? "disabled"
	    : rl_redis_ok(s) ? "up"
			     : "down",
	    "limits", "enforced", "per_minute",
	    (json_int_t)s->limits.per_minute, "per_hour",
	    (json_int_t)s->limits.per_hour, "per_ip_minute",
	    (json_int_t)s->limits.per_ip_minute, "cost_limit_micro_usd",
	    (json_int_t)s->limits.cost_micro_usd, "replicas",
	    (json_int_t)s->replicas, "requests",
	    (json_int_t)atomic_load(&s->nreq), "bad_requests",
	    (json_int_t)atomic_load(&s->nbad), "allowed",
	    (json_int_t)atomic_load(&s->nallow), "denied",
	    (json_int_t)atomic_load(&s->ndeny), "degraded_decisions",
	    (json_int_t)atomic_load(&s->ndegraded), "pending_settles",
	    (json_int_t)(s->redis != NULL ? rl_pending_count(s) : 0));
	if (doc == NULL)
		return -ENOMEM;
	payload = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	if (payload == NULL)
		return -ENOMEM;
	memset(&r, 0, sizeof(r));
	RL_SET(r.request_id, req->request_id);
	RL_SET(r.daemon, RL_DAEMON_NAME);
	RL_SET(r.state, rl_server_degraded(s) ? "degraded" : "up");
	r.payload = payload;
	r.payload_len = strlen(payload);
	rv = msg_status_resp_encode(&r, ret_buf, ret_len);
	free(payload);
	return rv;
}

static int64_t
rl_clip(int64_t v, int64_t max)
{
	return v < 0 ? 0 : v > max ? max : v;
}

static int
rl_reply_verdict(struct rl_server *s, const struct msg_limit_check *req,
    char **ret_buf, size_t *ret_len)
{
	struct msg_limit_verdict m;
	struct rl_verdict v;
	struct rl_check in;
	char backend = 'm';
	bool decided = false, degraded = false;
	int rv;

	memset(&in, 0, sizeof(in));
	if ((rv = rl_subject_make(req->subject_type, req->subject_id,
		 in.subject, sizeof(in.subject))) != 0)
		return rv;
	in.session = strcmp(req->subject_type, "session") == 0;
	RL_SET(in.ip, req->ip);
	in.reserve_micro_usd = req->reserve_micro_usd;
	in.threat = req->threat;
	id_new("", in.token, sizeof(in.token));

	if (rl_redis_ok(s)) {
		rv = s->redis->ops->check(s->redis->impl, &s->limits, &in, &v);
		if (rv == 0) {
			decided = true;
			backend = 'r';
		} else {
			rl_redis_failed(s, "limit_check", rv);
		}
	}
	if (!decided) {
		degraded = s->redis != NULL;
		rv =
		    s->mem->ops->check(s->mem->impl, rl_mem_limits(s), &in, &v);
		if (rv == -ENOSPC) {
			memset(&v, 0, sizeof(v));
			v.code = RL_IP;
			v.limit = rl_mem_limits(s)->per_ip_minute;
			v.reset_s = v.retry_after_s = RL_FULL_RETRY_S;
		} else if (rv != 0) {
			return rv;
		}
		if (degraded)
			atomic_fetch_add(&s->ndegraded, 1);
	}
	atomic_fetch_add(v.code == RL_OK ? &s->nallow : &s->ndeny, 1);

	memset(&m, 0, sizeof(m));
	RL_SET(m.request_id, req->request_id);
	m.allow = v.code == RL_OK;
	RL_SET(m.code, rl_code_str(v.code));
	m.limit = rl_clip(v.limit, PROTO_MONEY_MAX);
	m.remaining = rl_clip(v.remaining, PROTO_MONEY_MAX);
	m.reset_s = rl_clip(v.reset_s, PROTO_SECONDS_MAX);
	m.retry_after_s = rl_clip(v.retry_after_s, PROTO_SECONDS_MAX);
	if (v.reserved)
		snprintf(m.reservation_id, sizeof(m.reservation_id), "%c%s",
		    backend, in.token);
	m.degraded = degraded;
	log_debug(req->request_id, "limit check", LF_S("code", m.code),
	    LF_S("subject_type", req->subject_type), LF_S("ip", req->ip),
	    LF_I("remaining", m.remaining),
	    LF_I("retry_after_s", m.retry_after_s),
	    LF_S("reservation_id", m.reservation_id),
	    LF_B("degraded", degraded));
	return msg_limit_verdict_encode(&m, ret_buf, ret_len);
}

static const char *
rl_settle_str(enum rl_settle_state st)
{
	switch (st) {
	case RL_SETTLED:
		return "settled";
	case RL_DUPLICATE:
		return "duplicate: settled before, nothing changed";
	case RL_UNKNOWN:
	default:
		return "unknown or expired reservation: actual cost added";
	}
}

/*
 * reservation_id is a backend letter ('r' Redis, 'm' in process) and a
 * token.  A Redis reservation settles in Redis (recorded in process and
 * replayed later while Redis is down); an in-process one settles in
 * process, and its cost is also recorded in Redis, which never saw it.
 */
/* Settles (or releases) one reservation, in Redis and/or in memory.
 * -EINVAL for a malformed reservation id. */
static int
rl_settle_one(struct rl_server *s, const struct msg_limit_settle *req,
    enum rl_settle_state *ret_st)
{
	char subject[RL_SUBJECT_MAX + 1];
	const char *token = req->reservation_id + 1;
	enum rl_settle_state st = RL_UNKNOWN, rst;
	bool in_memory = req->reservation_id[0] == 'm' || s->redis == NULL;
	int rv;

	if (token[0] == '\0' || strlen(token) > RL_TOKEN_MAX)
		return -EINVAL;
	if ((rv = rl_subject_make(req->subject_type, req->subject_id, subject,
		 sizeof(subject))) != 0)
		return rv;
	if (s->redis != NULL) {
		rv = -ENOTCONN;
		if (rl_redis_ok(s)) {
			rv = s->redis->ops->settle(s->redis->impl, subject,
			    token, req->actual_micro_usd, &rst);
			if (rv != 0)
				rl_redis_failed(s, "limit_settle", rv);
			else if (!in_memory)
				st = rst;
		}
		if (rv != 0) {
			rl_pending_push(
			    s, subject, token, req->actual_micro_usd);
			in_memory = true;
		}
	}
	if (in_memory && (rv = s->mem->ops->settle(s->mem->impl, subject, token,
			      req->actual_micro_usd, &st)) != 0)
		return rv;
	log_debug(req->request_id, "limit settle",
	    LF_S("reservation_id", req->reservation_id),
	    LF_I("reserved_micro_usd", req->reserved_micro_usd),
	    LF_I("actual_micro_usd", req->actual_micro_usd),
	    LF_S("state", rl_settle_str(st)));
	*ret_st = st;
	return 0;
}

static int
rl_reply_settle(struct rl_server *s, const struct msg_limit_settle *req,
    char **ret_buf, size_t *ret_len)
{
	enum rl_settle_state st = RL_UNKNOWN;
	int rv;

	if ((rv = rl_settle_one(s, req, &st)) == -EINVAL)
		return rl_reply_ack(req->request_id, false, "bad_request",
		    "malformed reservation_id", ret_buf, ret_len);
	if (rv != 0)
		return rv;
	return rl_reply_ack(
	    req->request_id, true, "ok", rl_settle_str(st), ret_buf, ret_len);
}

/* Each line of the payload is one limit_settle; a bad one is logged and
 * skipped, the others still settle. */
static int
rl_reply_settle_batch(struct rl_server *s,
    const struct msg_limit_settle_batch *req, char **ret_buf, size_t *ret_len)
{
	const char *p = req->payload, *end = req->payload + req->payload_len;
	const char *line;
	size_t n;
	struct msg_limit_settle one;
	enum rl_settle_state st;
	int64_t done = 0, bad = 0;
	char msg[64];

	while (proto_batch_next(&p, end, &line, &n)) {
		int rv;

		if ((rv = msg_limit_settle_decode(line, n, &one)) == 0)
			rv = rl_settle_one(s, &one, &st);
		if (rv == -ENOMEM)
			return rv;
		if (rv != 0) {
			bad++;
			log_warn(req->request_id, "settle in a batch refused",
			    LF_S("error", strerror(-rv)));
		} else {
			done++;
		}
	}
	if (done + bad != req->count)
		log_warn(req->request_id, "settle batch count mismatch",
		    LF_I("count", req->count), LF_I("found", done + bad));
	snprintf(msg, sizeof(msg), "%lld settled, %lld refused",
	    (long long)done, (long long)bad);
	return rl_reply_ack(req->request_id, bad == 0,
	    bad == 0 ? "ok" : "bad_request", msg, ret_buf, ret_len);
}

static int
rl_reply_quota(struct rl_server *s, const struct msg_quota_req *req,
    char **ret_buf, size_t *ret_len)
{
	char subject[RL_SUBJECT_MAX + 1];
	struct msg_quota_resp m;
	struct rl_quota q;
	bool degraded = false;
	int rv = -ENOTCONN;

	if ((rv = rl_subject_make(req->subject_type, req->subject_id, subject,
		 sizeof(subject))) != 0)
		return rv;
	rv = -ENOTCONN;
	if (rl_redis_ok(s)) {
		rv = s->redis->ops->quota(
		    s->redis->impl, &s->limits, subject, &q);
		if (rv != 0)
			rl_redis_failed(s, "quota_req", rv);
	}
	if (rv != 0) {
		degraded = s->redis != NULL;
		if ((rv = s->mem->ops->quota(
			 s->mem->impl, rl_mem_limits(s), subject, &q)) != 0)
			return rv;
	}
	memset(&m, 0, sizeof(m));
	RL_SET(m.request_id, req->request_id);
	m.minute_limit = rl_clip(q.minute_limit, PROTO_TOKENS_MAX);
	m.minute_used = rl_clip(q.minute_used, PROTO_TOKENS_MAX);
	m.hour_limit = rl_clip(q.hour_limit, PROTO_TOKENS_MAX);
	m.hour_used = rl_clip(q.hour_used, PROTO_TOKENS_MAX);
	m.cost_limit_micro_usd =
	    rl_clip(q.cost_limit_micro_usd, PROTO_MONEY_MAX);
	m.cost_used_micro_usd = rl_clip(q.cost_used_micro_usd, PROTO_MONEY_MAX);
	m.cost_reserved_micro_usd =
	    rl_clip(q.cost_reserved_micro_usd, PROTO_MONEY_MAX);
	m.degraded = degraded;
	return msg_quota_resp_encode(&m, ret_buf, ret_len);
}

static int
rl_reply_threat(struct rl_server *s, const struct msg_threat_report *req,
    char **ret_buf, size_t *ret_len)
{
	char subject[RL_SUBJECT_MAX + 1];
	const char *subj = NULL;
	bool blocked = false;
	int rv;

	if (req->subject_type[0] != '\0') {
		if ((rv = rl_subject_make(req->subject_type, req->subject_id,
			 subject, sizeof(subject))) != 0)
			return rv;
		subj = subject;
	}
	rv = -ENOTCONN;
	if (rl_redis_ok(s)) {
		rv = s->redis->ops->threat(s->redis->impl, &s->limits, subj,
		    req->ip, req->points, req->reason, &blocked);
		if (rv != 0)
			rl_redis_failed(s, "threat_report", rv);
	}
	if (rv != 0 &&
	    (rv = s->mem->ops->threat(s->mem->impl, rl_mem_limits(s), subj,
		 req->ip, req->points, req->reason, &blocked)) != 0) {
		if (rv != -ENOSPC)
			return rv;
		blocked = false;
	}
	log_debug(req->request_id, "threat reported",
	    LF_S("reason", req->reason), LF_I("points", req->points),
	    LF_S("ip", req->ip), LF_B("blocked", blocked));
	return rl_reply_ack(req->request_id, true, blocked ? "blocked" : "ok",
	    "", ret_buf, ret_len);
}

static int
rl_reply_blocks(struct rl_server *s, const struct msg_block_list *req,
    char **ret_buf, size_t *ret_len)
{
	struct msg_block_list_resp m;
	struct rl_block *b;
	size_t max = (size_t)req->max, n = 0, total = 0, i;
	bool degraded = false;
	json_t *arr = NULL, *o;
	char *payload = NULL;
	int rv = -ENOTCONN;

	if (max > RL_BLOCK_LIST_MAX)
		max = RL_BLOCK_LIST_MAX;
	if ((b = calloc(max, sizeof(*b))) == NULL)
		return -ENOMEM;
	if (rl_redis_ok(s)) {
		rv = s->redis->ops->blocks(s->redis->impl, b, max, &n, &total);
		if (rv != 0)
			rl_redis_failed(s, "block_list", rv);
	}
	if (rv != 0) {
		degraded = s->redis != NULL;
		if ((rv = s->mem->ops->blocks(
			 s->mem->impl, b, max, &n, &total)) != 0)
			goto out;
	}
	rv = -ENOMEM;
	if ((arr = json_array()) == NULL)
		goto out;
	for (i = 0; i < n; i++) {
		o = json_pack("{s:s, s:s, s:I, s:I, s:s}", "kind", b[i].kind,
		    "id", b[i].id, "until",
		    (json_int_t)(b[i].until_us / RL_US_PER_S), "retry_after_s",
		    (json_int_t)b[i].retry_after_s, "reason", b[i].reason);
		if (o == NULL || json_array_append_new(arr, o) != 0)
			goto out;
	}
	if ((payload = json_dumps(arr, JSON_COMPACT)) == NULL)
		goto out;
	memset(&m, 0, sizeof(m));
	RL_SET(m.request_id, req->request_id);
	m.total = rl_clip((int64_t)total, PROTO_TOKENS_MAX);
	m.degraded = degraded;
	m.payload = payload;
	m.payload_len = strlen(payload);
	rv = msg_block_list_resp_encode(&m, ret_buf, ret_len);
out:
	free(payload);
	json_decref(arr);
	free(b);
	return rv;
}

/* Lifts a block everywhere it may be: Redis and the in-process store. */
static int
rl_reply_unblock(struct rl_server *s, const struct msg_unblock *req,
    char **ret_buf, size_t *ret_len)
{
	char member[RL_SUBJECT_MAX + 1];
	bool found_r = false, found_m = false;
	int rv;

	if ((rv = rl_subject_make(
		 req->kind, req->id, member, sizeof(member))) != 0)
		return rv;
	if (rl_redis_ok(s)) {
		rv = s->redis->ops->unblock(s->redis->impl, member, &found_r);
		if (rv != 0)
			rl_redis_failed(s, "unblock", rv);
	}
	if ((rv = s->mem->ops->unblock(s->mem->impl, member, &found_m)) != 0)
		return rv;
	log_info(req->request_id, "unblock", LF_S("kind", req->kind),
	    LF_B("was_blocked", found_r || found_m));
	if (!found_r && !found_m)
		return rl_reply_ack(req->request_id, false, "not_found",
		    "not blocked", ret_buf, ret_len);
	return rl_reply_ack(req->request_id, true, "ok", "", ret_buf, ret_len);
}

/* Counts and logs a bad request, then answers it with an ack. */
static int
rl_reply_bad(struct rl_server *s, enum msg_type t, int err, char **ret_buf,
    size_t *ret_len)
{
	uint64_t n = atomic_fetch_add(&s->nbad, 1) + 1;
	const char *type = t != MSG_NONE ? msg_type_str(t) : NULL;
	char message[256];

	if (type == NULL)
		type = "unknown";
	if (err == -ENOTSUP)
		snprintf(message, sizeof(message),
		    "message type %s is not served by the ratelimiter", type);
	else
		snprintf(message, sizeof(message), "undecodable %s message: %s",
		    type, strerror(-err));
	if (n <= RL_BAD_LOG_FIRST || n % RL_BAD_LOG_EVERY == 0)
		log_warn(NULL, "bad request", LF_S("type", type),
		    LF_S("error", message), LF_I("bad_requests", n));
	return rl_reply_ack(
	    "", false, "bad_request", message, ret_buf, ret_len);
}

int
rl_server_handle(struct rl_server *s, const char *buf, size_t len,
    char **ret_buf, size_t *ret_len)
{
	enum msg_type t = MSG_NONE;
	int rv = proto_peek_type(buf, len, &t);

	return rl_handle(s, t, rv, buf, len, ret_buf, ret_len);
}

/* A request whose type was peeked already (peek_rv: how that went). */
static int
rl_handle(struct rl_server *s, enum msg_type t, int peek_rv, const char *buf,
    size_t len, char **ret_buf, size_t *ret_len)
{
	union rl_req req;
	int rv;

	atomic_fetch_add(&s->nreq, 1);
	if (peek_rv != 0)
		return rl_reply_bad(s, MSG_NONE, peek_rv, ret_buf, ret_len);
	/* Never act on stale bytes, whatever a decoder leaves behind. */
	memset(&req, 0, sizeof(req));
	switch (t) {
	case MSG_PING:
		if ((rv = msg_ping_decode(buf, len, &req.ping)) != 0)
			return rl_reply_bad(s, t, rv, ret_buf, ret_len);
		rv = rl_reply_pong(&req.ping, ret_buf, ret_len);
		break;
	case MSG_STATUS_REQ:
		if ((rv = msg_status_req_decode(buf, len, &req.status)) != 0)
			return rl_reply_bad(s, t, rv, ret_buf, ret_len);
		rv = rl_reply_status(s, &req.status, ret_buf, ret_len);
		break;
	case MSG_LIMIT_CHECK:
		if ((rv = msg_limit_check_decode(buf, len, &req.check)) != 0)
			return rl_reply_bad(s, t, rv, ret_buf, ret_len);
		rv = rl_reply_verdict(s, &req.check, ret_buf, ret_len);
		break;
	case MSG_LIMIT_SETTLE:
		if ((rv = msg_limit_settle_decode(buf, len, &req.settle)) != 0)
			return rl_reply_bad(s, t, rv, ret_buf, ret_len);
		rv = rl_reply_settle(s, &req.settle, ret_buf, ret_len);
		break;
	case MSG_LIMIT_SETTLE_BATCH:
		if ((rv = msg_limit_settle_batch_decode(
			 buf, len, &req.settle_batch)) != 0)
			return rl_reply_bad(s, t, rv, ret_buf, ret_len);
		rv = rl_reply_settle_batch(
		    s, &req.settle_batch, ret_buf, ret_len);
		break;
	case MSG_LIMIT_CHECK_BATCH: {
		struct rl_batch *b = NULL;

		if ((rv = rl_batch_parse(buf, len, &b)) != 0)
			return rv == -ENOMEM
				   ? rv
				   : rl_reply_bad(s, t, rv, ret_buf, ret_len);
		rv = rl_reply_check_batch(s, b, ret_buf, ret_len);
		rl_batch_free(b);
		break;
	}
	case MSG_QUOTA_REQ:
		if ((rv = msg_quota_req_decode(buf, len, &req.quota)) != 0)
			return rl_reply_bad(s, t, rv, ret_buf, ret_len);
		rv = rl_reply_quota(s, &req.quota, ret_buf, ret_len);
		break;
	case MSG_THREAT_REPORT:
		if ((rv = msg_threat_report_decode(buf, len, &req.threat)) != 0)
			return rl_reply_bad(s, t, rv, ret_buf, ret_len);
		rv = rl_reply_threat(s, &req.threat, ret_buf, ret_len);
		break;
	case MSG_BLOCK_LIST:
		if ((rv = msg_block_list_decode(buf, len, &req.blocks)) != 0)
			return rl_reply_bad(s, t, rv, ret_buf, ret_len);
		rv = rl_reply_blocks(s, &req.blocks, ret_buf, ret_len);
		break;
	case MSG_UNBLOCK:
		if ((rv = msg_unblock_decode(buf, len, &req.unblock)) != 0)
			return rl_reply_bad(s, t, rv, ret_buf, ret_len);
		rv = rl_reply_unblock(s, &req.unblock, ret_buf, ret_len);
		break;
	default:
		return rl_reply_bad(s, t, -ENOTSUP, ret_buf, ret_len);
	}
	if (rv == 0 || rv == -ENOMEM)
		return rv;
	/* A reply we cannot give is our bug: say so rather than let the
	 * requester wait for its timeout. */
	log_error(NULL, "cannot answer", LF_S("type", msg_type_str(t)),
	    LF_S("error", strerror(-rv)));
	return rl_reply_ack("", false, "internal_error",
	    "the reply could not be made", ret_buf, ret_len);
}
