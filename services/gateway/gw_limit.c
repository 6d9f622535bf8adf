/*
 * The gateway's side of the rate limiter: who the caller is (a verified
 * user token, else the session, else "anon:<ip>"), one limit_check before
 * the worker call (the worst-case cost reserved), one limit_settle after
 * it.  If the ratelimiter process itself does not answer in time, the
 * request goes through (fail open, logged): the ratelimiter's own Redis
 * fallback covers Redis failures, this covers the daemon being down.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "gw.h"
#include "jwt.h"
#include "log.h"
#include "proto.h"
#include "subject.h"

#define GW_LIMIT_TIMEOUT_MS  200
#define GW_SETTLE_TIMEOUT_MS 2000

void
gw_limit_subject(struct gw_req *r, const char *bearer)
{
	const char *secret = r->gw->cfg->jwt_secret;
	struct jwt_claims claims;

	if (secret != NULL && bearer != NULL && bearer[0] != '\0') {
		if (jwt_hs256_verify(bearer, secret, strlen(secret),
			clock_real_ms() / 1000, &claims) == 0) {
			snprintf(r->subj_type, sizeof(r->subj_type), "user");
			snprintf(
			    r->subj_id, sizeof(r->subj_id), "%s", claims.sub);
			return;
		}
		/* Forged, expired or not a token: refused on chat routes. */
		r->token_bad = true;
	}
	snprintf(r->subj_type, sizeof(r->subj_type), "session");
	if (r->session[0] != '\0')
		snprintf(r->subj_id, sizeof(r->subj_id), "%s", r->session);
	else
		snprintf(r->subj_id, sizeof(r->subj_id), "anon:%s", r->ip);
}

struct limit_call {
	struct gw_req *r;
	void (*fn)(struct gw_req *);
};

static void check_send_locked(struct gw *gw);
static void check_one_done(
    void *arg, int err, bool sent, const char *buf, size_t len);

static void
limit_done(void *arg, int err, bool sent, const char *buf, size_t len)
{
	struct limit_call *lc = arg;
	struct gw_req *r = lc->r;
	void (*fn)(struct gw_req *) = lc->fn;
	struct msg_limit_verdict v;
	int status;

	(void)sent;
	free(lc);
	if (err != 0 || msg_limit_verdict_decode(buf, len, &v) != 0) {
		log_warn(r->request_id, "ratelimiter unavailable: allowed",
		    LF_S("error", err ? strerror(-err) : "bad verdict"));
		fn(r);
		return;
	}
	pthread_mutex_lock(&r->mtx);
	r->rl_hdrs = true;
	r->rl_limit = v.limit;
	r->rl_remaining = v.remaining;
	r->rl_reset = v.reset_s;
	if (v.allow) {
		snprintf(r->reservation, sizeof(r->reservation), "%s",
		    v.reservation_id);
		pthread_mutex_unlock(&r->mtx);
		fn(r);
		return;
	}
	/* Refused: the chat_req never leaves. */
	free(r->call_buf);
	r->call_buf = NULL;
	if (r->closed)
		goto out;
	status = strcmp(v.code, "blocked") == 0 ? 403 : 429;
	r->no_retry = true;
	if (status == 429)
		r->retry_after_ms =
		    (v.retry_after_s > 0 ? v.retry_after_s : 1) * 1000;
	else if (v.retry_after_s > 0) /* blocked: until the block ends */
		r->retry_after_ms = v.retry_after_s * 1000;
	log_info(r->request_id, "request limited", LF_S("code", v.code),
	    LF_S("subject_type", r->subj_type), LF_I("status", status),
	    LF_I("retry_after_s", v.retry_after_s));
	gw_req_set_error_locked(r, status, v.code, NULL);
	gw_req_wake_locked(r);
out:
	pthread_mutex_unlock(&r->mtx);
	gw_req_unref(r);
}

int64_t
gw_limit_worst_case(const struct model *m, const struct model *fb, bool stream,
    int64_t input_tokens, int64_t max_tokens)
{
	int64_t worst = models_worst_case(m, input_tokens, max_tokens), alt;

	/* A non-streamed call may be served by the other provider's model:
	 * reserve for the dearer of the two, or the budget could overshoot
	 * by the difference. */
	if (!stream && fb != NULL &&
	    (alt = models_worst_case(fb, input_tokens, max_tokens)) > worst)
		worst = alt;
	return worst;
}

