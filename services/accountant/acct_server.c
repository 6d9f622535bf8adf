/*
 * Accountant sockets and requests; see acct_server.h.
 */
#include "acct_server.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>

#include "acct_analytics.h"
#include "clock.h"
#include "log.h"
#include "nngx.h"
#include "proto.h"

/* Bad requests / events logged one by one, then only every
 * ACCT_BAD_LOG_EVERY-th, so a misbehaving peer cannot flood the log. */
#define ACCT_BAD_LOG_FIRST 10
#define ACCT_BAD_LOG_EVERY 1000
/* A usage event has no payload: its header line is bounded by
 * PROTO_HEADER_MAX; anything much larger is refused by nng itself. */
#define ACCT_USAGE_RECV_MAX (64 * 1024)
#define ACCT_TARGET_MAX     2048

struct acct_job {
	struct acct_job *next;
	acct_reply_fn fn;
	void *arg;
	enum msg_type type;
	union {
		struct msg_usage_sync sync;
		struct msg_cost_today_req cost;
		struct msg_analytics_req analytics;
	} m;
};

/* A usage_batch waiting for its commit. */
struct acct_batch_wait {
	struct acct_server *s;
	acct_reply_fn fn;
	void *arg;
	char request_id[PROTO_ID_MAX + 1];
	char worker_id[PROTO_NAME_MAX + 1];
};

struct acct_server {
	struct acct_ledger *ledger;
	struct nngx_rep *rep;
	nng_socket sub;
	nng_aio *sub_aio;
	bool sub_open;
	atomic_bool stopping;
	atomic_uint_fast64_t nreq, nbad, nevents, nevents_bad, ndropped;
	atomic_uint_fast64_t nbatches, nbatch_events;

	pthread_mutex_t jmu;
	pthread_cond_t jcv;
	struct acct_job *jhead, *jtail;
	size_t njobs;
	bool jstop;
	pthread_t jthread;
	bool jstarted;
};

static bool
acct_should_log(uint64_t n)
{
	return n <= ACCT_BAD_LOG_FIRST || n % ACCT_BAD_LOG_EVERY == 0;
}

uint64_t
acct_server_events(const struct acct_server *s)
{
	return atomic_load(&s->nevents);
}

uint64_t
acct_server_events_rejected(const struct acct_server *s)
{
	return atomic_load(&s->nevents_bad);
}

uint64_t
acct_server_bad_requests(const struct acct_server *s)
{
	return atomic_load(&s->nbad);
}

struct acct_ledger *
acct_server_ledger(struct acct_server *s)
{
	return s->ledger;
}

/* ---- replies ---- */

/* Encodes message t from m and hands it to fn (no reply when it does not
 * encode: our bug, logged). */
static void
acct_send(acct_reply_fn fn, void *arg, enum msg_type t, const void *m)
{
	char *buf = NULL;
	size_t len = 0;
	int rv;

	if ((rv = proto_msg_encode(t, m, &buf, &len)) != 0) {
		log_error(NULL, "cannot encode the reply",
		    LF_S("type", msg_type_str(t)),
		    LF_S("error", strerror(-rv)));
		fn(arg, NULL, 0);
		return;
	}
	fn(arg, buf, len);
	free(buf);
}

static void
acct_reply_bad(struct acct_server *s, enum msg_type t, int err,
    acct_reply_fn fn, void *arg)
{
	uint64_t n = atomic_fetch_add(&s->nbad, 1) + 1;
	const char *type = t != MSG_NONE ? msg_type_str(t) : "unknown";
	struct msg_ack a;

	memset(&a, 0, sizeof(a));
	a.ok = false;
	snprintf(a.code, sizeof(a.code), "bad_request");
	if (err == -ENOTSUP)
		snprintf(a.message, sizeof(a.message),
		    "message type %s is not served by the accountant", type);
	else
		snprintf(a.message, sizeof(a.message),
		    "undecodable %s message: %s", type, strerror(-err));
	if (acct_should_log(n))
		log_warn(NULL, "bad request", LF_S("type", type),
		    LF_S("error", a.message), LF_I("bad_requests", n));
	acct_send(fn, arg, MSG_ACK, &a);
}

