/*
 * The caller's own numbers: GET /api/v1/ai-proxy/usage/quota (from the
 * ratelimiter) and GET /api/v1/ai-proxy/usage/analytics (from the
 * accountant).  The subject comes only from the caller's credentials,
 * never from the query, so nobody reads another subject's numbers; the
 * admin key reads everyone's analytics.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "gw_resp.h"
#include "log.h"
#include "proto.h"
#include "subject.h"

#define GW_USAGE_TIMEOUT_MS 5000

/* Answers r with data (JSON) in the success envelope. */
static void
usage_ok_locked(struct gw_req *r, const char *data, size_t len)
{
	buf_reset(&r->out);
	if (gw_fmt_envelope_ok(&r->out, data, len, 0, gw_req_elapsed_ms(r),
		r->request_id, "", "") != 0) {
		gw_req_set_error_locked(r, 500, "internal_error", NULL);
		return;
	}
	r->status = 200;
	r->ctype = "application/json";
	r->state = GW_RS_READY;
}

static void
usage_unavailable_locked(struct gw_req *r, const char *what, int err)
{
	log_warn(r->request_id, "usage query failed", LF_S("daemon", what),
	    LF_S("error", strerror(err < 0 ? -err : EPROTO)));
	r->retry_after_ms = 1000;
	gw_req_set_error_locked(
	    r, 503, "service_unavailable", "the usage service is unavailable");
}

static void
quota_done(void *arg, int err, bool sent, const char *buf, size_t len)
{
	struct gw_req *r = arg;
	struct msg_quota_resp q;
	char data[1024], lim[32], used[32], res[32], left[32];
	int64_t rem;

	(void)sent;
	pthread_mutex_lock(&r->mtx);
	if (r->closed)
		goto out;
	if (err != 0 || msg_quota_resp_decode(buf, len, &q) != 0) {
		usage_unavailable_locked(r, "ratelimiter", err);
		goto wake;
	}
	rem = q.cost_limit_micro_usd - q.cost_used_micro_usd -
	      q.cost_reserved_micro_usd;
	gw_cost_str(q.cost_limit_micro_usd, lim, sizeof(lim));
	gw_cost_str(q.cost_used_micro_usd, used, sizeof(used));
	gw_cost_str(q.cost_reserved_micro_usd, res, sizeof(res));
	gw_cost_str(rem > 0 ? rem : 0, left, sizeof(left));
	snprintf(data, sizeof(data),
	    "{\"subject_type\":\"%s\",\"degraded\":%s,"
	    "\"minute\":{\"limit\":%lld,\"used\":%lld,\"remaining\":%lld},"
	    "\"hour\":{\"limit\":%lld,\"used\":%lld,\"remaining\":%lld},"
	    "\"cost_today\":{\"limit_usd\":%s,\"used_usd\":%s,"
	    "\"reserved_usd\":%s,\"remaining_usd\":%s}}",
	    r->subj_type, q.degraded ? "true" : "false",
	    (long long)q.minute_limit, (long long)q.minute_used,
	    (long long)(q.minute_limit > q.minute_used
			    ? q.minute_limit - q.minute_used
			    : 0),
	    (long long)q.hour_limit, (long long)q.hour_used,
	    (long long)(q.hour_limit > q.hour_used ? q.hour_limit - q.hour_used
						   : 0),
	    lim, used, res, left);
	usage_ok_locked(r, data, strlen(data));
wake:
	gw_req_wake_locked(r);
out:
	pthread_mutex_unlock(&r->mtx);
	gw_req_unref(r);
}

static void
analytics_done(void *arg, int err, bool sent, const char *buf, size_t len)
{
	struct gw_req *r = arg;
	struct msg_analytics_resp a;

	(void)sent;
	pthread_mutex_lock(&r->mtx);
	if (r->closed)
		goto out;
	if (err != 0 || msg_analytics_resp_decode(buf, len, &a) != 0) {
		usage_unavailable_locked(r, "accountant", err);
		goto wake;
	}
	if (a.status == 200)
		usage_ok_locked(r, a.payload, a.payload_len);
	else if (a.status == 400)
		gw_req_set_error_locked(r, 400, "invalid_parameter", NULL);
	else
		usage_unavailable_locked(r, "accountant", -EIO);
wake:
	gw_req_wake_locked(r);
out:
	pthread_mutex_unlock(&r->mtx);
	gw_req_unref(r);
}