int
gw_limit_fallbacks(struct gw *gw)
{
	const char *map = gw->cfg->fallback_model_map;
	size_t n = models_count(gw->models);

	if (map == NULL || map[0] == '\0')
		return 0;
	if ((gw->fallback = calloc(n, sizeof(*gw->fallback))) == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const struct model *m = models_at(gw->models, i);

		gw->fallback[i] = models_fallback(gw->models, map, m,
		    strcmp(m->provider, "claude") == 0 ? "openai" : "claude");
	}
	return 0;
}

void
gw_limit_check(struct gw_req *r, const char *text, size_t text_len,
    int64_t max_tokens, const struct model *m, void (*fn)(struct gw_req *))
{
	struct gw *gw = r->gw;
	struct msg_limit_check c;
	struct subject_injection inj = {0};
	struct limit_call *lc;
	char *buf = NULL;
	size_t len;
	int rv;

	if (!gw->rl_open || !gw->cfg->rate_limit_enabled) {
		fn(r);
		return;
	}
	memset(&c, 0, sizeof(c));
	snprintf(c.request_id, sizeof(c.request_id), "%s", r->request_id);
	snprintf(c.subject_type, sizeof(c.subject_type), "%s", r->subj_type);
	snprintf(c.subject_id, sizeof(c.subject_id), "%s", r->subj_id);
	snprintf(c.ip, sizeof(c.ip), "%s", r->ip);
	snprintf(c.provider, sizeof(c.provider), "%s", r->provider);
	snprintf(c.model, sizeof(c.model), "%s", r->model);
	/* Input tokens are estimated from the bytes (4 per token, as the
	 * providers' rule of thumb), rounded up: the reservation is a
	 * ceiling, settled to the real cost afterwards. */
	c.reserve_micro_usd = gw_limit_worst_case(m,
	    gw->fallback != NULL ? gw->fallback[models_index(gw->models, m)]
				 : NULL,
	    r->is_stream, (int64_t)text_len / 4 + 1, max_tokens);
	r->reserved_micro_usd = c.reserve_micro_usd;
	if (subject_injection_scan(text, text_len, &inj) == 0 && inj.points)
		log_warn(r->request_id, "prompt-injection pattern",
		    LF_S("rule", inj.rule));
	c.threat = inj.points;
	if ((lc = calloc(1, sizeof(*lc))) == NULL ||
	    (rv = msg_limit_check_encode(&c, &buf, &len)) != 0) {
		free(lc);
		fn(r);
		return;
	}
	lc->r = r;
	lc->fn = fn;
	atomic_fetch_add(&gw->n_checks, 1);
	pthread_mutex_lock(&gw->check_mtx);
	if ((rv = buf_append(&gw->check_buf, buf, len)) == 0) {
		gw->check_q[gw->check_n++] = lc;
		if (gw->check_inflight == 0 ||
		    gw->check_n >= PROTO_CHECK_BATCH_MAX ||
		    atomic_load(&gw->check_single))
			check_send_locked(gw);
	}
	pthread_mutex_unlock(&gw->check_mtx);
	free(buf);
	if (rv != 0) { /* cannot happen below PROTO_CHECK_BATCH_MAX */
		free(lc);
		log_warn(r->request_id, "limit_check not queued: allowed",
		    LF_S("error", strerror(-rv)));
		fn(r);
	}
}

/*
 * Checks travel as a group commit, like settles: with no check in flight
 * one goes at once (a single limit_check: nothing waits at low load);
 * while one is, the next ones gather and leave together as one
 * limit_check_batch when its answer comes back.  Under load that spares
 * the gateway and the ratelimiter most of a round trip's work per
 * request, and each check is decided exactly as alone.
 */
struct check_batch {
	int n;
	char *msg; /* the limit_check_batch as sent: for a refusal */
	size_t msg_len;
	struct limit_call *lc[];
};

static void
check_batch_free(struct check_batch *cb)
{
	if (cb != NULL)
		free(cb->msg);
	free(cb);
}

/*
 * A ratelimiter that does not know limit_check_batch (an older one during
 * a rolling upgrade) answers ack bad_request.  Letting those requests
 * through unchecked would lift every limit under load: send each check
 * again alone, and from now on send checks one by one.
 */