static void
acct_reply_usage_ack(acct_reply_fn fn, void *arg, const char *request_id,
    const char *worker_id, int64_t committed, const char *code)
{
	struct msg_usage_ack a;

	memset(&a, 0, sizeof(a));
	snprintf(a.request_id, sizeof(a.request_id), "%s", request_id);
	snprintf(a.worker_id, sizeof(a.worker_id), "%s", worker_id);
	a.committed_seq = committed;
	snprintf(a.code, sizeof(a.code), "%s", code);
	acct_send(fn, arg, MSG_USAGE_ACK, &a);
}

static void
acct_reply_analytics(acct_reply_fn fn, void *arg, const char *request_id,
    int64_t status, const char *payload, size_t len)
{
	struct msg_analytics_resp r;

	memset(&r, 0, sizeof(r));
	snprintf(r.request_id, sizeof(r.request_id), "%s", request_id);
	r.status = status;
	r.payload = payload;
	r.payload_len = len;
	acct_send(fn, arg, MSG_ANALYTICS_RESP, &r);
}

static void
acct_reply_analytics_error(acct_reply_fn fn, void *arg, const char *request_id,
    int64_t status, const char *code, const char *message)
{
	char *doc = NULL;
	size_t len = 0;

	if (acct_analytics_error(code, message, &doc, &len) != 0) {
		fn(arg, NULL, 0);
		return;
	}
	acct_reply_analytics(fn, arg, request_id, status, doc, len);
	free(doc);
}

static void
acct_reply_cost(acct_reply_fn fn, void *arg, const char *request_id,
    const char *day, int64_t micro_usd, const char *code)
{
	struct msg_cost_today_resp r;

	memset(&r, 0, sizeof(r));
	snprintf(r.request_id, sizeof(r.request_id), "%s", request_id);
	snprintf(r.day, sizeof(r.day), "%s", day);
	r.micro_usd = micro_usd;
	snprintf(r.code, sizeof(r.code), "%s", code);
	acct_send(fn, arg, MSG_COST_TODAY_RESP, &r);
}

/* ---- the query thread ---- */

static void
acct_job_sync(struct acct_server *s, struct acct_job *j)
{
	int64_t c = 0;
	int rv = acct_ledger_committed(s->ledger, j->m.sync.worker_id, &c);
	bool ok = rv == 0 && acct_ledger_db_up(s->ledger);

	acct_reply_usage_ack(j->fn, j->arg, j->m.sync.request_id,
	    j->m.sync.worker_id, rv == 0 ? c : 0, ok ? "ok" : "unavailable");
}

static void
acct_job_cost(struct acct_server *s, struct acct_job *j)
{
	char day[ACCT_DAY_LEN + 1];
	int64_t v = 0;
	int rv;

	clock_fmt_day(clock_real_ms(), day, sizeof(day));
	rv = acct_ledger_cost_day(
	    s->ledger, j->m.cost.subject_type, j->m.cost.subject_id, day, &v);
	acct_reply_cost(j->fn, j->arg, j->m.cost.request_id, day,
	    rv == 0 ? v : 0, rv == 0 ? "ok" : "unavailable");
}

static void
acct_job_analytics(struct acct_server *s, struct acct_job *j)
{
	const struct msg_analytics_req *req = &j->m.analytics;
	struct acct_report *r = NULL;
	int64_t now = clock_real_ms();
	struct acct_query q;
	char err[256], *doc = NULL;
	size_t len = 0;
	int rv;

	if (acct_analytics_query(req, now, &q, err, sizeof(err)) != 0) {
		atomic_fetch_add(&s->nbad, 1);
		acct_reply_analytics_error(
		    j->fn, j->arg, req->request_id, 400, "bad_request", err);
		return;
	}
	if ((r = malloc(sizeof(*r))) == NULL) {
		j->fn(j->arg, NULL, 0);
		return;
	}
	if ((rv = acct_ledger_report(s->ledger, &q, r)) != 0) {
		acct_reply_analytics_error(j->fn, j->arg, req->request_id, 503,
		    "unavailable", "the usage database is unavailable");
	} else if ((rv = acct_analytics_json(req, &q, r, now, &doc, &len)) !=
		   0) {
		j->fn(j->arg, NULL, 0);
	} else {
		acct_reply_analytics(
		    j->fn, j->arg, req->request_id, 200, doc, len);
	}
	free(doc);
	free(r);
}

