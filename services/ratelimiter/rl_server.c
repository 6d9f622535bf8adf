/*
 * Ratelimiter requests: decode strictly, answer, never crash on what a
 * peer sends.  See rl_server.h for what is (not yet) enforced.
 */
#include "rl_server.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "log.h"
#include "nngx.h"
#include "proto.h"

/* Bad requests logged one by one, then only every RL_BAD_LOG_EVERY-th, so
 * a misbehaving peer cannot flood the log. */
#define RL_BAD_LOG_FIRST 10
#define RL_BAD_LOG_EVERY 1000

/* The limits window of the placeholder verdict. */
#define RL_WINDOW_S 60

struct rl_server {
	int64_t per_minute;
	int64_t per_hour;
	int64_t per_ip_minute;
	int64_t cost_limit_micro_usd;
	bool redis;
	atomic_uint_fast64_t nreq;
	atomic_uint_fast64_t nbad;
	struct nngx_rep *rep;
};

/* One decoded request of any kind the ratelimiter serves. */
union rl_req {
	struct msg_ping ping;
	struct msg_status_req status;
	struct msg_limit_check check;
	struct msg_limit_settle settle;
	struct msg_quota_req quota;
};

struct rl_server *
rl_server_new(const struct cfg *c)
{
	struct rl_server *s;
	double cost;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	s->per_minute = c->rate_limit_per_minute;
	s->per_hour = c->rate_limit_per_hour;
	s->per_ip_minute = c->rate_limit_per_ip_minute;
	/* USD (bounded by the config table) -> micro-USD. */
	cost = round(c->cost_limit_daily * 1e6);
	s->cost_limit_micro_usd = cost > 0 ? (int64_t)cost : 0;
	s->redis = c->redis_enabled;
	atomic_init(&s->nreq, 0);
	atomic_init(&s->nbad, 0);
	return s;
}

static void
rl_on_request(void *arg, struct nngx_rep_ctx *ctx, const char *buf, size_t len)
{
	struct rl_server *s = arg;
	char *out = NULL;
	size_t out_len = 0;

	int rv;

	if ((rv = rl_server_handle(s, buf, len, &out, &out_len)) != 0) {
		log_error(NULL, "request dropped: no reply",
		    LF_S("error", strerror(-rv)));
		nngx_rep_drop(ctx);
		return;
	}
	nngx_rep_reply(ctx, out, out_len);
	free(out);
}