static void
check_batch_resend(struct gw *gw, struct check_batch *cb)
{
	struct msg_limit_check_batch b;
	const char *p = NULL, *end = NULL, *line;
	size_t len;
	int i = 0, rv;

	if (!atomic_exchange(&gw->check_single, true))
		log_warn(NULL, "the ratelimiter refuses limit_check_batch: "
			       "checks go one by one");
	/* Our own encoding: it decodes. */
	if (msg_limit_check_batch_decode(cb->msg, cb->msg_len, &b) == 0) {
		p = b.payload;
		end = b.payload + b.payload_len;
	}
	pthread_mutex_lock(&gw->check_mtx);
	for (; i < cb->n && p != NULL && proto_batch_next(&p, end, &line, &len);
	     i++) {
		rv = gw->rl_open
			 ? gw_call(gw, gw->rl_sock, line, len,
			       GW_LIMIT_TIMEOUT_MS, check_one_done, cb->lc[i])
			 : -ENOTCONN;
		if (rv != 0) {
			limit_done(cb->lc[i], rv, false, NULL, 0);
			continue;
		}
		gw->check_inflight++;
		atomic_fetch_add(&gw->n_check_batches, 1);
	}
	pthread_mutex_unlock(&gw->check_mtx);
	for (; i < cb->n; i++)
		limit_done(cb->lc[i], -EPROTO, false, NULL, 0);
}

/* An answer came back: what gathered meanwhile may go. */
static void
check_flight_end(struct gw *gw)
{
	pthread_mutex_lock(&gw->check_mtx);
	gw->check_inflight--;
	if (gw->check_inflight == 0)
		check_send_locked(gw);
	pthread_mutex_unlock(&gw->check_mtx);
}

static void
check_one_done(void *arg, int err, bool sent, const char *buf, size_t len)
{
	struct limit_call *lc = arg;

	check_flight_end(lc->r->gw);
	limit_done(lc, err, sent, buf, len);
}

/* Each verdict of the batch, in order, to its request; a missing or
 * undecodable one lets its request through as when the ratelimiter does
 * not answer (logged by limit_done). */
static void
check_batch_done(void *arg, int err, bool sent, const char *buf, size_t len)
{
	struct check_batch *cb = arg;
	struct gw *gw = cb->lc[0]->r->gw;
	struct msg_limit_verdict_batch b;
	struct msg_ack a;
	const char *p = NULL, *end = NULL, *line;
	size_t line_len;
	int i = 0;

	check_flight_end(gw);
	if (err == 0 && msg_limit_verdict_batch_decode(buf, len, &b) == 0 &&
	    b.count == cb->n) {
		p = b.payload;
		end = b.payload + b.payload_len;
	} else if (err == 0 && msg_ack_decode(buf, len, &a) == 0 &&
		   strcmp(a.code, "bad_request") == 0) {
		check_batch_resend(gw, cb);
		check_batch_free(cb);
		return;
	} else if (err == 0) {
		log_warn(NULL, "limit_check_batch answer refused",
		    LF_I("checks", cb->n));
		err = -EPROTO;
	}
	for (; i < cb->n && p != NULL &&
	       proto_batch_next(&p, end, &line, &line_len);
	     i++)
		limit_done(cb->lc[i], 0, sent, line, line_len);
	for (; i < cb->n; i++)
		limit_done(cb->lc[i], err != 0 ? err : -EPROTO, sent, NULL, 0);
	check_batch_free(cb);
}

/* Sends what is gathered: one limit_check alone, or a batch.  Under
 * check_mtx.  A send that fails lets its requests through (logged). */
static void
check_send_locked(struct gw *gw)
{
	struct msg_limit_check_batch m;
	struct check_batch *cb = NULL;
	int n = gw->check_n, rv = -ENOTCONN;

	if (n == 0)
		return;
	if (n == 1) {
		if (gw->rl_open)
			rv = gw_call(gw, gw->rl_sock, gw->check_buf.data,
			    gw->check_buf.len, GW_LIMIT_TIMEOUT_MS,
			    check_one_done, gw->check_q[0]);
	} else {
		memset(&m, 0, sizeof(m));
		m.count = n;
		m.payload = gw->check_buf.data;
		m.payload_len = gw->check_buf.len;
		cb = calloc(1, sizeof(*cb) + (size_t)n * sizeof(cb->lc[0]));
		if (cb == NULL)
			rv = -ENOMEM;
		else if ((rv = msg_limit_check_batch_encode(
			      &m, &cb->msg, &cb->msg_len)) == 0 &&
			 (rv = gw->rl_open ? 0 : -ENOTCONN) == 0) {
			cb->n = n;
			memcpy(
			    cb->lc, gw->check_q, (size_t)n * sizeof(cb->lc[0]));
			rv = gw_call(gw, gw->rl_sock, cb->msg, cb->msg_len,
			    GW_LIMIT_TIMEOUT_MS, check_batch_done, cb);
		}
		if (rv != 0)
			check_batch_free(cb);
	}
	buf_reset(&gw->check_buf);
	gw->check_n = 0;
	if (rv == 0) {
		gw->check_inflight++;
		atomic_fetch_add(&gw->n_check_batches, 1);
		return;
	}
	log_warn(NULL, "ratelimiter call failed: allowed", LF_I("checks", n),
	    LF_S("error", strerror(-rv)));
	for (int i = 0; i < n; i++) {
		struct limit_call *lc = gw->check_q[i];
		struct gw_req *r = lc->r;
		void (*fn)(struct gw_req *) = lc->fn;

		free(lc);
		fn(r);
	}
}