static void *
acct_jobs_main(void *arg)
{
	struct acct_server *s = arg;
	struct acct_job *j;
	bool stop;

	pthread_mutex_lock(&s->jmu);
	for (;;) {
		while (!s->jstop && s->jhead == NULL)
			pthread_cond_wait(&s->jcv, &s->jmu);
		if ((j = s->jhead) == NULL)
			break;
		s->jhead = j->next;
		if (s->jhead == NULL)
			s->jtail = NULL;
		s->njobs--;
		stop = s->jstop;
		pthread_mutex_unlock(&s->jmu);
		if (stop) {
			j->fn(j->arg, NULL, 0); /* stopping: no answer */
		} else if (j->type == MSG_USAGE_SYNC) {
			acct_job_sync(s, j);
		} else if (j->type == MSG_COST_TODAY_REQ) {
			acct_job_cost(s, j);
		} else {
			acct_job_analytics(s, j);
		}
		free(j);
		pthread_mutex_lock(&s->jmu);
	}
	pthread_mutex_unlock(&s->jmu);
	return NULL;
}

/* Queues j for the query thread; -EBUSY (full) or -ESHUTDOWN: the caller
 * answers and frees j. */
static int
acct_job_push(struct acct_server *s, struct acct_job *j)
{
	int rv = 0;

	pthread_mutex_lock(&s->jmu);
	if (s->jstop)
		rv = -ESHUTDOWN;
	else if (s->njobs >= ACCT_JOBS_MAX)
		rv = -EBUSY;
	if (rv == 0) {
		j->next = NULL;
		if (s->jtail != NULL)
			s->jtail->next = j;
		else
			s->jhead = j;
		s->jtail = j;
		s->njobs++;
		pthread_cond_signal(&s->jcv);
	}
	pthread_mutex_unlock(&s->jmu);
	return rv;
}

/* Answers a job the query thread will not run. */
static void
acct_job_refuse(struct acct_job *j)
{
	char day[ACCT_DAY_LEN + 1];

	switch (j->type) {
	case MSG_USAGE_SYNC:
		acct_reply_usage_ack(j->fn, j->arg, j->m.sync.request_id,
		    j->m.sync.worker_id, 0, "busy");
		break;
	case MSG_COST_TODAY_REQ:
		clock_fmt_day(clock_real_ms(), day, sizeof(day));
		acct_reply_cost(
		    j->fn, j->arg, j->m.cost.request_id, day, 0, "busy");
		break;
	default:
		acct_reply_analytics_error(j->fn, j->arg,
		    j->m.analytics.request_id, 503, "unavailable",
		    "the accountant is busy");
		break;
	}
	free(j);
}

/* ---- usage batches ---- */

static void
acct_batch_done(void *arg, int result)
{
	struct acct_batch_wait *w = arg;
	int64_t c = 0;

	(void)acct_ledger_committed_cached(w->s->ledger, w->worker_id, &c);
	acct_reply_usage_ack(w->fn, w->arg, w->request_id, w->worker_id, c,
	    result == 0 ? "ok" : "unavailable");
	free(w);
}

/*
 * Decodes the events of a batch into evs (room for b->count): each one a
 * usage_event of the batch's stream, with the next seq, and nothing after
 * the last.
 */
static int
acct_batch_events(const struct msg_usage_batch *b, struct msg_usage_event *evs)
{
	const char *p = b->payload, *end = b->payload + b->payload_len, *line;
	size_t len;
	int rv;

	for (int64_t i = 0; i < b->count; i++) {
		if (!proto_batch_next(&p, end, &line, &len))
			return -EPROTO;
		if ((rv = msg_usage_event_decode(line, len, &evs[i])) != 0)
			return rv;
		if (strcmp(evs[i].worker_id, b->worker_id) != 0 ||
		    evs[i].seq != b->first_seq + i)
			return -ERANGE;
	}
	return p == end ? 0 : -EPROTO;
}