int
rl_server_listen(struct rl_server *s, const char *url)
{
	int rv;

	if (s->rep != NULL)
		return -EALREADY;
	rv = nngx_rep_start(
	    url, true, RL_REP_CONTEXTS, rl_on_request, s, &s->rep);
	if (rv != 0)
		return rv;
	log_info(NULL, "listening", LF_S("socket", "rep"), LF_S("url", url),
	    LF_I("contexts", RL_REP_CONTEXTS));
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

void
rl_server_free(struct rl_server *s)
{
	if (s == NULL)
		return;
	nngx_rep_free(s->rep);
	free(s);
}

/* ---- replies ---- */

static int
rl_reply_ack(const char *request_id, bool ok, const char *code,
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
rl_reply_pong(const struct msg_ping *req, char **ret_buf, size_t *ret_len)
{
	struct msg_pong p;

	memset(&p, 0, sizeof(p));
	snprintf(p.request_id, sizeof(p.request_id), "%s", req->request_id);
	p.ts_us = req->ts_us;
	snprintf(p.daemon, sizeof(p.daemon), "%s", RL_DAEMON_NAME);
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

	doc = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "backend",
	    s->redis ? "redis" : "memory", "limits", "not enforced yet",
	    "per_minute", (json_int_t)s->per_minute, "per_hour",
	    (json_int_t)s->per_hour, "per_ip_minute",
	    (json_int_t)s->per_ip_minute, "requests",
	    (json_int_t)atomic_load(&s->nreq), "bad_requests",
	    (json_int_t)atomic_load(&s->nbad));
	if (doc == NULL)
		return -ENOMEM;
	payload = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	if (payload == NULL)
		return -ENOMEM;
	memset(&r, 0, sizeof(r));
	snprintf(r.request_id, sizeof(r.request_id), "%s", req->request_id);
	snprintf(r.daemon, sizeof(r.daemon), "%s", RL_DAEMON_NAME);
	snprintf(r.state, sizeof(r.state), "%s", "up");
	r.payload = payload;
	r.payload_len = strlen(payload);
	rv = msg_status_resp_encode(&r, ret_buf, ret_len);
	free(payload);
	return rv;
}

/*
 * Placeholder verdict until the rate-limiter issue: always allowed, the
 * configured per-minute limit with nothing used, no reservation.
 */
static int
rl_reply_verdict(struct rl_server *s, const struct msg_limit_check *req,
    char **ret_buf, size_t *ret_len)
{
	struct msg_limit_verdict v;

	memset(&v, 0, sizeof(v));
	snprintf(v.request_id, sizeof(v.request_id), "%s", req->request_id);
	v.allow = true;
	snprintf(v.code, sizeof(v.code), "%s", "ok");
	v.limit = s->per_minute;
	v.remaining = s->per_minute;
	v.reset_s = RL_WINDOW_S;
	v.retry_after_s = 0;
	v.reservation_id[0] = '\0';
	v.degraded = false;
	log_debug(req->request_id, "limit check allowed (not enforced yet)",
	    LF_S("subject_type", req->subject_type),
	    LF_S("provider", req->provider), LF_S("model", req->model));
	return msg_limit_verdict_encode(&v, ret_buf, ret_len);
}

static int
rl_reply_quota(struct rl_server *s, const struct msg_quota_req *req,
    char **ret_buf, size_t *ret_len)
{
	struct msg_quota_resp q;

	memset(&q, 0, sizeof(q));
	snprintf(q.request_id, sizeof(q.request_id), "%s", req->request_id);
	q.minute_limit = s->per_minute;
	q.minute_used = 0;
	q.hour_limit = s->per_hour;
	q.hour_used = 0;
	q.cost_limit_micro_usd = s->cost_limit_micro_usd;
	q.cost_used_micro_usd = 0;
	q.cost_reserved_micro_usd = 0;
	q.degraded = false;
	return msg_quota_resp_encode(&q, ret_buf, ret_len);
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
	union rl_req req;
	int rv;

	atomic_fetch_add(&s->nreq, 1);
	if ((rv = proto_peek_type(buf, len, &t)) != 0)
		return rl_reply_bad(s, MSG_NONE, rv, ret_buf, ret_len);
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
		/* Nothing is reserved yet, so there is nothing to settle. */
		if ((rv = msg_limit_settle_decode(buf, len, &req.settle)) != 0)
			return rl_reply_bad(s, t, rv, ret_buf, ret_len);
		rv = rl_reply_ack(
		    req.settle.request_id, true, "ok", "", ret_buf, ret_len);
		break;
	case MSG_QUOTA_REQ:
		if ((rv = msg_quota_req_decode(buf, len, &req.quota)) != 0)
			return rl_reply_bad(s, t, rv, ret_buf, ret_len);
		rv = rl_reply_quota(s, &req.quota, ret_buf, ret_len);
		break;
	default:
		return rl_reply_bad(s, t, -ENOTSUP, ret_buf, ret_len);
	}
	if (rv == 0 || rv == -ENOMEM)
		return rv;
	/* A reply we cannot encode is our bug: say so rather than let the
	 * requester wait for its timeout. */
	log_error(NULL, "cannot encode the reply",
	    LF_S("type", msg_type_str(t)), LF_S("error", strerror(-rv)));
	return rl_reply_ack("", false, "internal_error",
	    "the reply could not be encoded", ret_buf, ret_len);
}
