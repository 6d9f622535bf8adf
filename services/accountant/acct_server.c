/*
 * Accountant sockets and requests; see acct_server.h.
 */
#include "acct_server.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>

#include "acct_ledger.h"
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

struct acct_server {
	struct acct_ledger *ledger;
	struct nngx_rep *rep;
	nng_socket sub;
	nng_aio *sub_aio;
	bool sub_open;
	atomic_bool stopping;
	atomic_uint_fast64_t nreq;
	atomic_uint_fast64_t nbad;
	atomic_uint_fast64_t nevents;
	atomic_uint_fast64_t nevents_bad;
	atomic_uint_fast64_t nledger_err;
};

union acct_req {
	struct msg_ping ping;
	struct msg_status_req status;
	struct msg_analytics_req analytics;
};

static bool
acct_should_log(uint64_t n)
{
	return n <= ACCT_BAD_LOG_FIRST || n % ACCT_BAD_LOG_EVERY == 0;
}

int
acct_server_new(const struct cfg *c, struct acct_server **ret)
{
	struct acct_server *s;
	int rv;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return -ENOMEM;
	atomic_init(&s->stopping, false);
	atomic_init(&s->nreq, 0);
	atomic_init(&s->nbad, 0);
	atomic_init(&s->nevents, 0);
	atomic_init(&s->nevents_bad, 0);
	atomic_init(&s->nledger_err, 0);
	if ((rv = acct_ledger_open(c->state_dir, &s->ledger)) != 0) {
		free(s);
		return rv;
	}
	*ret = s;
	return 0;
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
	if ((rv = acct_ledger_append(s->ledger, &ev, clock_real_ms())) != 0) {
		n = atomic_fetch_add(&s->nledger_err, 1) + 1;
		if (acct_should_log(n))
			log_error(ev.request_id, "cannot append to the ledger",
			    LF_S("event_id", ev.event_id),
			    LF_S("path", acct_ledger_path(s->ledger)),
			    LF_S("error", strerror(-rv)),
			    LF_I("ledger_errors", n));
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
	    (rv = nng_aio_alloc(&s->sub_aio, acct_on_usage, s)) != 0)
		return nngx_err(rv);
	if ((rv = nngx_listen(s->sub, url, "sub")) != 0)
		return rv;
	nng_recv_aio(s->sub, s->sub_aio);
	log_info(NULL, "listening", LF_S("socket", "sub"), LF_S("url", url),
	    LF_S("topic", PROTO_TOPIC_USAGE));
	return 0;
}

/* ---- requests (rep socket) ---- */