static void
acct_usage_batch(struct acct_server *s, const char *buf, size_t len,
    acct_reply_fn fn, void *arg)
{
	struct msg_usage_batch b;
	struct msg_usage_event *evs = NULL;
	struct acct_batch_wait *w = NULL;
	int64_t c = 0;
	int rv;

	if ((rv = msg_usage_batch_decode(buf, len, &b)) != 0 ||
	    (evs = calloc((size_t)b.count, sizeof(*evs))) == NULL ||
	    (rv = acct_batch_events(&b, evs)) != 0) {
		free(evs);
		if (rv == 0) {
			fn(arg, NULL, 0);
			return;
		}
		acct_reply_bad(s, MSG_USAGE_BATCH, rv, fn, arg);
		return;
	}
	if ((w = calloc(1, sizeof(*w))) == NULL) {
		free(evs);
		fn(arg, NULL, 0);
		return;
	}
	w->s = s;
	w->fn = fn;
	w->arg = arg;
	memcpy(w->request_id, b.request_id, sizeof(w->request_id));
	memcpy(w->worker_id, b.worker_id, sizeof(w->worker_id));
	atomic_fetch_add(&s->nbatches, 1);
	atomic_fetch_add(&s->nbatch_events, (uint64_t)b.count);
	/* From here the writer may answer (and the request be freed). */
	rv = acct_ledger_submit(
	    s->ledger, evs, (size_t)b.count, acct_batch_done, w);
	free(evs);
	if (rv == 0)
		return;
	(void)acct_ledger_committed_cached(s->ledger, w->worker_id, &c);
	acct_reply_usage_ack(fn, arg, w->request_id, w->worker_id, c,
	    rv == -ENOBUFS || rv == -EBUSY ? "busy" : "unavailable");
	free(w);
}

/* ---- requests ---- */

static void
acct_reply_pong(const struct msg_ping *req, acct_reply_fn fn, void *arg)
{
	struct msg_pong p;

	memset(&p, 0, sizeof(p));
	snprintf(p.request_id, sizeof(p.request_id), "%s", req->request_id);
	p.ts_us = req->ts_us;
	snprintf(p.daemon, sizeof(p.daemon), "%s", ACCT_DAEMON_NAME);
	p.pid = (int64_t)getpid();
	acct_send(fn, arg, MSG_PONG, &p);
}

static void
acct_reply_status(struct acct_server *s, const struct msg_status_req *req,
    acct_reply_fn fn, void *arg)
{
	struct acct_ledger_stats st;
	struct msg_status_resp r;
	json_t *doc;
	char *payload;

	acct_ledger_stats(s->ledger, &st);
	doc = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
			"s:I, s:I, s:I, s:I}",
	    "ledger", acct_ledger_backend(s->ledger), "database",
	    st.db_up ? "up" : "down", "queued", (json_int_t)st.queued,
	    "events_received", (json_int_t)atomic_load(&s->nevents),
	    "events_rejected", (json_int_t)atomic_load(&s->nevents_bad),
	    "events_dropped", (json_int_t)atomic_load(&s->ndropped), "batches",
	    (json_int_t)atomic_load(&s->nbatches), "batch_events",
	    (json_int_t)atomic_load(&s->nbatch_events), "events_committed",
	    (json_int_t)st.committed, "commits", (json_int_t)st.commits,
	    "commit_failures", (json_int_t)st.commit_failures, "ledger_errors",
	    (json_int_t)st.commit_failures, "requests",
	    (json_int_t)atomic_load(&s->nreq), "bad_requests",
	    (json_int_t)atomic_load(&s->nbad));
	if (doc == NULL || (payload = json_dumps(doc, JSON_COMPACT)) == NULL) {
		json_decref(doc);
		fn(arg, NULL, 0);
		return;
	}
	json_decref(doc);
	memset(&r, 0, sizeof(r));
	snprintf(r.request_id, sizeof(r.request_id), "%s", req->request_id);
	snprintf(r.daemon, sizeof(r.daemon), "%s", ACCT_DAEMON_NAME);
	snprintf(r.state, sizeof(r.state), "%s", st.db_up ? "up" : "degraded");
	r.payload = payload;
	r.payload_len = strlen(payload);
	acct_send(fn, arg, MSG_STATUS_RESP, &r);
	free(payload);
}