static void settle_send_locked(struct gw *gw);

/* The ratelimiter has the batch: send what gathered meanwhile. */
static void
settle_done(void *arg, int err, bool sent, const char *buf, size_t len)
{
	struct gw *gw = arg;
	struct msg_ack a;

	(void)sent;
	if (err != 0)
		log_warn(NULL, "limit settles not acknowledged",
		    LF_S("error", strerror(-err)));
	else if (msg_ack_decode(buf, len, &a) == 0 && !a.ok)
		log_warn(NULL, "limit settles refused", LF_S("code", a.code),
		    LF_S("message", a.message));
	pthread_mutex_lock(&gw->settle_mtx);
	gw->settle_inflight = false;
	settle_send_locked(gw);
	pthread_mutex_unlock(&gw->settle_mtx);
}

/* Sends what is gathered as one limit_settle_batch.  Under settle_mtx. */
static void
settle_send_locked(struct gw *gw)
{
	struct msg_limit_settle_batch b;
	char *buf = NULL;
	size_t len;
	int rv;

	if (gw->settle_n == 0)
		return;
	memset(&b, 0, sizeof(b));
	b.count = gw->settle_n;
	b.payload = gw->settle_buf.data;
	b.payload_len = gw->settle_buf.len;
	if ((rv = msg_limit_settle_batch_encode(&b, &buf, &len)) == 0 &&
	    gw->rl_open)
		rv = gw_call(gw, gw->rl_sock, buf, len, GW_SETTLE_TIMEOUT_MS,
		    settle_done, gw);
	else if (rv == 0)
		rv = -ENOTCONN;
	if (rv != 0) {
		log_warn(NULL,
		    "limit settles not sent: the reservations expire",
		    LF_I("settles", gw->settle_n),
		    LF_S("error", strerror(-rv)));
	} else {
		gw->settle_inflight = true;
		atomic_fetch_add(&gw->n_settle_batches, 1);
	}
	free(buf);
	buf_reset(&gw->settle_buf);
	gw->settle_n = 0;
}

void
gw_limit_init(struct gw *gw)
{
	pthread_mutex_init(&gw->settle_mtx, NULL);
	buf_init(&gw->settle_buf, PROTO_SETTLE_BATCH_MAX * PROTO_HEADER_MAX);
	pthread_mutex_init(&gw->check_mtx, NULL);
	buf_init(&gw->check_buf, PROTO_CHECK_BATCH_MAX * PROTO_HEADER_MAX);
}

void
gw_limit_flush(struct gw *gw)
{
	pthread_mutex_lock(&gw->settle_mtx);
	gw->settle_direct = true;
	settle_send_locked(gw);
	pthread_mutex_unlock(&gw->settle_mtx);
}

void
gw_limit_fini(struct gw *gw)
{
	buf_free(&gw->settle_buf);
	pthread_mutex_destroy(&gw->settle_mtx);
	buf_free(&gw->check_buf);
	pthread_mutex_destroy(&gw->check_mtx);
}

/*
 * Settles go in batches, as a group commit: with no batch in flight a
 * settle goes at once; while one is, the next ones gather and leave
 * together when its ack comes back (or when PROTO_SETTLE_BATCH_MAX are
 * waiting).  Under load that spares the ratelimiter and the gateway most
 * of a round trip per request; a reservation is held at most one round
 * trip longer, so the budget errs on the safe side, never over.
 */