static void
acct_on_request(
    void *arg, struct nngx_rep_ctx *ctx, const char *buf, size_t len)
{
	struct acct_server *s = arg;
	char *out = NULL;
	size_t out_len = 0;
	int rv;

	if ((rv = acct_server_handle(s, buf, len, &out, &out_len)) != 0) {
		log_error(NULL, "request dropped: no reply",
		    LF_S("error", strerror(-rv)));
		nngx_rep_drop(ctx);
		return;
	}
	nngx_rep_reply(ctx, out, out_len);
	free(out);
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

static int
acct_reply_ack(const char *request_id, bool ok, const char *code,
    const char *message, char **ret_buf, size_t *ret_len)
{
	struct msg_ack a;

	memset(&a, 0, sizeof(a));
	snprintf(a.request_id, sizeof(a.request_id), "%s", request_id);
	a.ok = ok;
	snprintf(a.code, sizeof(a.code), "%s", code);
	snprintf(a.message, sizeof(a.message), "%s", message);
	return msg_ack_encode(&a, ret_buf, ret_len);
}

static int
acct_reply_pong(const struct msg_ping *req, char **ret_buf, size_t *ret_len)
{
	struct msg_pong p;

	memset(&p, 0, sizeof(p));
	snprintf(p.request_id, sizeof(p.request_id), "%s", req->request_id);
	p.ts_us = req->ts_us;
	snprintf(p.daemon, sizeof(p.daemon), "%s", ACCT_DAEMON_NAME);
	p.pid = (int64_t)getpid();
	return msg_pong_encode(&p, ret_buf, ret_len);
}

static int
acct_reply_status(struct acct_server *s, const struct msg_status_req *req,
    char **ret_buf, size_t *ret_len)
{
	struct msg_status_resp r;
	json_t *doc;
	char *payload;
	int rv;

	doc = json_pack("{s:I, s:I, s:s, s:I, s:I, s:I}", "events_received",
	    (json_int_t)atomic_load(&s->nevents), "events_rejected",
	    (json_int_t)atomic_load(&s->nevents_bad), "ledger", "jsonl",
	    "ledger_errors", (json_int_t)atomic_load(&s->nledger_err),
	    "requests", (json_int_t)atomic_load(&s->nreq), "bad_requests",
	    (json_int_t)atomic_load(&s->nbad));
	if (doc == NULL)
		return -ENOMEM;
	payload = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	if (payload == NULL)
		return -ENOMEM;
	memset(&r, 0, sizeof(r));
	snprintf(r.request_id, sizeof(r.request_id), "%s", req->request_id);
	snprintf(r.daemon, sizeof(r.daemon), "%s", ACCT_DAEMON_NAME);
	snprintf(r.state, sizeof(r.state), "%s", "up");
	r.payload = payload;
	r.payload_len = strlen(payload);
	rv = msg_status_resp_encode(&r, ret_buf, ret_len);
	free(payload);
	return rv;
}

/* Placeholder until the accountant issue brings the SQL ledgers. */
static int
acct_reply_analytics(
    const struct msg_analytics_req *req, char **ret_buf, size_t *ret_len)
{
	static const char payload[] = "{\"error\":\"not implemented yet\"}";
	struct msg_analytics_resp r;

	memset(&r, 0, sizeof(r));
	snprintf(r.request_id, sizeof(r.request_id), "%s", req->request_id);
	r.status = 501;
	r.payload = payload;
	r.payload_len = sizeof(payload) - 1;
	return msg_analytics_resp_encode(&r, ret_buf, ret_len);
}

static int
acct_reply_bad(struct acct_server *s, enum msg_type t, int err, char **ret_buf,
    size_t *ret_len)
{
	uint64_t n = atomic_fetch_add(&s->nbad, 1) + 1;
	const char *type = t != MSG_NONE ? msg_type_str(t) : NULL;
	char message[256];

	if (type == NULL)
		type = "unknown";
	if (err == -ENOTSUP)
		snprintf(message, sizeof(message),
		    "message type %s is not served by the accountant", type);
	else
		snprintf(message, sizeof(message), "undecodable %s message: %s",
		    type, strerror(-err));
	if (acct_should_log(n))
		log_warn(NULL, "bad request", LF_S("type", type),
		    LF_S("error", message), LF_I("bad_requests", n));
	return acct_reply_ack(
	    "", false, "bad_request", message, ret_buf, ret_len);
}

int
acct_server_handle(struct acct_server *s, const char *buf, size_t len,
    char **ret_buf, size_t *ret_len)
{
	enum msg_type t = MSG_NONE;
	union acct_req req;
	int rv;

	atomic_fetch_add(&s->nreq, 1);
	if ((rv = proto_peek_type(buf, len, &t)) != 0)
		return acct_reply_bad(s, MSG_NONE, rv, ret_buf, ret_len);
	/* Never act on stale bytes, whatever a decoder leaves behind. */
	memset(&req, 0, sizeof(req));
	switch (t) {
	case MSG_PING:
		if ((rv = msg_ping_decode(buf, len, &req.ping)) != 0)
			return acct_reply_bad(s, t, rv, ret_buf, ret_len);
		rv = acct_reply_pong(&req.ping, ret_buf, ret_len);
		break;
	case MSG_STATUS_REQ:
		if ((rv = msg_status_req_decode(buf, len, &req.status)) != 0)
			return acct_reply_bad(s, t, rv, ret_buf, ret_len);
		rv = acct_reply_status(s, &req.status, ret_buf, ret_len);
		break;
	case MSG_ANALYTICS_REQ:
		if ((rv = msg_analytics_req_decode(buf, len, &req.analytics)) !=
		    0)
			return acct_reply_bad(s, t, rv, ret_buf, ret_len);
		rv = acct_reply_analytics(&req.analytics, ret_buf, ret_len);
		break;
	default:
		return acct_reply_bad(s, t, -ENOTSUP, ret_buf, ret_len);
	}
	if (rv == 0 || rv == -ENOMEM)
		return rv;
	/* A reply we cannot encode is our bug: say so rather than let the
	 * requester wait for its timeout. */
	log_error(NULL, "cannot encode the reply",
	    LF_S("type", msg_type_str(t)), LF_S("error", strerror(-rv)));
	return acct_reply_ack("", false, "internal_error",
	    "the reply could not be encoded", ret_buf, ret_len);
}

void
acct_server_free(struct acct_server *s)
{
	if (s == NULL)
		return;
	atomic_store(&s->stopping, true);
	if (s->sub_aio != NULL)
		nng_aio_stop(s->sub_aio);
	if (s->sub_open)
		nng_close(s->sub);
	if (s->sub_aio != NULL)
		nng_aio_free(s->sub_aio);
	nngx_rep_free(s->rep);
	acct_ledger_close(s->ledger);
	free(s);
}