void
acct_server_request(struct acct_server *s, const char *buf, size_t len,
    acct_reply_fn fn, void *arg)
{
	enum msg_type t = MSG_NONE;
	struct acct_job *j;
	union proto_msg m;
	int64_t c;
	int rv;

	atomic_fetch_add(&s->nreq, 1);
	if ((rv = proto_peek_type(buf, len, &t)) != 0) {
		acct_reply_bad(s, MSG_NONE, rv, fn, arg);
		return;
	}
	/* Never act on stale bytes, whatever a decoder leaves behind. */
	memset(&m, 0, sizeof(m));
	switch (t) {
	case MSG_PING:
		if ((rv = msg_ping_decode(buf, len, &m.ping)) == 0)
			acct_reply_pong(&m.ping, fn, arg);
		break;
	case MSG_STATUS_REQ:
		if ((rv = msg_status_req_decode(buf, len, &m.status_req)) == 0)
			acct_reply_status(s, &m.status_req, fn, arg);
		break;
	case MSG_USAGE_BATCH:
		acct_usage_batch(s, buf, len, fn, arg);
		break;
	case MSG_USAGE_SYNC:
	case MSG_COST_TODAY_REQ:
	case MSG_ANALYTICS_REQ:
		if ((j = calloc(1, sizeof(*j))) == NULL) {
			fn(arg, NULL, 0);
			return;
		}
		j->fn = fn;
		j->arg = arg;
		j->type = t;
		rv = proto_msg_decode(t, buf, len, &j->m);
		if (rv != 0) {
			free(j);
			break;
		}
		/* The common case needs no database. */
		if (t == MSG_USAGE_SYNC && acct_ledger_db_up(s->ledger) &&
		    acct_ledger_committed_cached(
			s->ledger, j->m.sync.worker_id, &c)) {
			acct_reply_usage_ack(fn, arg, j->m.sync.request_id,
			    j->m.sync.worker_id, c, "ok");
			free(j);
			break;
		}
		if (acct_job_push(s, j) != 0)
			acct_job_refuse(j);
		break;
	default:
		rv = -ENOTSUP;
		break;
	}
	if (rv != 0)
		acct_reply_bad(s, t, rv, fn, arg);
}

/* ---- usage events (sub socket) ---- */

int
acct_server_usage(struct acct_server *s, const char *body, size_t len)
{
	struct msg_usage_event ev;
	const char *msg = NULL;
	size_t msg_len;
	uint64_t n;
	int rv;

	memset(&ev, 0, sizeof(ev));
	if ((rv = proto_topic_strip(
		 PROTO_TOPIC_USAGE, body, len, &msg, &msg_len)) != 0 ||
	    (rv = msg_usage_event_decode(msg, msg_len, &ev)) != 0) {
		n = atomic_fetch_add(&s->nevents_bad, 1) + 1;
		if (acct_should_log(n))
			log_warn(NULL, "usage event rejected",
			    LF_S("error", strerror(-rv)), LF_I("bytes", len),
			    LF_I("events_rejected", n));
		return rv;
	}
	atomic_fetch_add(&s->nevents, 1);
	log_debug(ev.request_id, "usage event", LF_S("event_id", ev.event_id),
	    LF_S("worker_id", ev.worker_id), LF_I("seq", ev.seq),
	    LF_S("status", ev.status), LF_S("provider", ev.provider),
	    LF_S("model", ev.model), LF_I("cost_micro_usd", ev.cost_micro_usd));
	if ((rv = acct_ledger_submit(s->ledger, &ev, 1, NULL, NULL)) != 0) {
		n = atomic_fetch_add(&s->ndropped, 1) + 1;
		if (acct_should_log(n))
			log_warn(ev.request_id,
			    "usage event not queued (its journal keeps it)",
			    LF_S("event_id", ev.event_id),
			    LF_S("error", strerror(-rv)),
			    LF_I("events_dropped", n));
	}
	return rv;
}

/* The sub socket's one aio: runs on an nng thread, never two at once. */
static void
acct_on_usage(void *arg)
{
	struct acct_server *s = arg;
	int rv = nng_aio_result(s->sub_aio);
	nng_msg *m;

	if (rv == NNG_ECLOSED || rv == NNG_ECANCELED ||
	    atomic_load(&s->stopping))
		return;
	if (rv == 0) {
		m = nng_aio_get_msg(s->sub_aio);
		nng_aio_set_msg(s->sub_aio, NULL);
		(void)acct_server_usage(s, nng_msg_body(m), nng_msg_len(m));
		nng_msg_free(m);
	} else {
		log_warn(NULL, "usage receive failed",
		    LF_S("error", nng_strerror(rv)));
	}
	nng_recv_aio(s->sub, s->sub_aio);
}

static int
acct_sub_start(struct acct_server *s, const char *url)
{
	int rv;

	if ((rv = nng_sub0_open(&s->sub)) != 0)
		return nngx_err(rv);
	s->sub_open = true;
	if ((rv = nng_socket_set(s->sub, NNG_OPT_SUB_SUBSCRIBE,
		 PROTO_TOPIC_USAGE, strlen(PROTO_TOPIC_USAGE))) != 0 ||
	    (rv = nng_socket_set_size(
		 s->sub, NNG_OPT_RECVMAXSZ, ACCT_USAGE_RECV_MAX)) != 0 ||
	    (rv = nng_socket_set_int(s->sub, NNG_OPT_RECVBUF, 1024)) != 0 ||
	    (rv = nng_aio_alloc(&s->sub_aio, acct_on_usage, s)) != 0)
		return nngx_err(rv);
	if ((rv = nngx_listen(s->sub, url, "sub")) != 0)
		return rv;
	nng_recv_aio(s->sub, s->sub_aio);
	log_info(NULL, "listening", LF_S("socket", "sub"), LF_S("url", url),
	    LF_S("topic", PROTO_TOPIC_USAGE));
	return 0;
}