/* Sends buf to s; the answer completes r through fn. */
static enum MHD_Result
usage_call(struct gw_req *r, nng_socket s, bool open, char *buf, size_t len,
    gw_call_fn fn)
{
	int rv = -ENOTCONN;

	gw_req_ref(r);
	gw_req_wait(r);
	if (open)
		rv = gw_call(r->gw, s, buf, len, GW_USAGE_TIMEOUT_MS, fn, r);
	free(buf);
	if (rv != 0)
		fn(r, rv, false, NULL, 0);
	return MHD_YES;
}

enum MHD_Result
gw_usage_quota(struct gw_req *r)
{
	struct msg_quota_req q;
	char *buf = NULL;
	size_t len;

	if (r->token_bad) {
		gw_limit_threat(
		    r, "auth_failure", SUBJECT_THREAT_AUTH_FAILURE, false);
		r->www_auth = true;
		return gw_req_error(r, 401, "invalid_token",
		    "the bearer token is invalid or expired", NULL);
	}
	memset(&q, 0, sizeof(q));
	snprintf(q.request_id, sizeof(q.request_id), "%s", r->request_id);
	snprintf(q.subject_type, sizeof(q.subject_type), "%s", r->subj_type);
	snprintf(q.subject_id, sizeof(q.subject_id), "%s", r->subj_id);
	if (msg_quota_req_encode(&q, &buf, &len) != 0)
		return gw_req_error(r, 500, "internal_error", NULL, NULL);
	return usage_call(
	    r, r->gw->rl_sock, r->gw->rl_open, buf, len, quota_done);
}

/* days: 1..90 digits only; provider: "", claude or openai. */
static bool
analytics_params(const char *days, const char *provider, int64_t *ret_days)
{
	int64_t d = 0;

	if (days == NULL) {
		d = 7;
	} else {
		if (days[0] == '\0' || strlen(days) > 2)
			return false;
		for (const char *p = days; *p != '\0'; p++) {
			if (*p < '0' || *p > '9')
				return false;
			d = d * 10 + (*p - '0');
		}
	}
	if (d < 1 || d > 90)
		return false;
	if (provider != NULL && provider[0] != '\0' &&
	    strcmp(provider, "claude") != 0 && strcmp(provider, "openai") != 0)
		return false;
	*ret_days = d;
	return true;
}

enum MHD_Result
gw_usage_analytics(struct gw_req *r, bool admin)
{
	struct msg_analytics_req a;
	const char *days, *provider;
	char *buf = NULL;
	size_t len;

	if (r->token_bad && !admin) {
		gw_limit_threat(
		    r, "auth_failure", SUBJECT_THREAT_AUTH_FAILURE, false);
		r->www_auth = true;
		return gw_req_error(r, 401, "invalid_token",
		    "the bearer token is invalid or expired", NULL);
	}
	days =
	    MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "days");
	provider = MHD_lookup_connection_value(
	    r->conn, MHD_GET_ARGUMENT_KIND, "provider");
	memset(&a, 0, sizeof(a));
	if (!analytics_params(days, provider, &a.days))
		return gw_req_error(r, 400, "invalid_parameter",
		    "days must be 1..90 and provider claude or openai", NULL);
	snprintf(a.request_id, sizeof(a.request_id), "%s", r->request_id);
	if (!admin) {
		snprintf(
		    a.subject_type, sizeof(a.subject_type), "%s", r->subj_type);
		snprintf(a.subject_id, sizeof(a.subject_id), "%s", r->subj_id);
	}
	snprintf(a.provider, sizeof(a.provider), "%s",
	    provider != NULL ? provider : "");
	if (msg_analytics_req_encode(&a, &buf, &len) != 0)
		return gw_req_error(r, 500, "internal_error", NULL, NULL);
	return usage_call(
	    r, r->gw->acct_sock, r->gw->acct_open, buf, len, analytics_done);
}