void
gw_limit_settle(struct gw_req *r, int64_t actual_micro_usd)
{
	struct gw *gw = r->gw;
	struct msg_limit_settle m;
	char *buf = NULL;
	size_t len;
	int rv;

	if (r->reservation[0] == '\0' || !gw->rl_open)
		return;
	memset(&m, 0, sizeof(m));
	snprintf(m.request_id, sizeof(m.request_id), "%s", r->request_id);
	snprintf(m.subject_type, sizeof(m.subject_type), "%s", r->subj_type);
	snprintf(m.subject_id, sizeof(m.subject_id), "%s", r->subj_id);
	snprintf(
	    m.reservation_id, sizeof(m.reservation_id), "%s", r->reservation);
	m.reserved_micro_usd = r->reserved_micro_usd;
	m.actual_micro_usd = actual_micro_usd < 0 ? 0 : actual_micro_usd;
	r->reservation[0] = '\0';
	if ((rv = msg_limit_settle_encode(&m, &buf, &len)) != 0) {
		log_warn(r->request_id, "limit_settle not encoded",
		    LF_S("error", strerror(-rv)));
		return;
	}
	atomic_fetch_add(&gw->n_settles, 1);
	pthread_mutex_lock(&gw->settle_mtx);
	if (buf_append(&gw->settle_buf, buf, len) != 0) {
		/* Full (cannot happen below PROTO_SETTLE_BATCH_MAX): send
		 * what is there, then this one alone. */
		settle_send_locked(gw);
		rv = buf_append(&gw->settle_buf, buf, len);
	}
	free(buf);
	if (rv != 0) {
		pthread_mutex_unlock(&gw->settle_mtx);
		log_warn(r->request_id, "limit_settle dropped: the reservation "
					"expires");
		return;
	}
	gw->settle_n++;
	if (!gw->settle_inflight || gw->settle_direct ||
	    gw->settle_n >= PROTO_SETTLE_BATCH_MAX)
		settle_send_locked(gw);
	pthread_mutex_unlock(&gw->settle_mtx);
}

/* ---- threat signals ---- */

#define GW_THREAT_TIMEOUT_MS 1000

struct threat_call {
	struct gw *gw;
	char request_id[PROTO_ID_MAX + 1];
	char reason[PROTO_NAME_MAX + 1];
};

static void
threat_done(void *arg, int err, bool sent, const char *buf, size_t len)
{
	struct threat_call *tc = arg;
	struct msg_ack a;

	(void)sent;
	if (err != 0)
		log_info(tc->request_id, "threat_report unanswered",
		    LF_S("reason", tc->reason), LF_S("error", strerror(-err)));
	else if (msg_ack_decode(buf, len, &a) == 0 &&
		 strcmp(a.code, "blocked") == 0)
		log_warn(tc->request_id, "threat score: blocked",
		    LF_S("reason", tc->reason));
	atomic_fetch_sub(&tc->gw->threat_calls, 1);
	free(tc);
}

void
gw_limit_threat(
    struct gw_req *r, const char *reason, int points, bool with_subject)
{
	struct gw *gw = r->gw;
	struct msg_threat_report m;
	struct threat_call *tc = NULL;
	char *buf = NULL;
	size_t len;
	int rv;

	if (!gw->rl_open || !gw->cfg->rate_limit_enabled || points <= 0)
		return;
	if (atomic_fetch_add(&gw->threat_calls, 1) >= GW_THREAT_INFLIGHT_MAX) {
		atomic_fetch_sub(&gw->threat_calls, 1);
		atomic_fetch_add(&gw->n_threat_dropped, 1);
		log_debug(r->request_id, "threat_report dropped: too many",
		    LF_S("reason", reason));
		return;
	}
	memset(&m, 0, sizeof(m));
	snprintf(m.request_id, sizeof(m.request_id), "%s", r->request_id);
	if (with_subject && r->subj_type[0] != '\0' && r->subj_id[0] != '\0') {
		snprintf(
		    m.subject_type, sizeof(m.subject_type), "%s", r->subj_type);
		snprintf(m.subject_id, sizeof(m.subject_id), "%s", r->subj_id);
	}
	snprintf(m.ip, sizeof(m.ip), "%s", r->ip);
	snprintf(m.reason, sizeof(m.reason), "%s", reason);
	m.points = points > PROTO_THREAT_MAX ? PROTO_THREAT_MAX : points;
	rv = -ENOMEM;
	if ((tc = calloc(1, sizeof(*tc))) == NULL ||
	    (rv = msg_threat_report_encode(&m, &buf, &len)) != 0)
		goto fail;
	tc->gw = gw;
	snprintf(tc->request_id, sizeof(tc->request_id), "%s", r->request_id);
	snprintf(tc->reason, sizeof(tc->reason), "%s", reason);
	rv = gw_call(
	    gw, gw->rl_sock, buf, len, GW_THREAT_TIMEOUT_MS, threat_done, tc);
	free(buf);
	if (rv != 0)
		goto fail;
	log_info(r->request_id, "threat reported", LF_S("reason", reason),
	    LF_I("points", m.points), LF_B("subject", m.subject_type[0] != 0));
	return;
fail:
	free(tc);
	atomic_fetch_sub(&gw->threat_calls, 1);
	log_warn(r->request_id, "threat_report not sent",
	    LF_S("reason", reason), LF_S("error", strerror(-rv)));
}