static void
acct_rep_reply(void *arg, const char *buf, size_t len)
{
	struct nngx_rep_ctx *ctx = arg;

	if (buf == NULL)
		nngx_rep_drop(ctx);
	else
		nngx_rep_reply(ctx, buf, len);
}

static void
acct_on_request(
    void *arg, struct nngx_rep_ctx *ctx, const char *buf, size_t len)
{
	acct_server_request(arg, buf, len, acct_rep_reply, ctx);
}

int
acct_server_listen(
    struct acct_server *s, const char *rep_url, const char *usage_url)
{
	int rv;

	if (s->rep != NULL || s->sub_open)
		return -EALREADY;
	rv = nngx_rep_start(
	    rep_url, true, ACCT_REP_CONTEXTS, acct_on_request, s, &s->rep);
	if (rv != 0)
		return rv;
	log_info(NULL, "listening", LF_S("socket", "rep"), LF_S("url", rep_url),
	    LF_I("contexts", ACCT_REP_CONTEXTS));
	return acct_sub_start(s, usage_url);
}

/* ---- life cycle ---- */

int
acct_server_new(const struct acct_server_opts *o, struct acct_server **ret,
    char *err, size_t errlen)
{
	struct acct_ledger_opts lo;
	const struct acct_db_ops *ops = NULL;
	char target[ACCT_TARGET_MAX], describe[512];
	struct acct_server *s;
	int rv;

	if ((rv = acct_db_resolve(o->database_url, o->state_dir, &ops, target,
		 sizeof(target), describe, sizeof(describe), err, errlen)) != 0)
		return rv;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return -ENOMEM;
	atomic_init(&s->stopping, false);
	atomic_init(&s->nreq, 0);
	atomic_init(&s->nbad, 0);
	atomic_init(&s->nevents, 0);
	atomic_init(&s->nevents_bad, 0);
	atomic_init(&s->ndropped, 0);
	atomic_init(&s->nbatches, 0);
	atomic_init(&s->nbatch_events, 0);
	pthread_mutex_init(&s->jmu, NULL);
	pthread_cond_init(&s->jcv, NULL);
	memset(&lo, 0, sizeof(lo));
	lo.ops = ops;
	lo.target = target;
	lo.describe = describe;
	lo.queue_max = o->queue_max;
	lo.batch_max = o->batch_max;
	if ((rv = acct_ledger_open(&lo, &s->ledger)) != 0) {
		snprintf(err, errlen, "cannot open the ledger %s: %s", describe,
		    strerror(-rv));
		goto fail;
	}
	if ((rv = pthread_create(&s->jthread, NULL, acct_jobs_main, s)) != 0) {
		rv = -rv;
		snprintf(err, errlen, "cannot start a thread");
		goto fail;
	}
	s->jstarted = true;
	log_info(NULL, "ledger open", LF_S("database", describe),
	    LF_B("database_up", acct_ledger_db_up(s->ledger)));
	*ret = s;
	return 0;
fail:
	acct_server_free(s);
	return rv;
}

void
acct_server_free(struct acct_server *s)
{
	if (s == NULL)
		return;
	atomic_store(&s->stopping, true);
	/* No more live events. */
	if (s->sub_aio != NULL)
		nng_aio_stop(s->sub_aio);
	if (s->sub_open)
		nng_close(s->sub);
	if (s->sub_aio != NULL)
		nng_aio_free(s->sub_aio);
	/* The threads that answer later stop before the rep socket goes. */
	pthread_mutex_lock(&s->jmu);
	s->jstop = true;
	pthread_cond_broadcast(&s->jcv);
	pthread_mutex_unlock(&s->jmu);
	if (s->jstarted)
		pthread_join(s->jthread, NULL);
	if (s->ledger != NULL)
		acct_ledger_stop(s->ledger);
	nngx_rep_free(s->rep);
	acct_ledger_free(s->ledger);
	pthread_cond_destroy(&s->jcv);
	pthread_mutex_destroy(&s->jmu);
	free(s);
}
