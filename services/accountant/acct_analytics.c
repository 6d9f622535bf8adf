/*
 * Analytics requests and documents; see acct_analytics.h.
 */
#include "acct_analytics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "clock.h"

#define DAY_MS 86400000LL

int
acct_analytics_query(const struct msg_analytics_req *req, int64_t now_ms,
    struct acct_query *ret, char *err, size_t errlen)
{
	if (req->days < 1 || req->days > PROTO_DAYS_MAX) {
		snprintf(err, errlen, "days must be 1..%d", PROTO_DAYS_MAX);
		return -EINVAL;
	}
	if (req->provider[0] != '\0' && strcmp(req->provider, "claude") != 0 &&
	    strcmp(req->provider, "openai") != 0) {
		snprintf(err, errlen, "provider must be claude or openai");
		return -EINVAL;
	}
	if ((req->subject_type[0] == '\0') != (req->subject_id[0] == '\0')) {
		snprintf(
		    err, errlen, "a subject needs both its type and its id");
		return -EINVAL;
	}
	memset(ret, 0, sizeof(*ret));
	snprintf(ret->subject_type, sizeof(ret->subject_type), "%s",
	    req->subject_type);
	snprintf(
	    ret->subject_id, sizeof(ret->subject_id), "%s", req->subject_id);
	snprintf(ret->provider, sizeof(ret->provider), "%s", req->provider);
	clock_fmt_day(
	    now_ms - (req->days - 1) * DAY_MS, ret->from, sizeof(ret->from));
	clock_fmt_day(now_ms, ret->to, sizeof(ret->to));
	return 0;
}

static double
ratio(int64_t a, int64_t b)
{
	return b > 0 ? (double)a / (double)b : 0.0;
}

/* The counters of d as a JSON object, after "day" when day is given. */
static json_t *
day_json(const struct acct_day *d, const char *day)
{
	json_t *o = json_object();
	json_t *c = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, "
			      "s:f, s:f, s:I, s:I}",
	    "requests", (json_int_t)d->requests, "errors",
	    (json_int_t)d->errors, "cached", (json_int_t)d->cached,
	    "input_tokens", (json_int_t)d->input_tokens, "output_tokens",
	    (json_int_t)d->output_tokens, "cache_read_tokens",
	    (json_int_t)d->cache_read_tokens, "cache_write_tokens",
	    (json_int_t)d->cache_write_tokens, "cost_micro_usd",
	    (json_int_t)d->cost_micro_usd, "cost_usd",
	    (double)d->cost_micro_usd / 1e6, "cache_hit_ratio",
	    ratio(d->cached, d->requests), "error_rate",
	    ratio(d->errors, d->requests), "p50_latency_ms",
	    (json_int_t)d->p50_ms, "p95_latency_ms", (json_int_t)d->p95_ms);

	if (o == NULL || c == NULL ||
	    (day != NULL &&
		json_object_set_new(o, "day", json_string(day)) != 0) ||
	    json_object_update(o, c) != 0) {
		json_decref(o);
		o = NULL;
	}
	json_decref(c);
	return o;
}

static int
set_new(json_t *o, const char *key, json_t *v)
{
	return v != NULL && json_object_set_new(o, key, v) == 0 ? 0 : -ENOMEM;
}

int
acct_analytics_json(const struct msg_analytics_req *req,
    const struct acct_query *q, const struct acct_report *r, int64_t now_ms,
    char **ret, size_t *ret_len)
{
	static const struct acct_day zero;
	char day[ACCT_DAY_LEN + 1];
	const struct acct_day *d;
	json_t *doc, *series, *subject;
	size_t k = 0;
	char *out;
	int rv;

	if ((doc = json_object()) == NULL)
		return -ENOMEM;
	subject = q->subject_type[0] != '\0'
		      ? json_pack("{s:s, s:s}", "type", q->subject_type, "id",
			    q->subject_id)
		      : json_null();
	rv = set_new(doc, "days", json_integer(req->days));
	if (rv == 0)
		rv = set_new(doc, "from", json_string(q->from));
	if (rv == 0)
		rv = set_new(doc, "to", json_string(q->to));
	if (rv == 0)
		rv = set_new(doc, "provider",
		    q->provider[0] != '\0' ? json_string(q->provider)
					   : json_null());
	if (rv == 0)
		rv = set_new(doc, "subject", subject);
	else
		json_decref(subject);
	if (rv == 0)
		rv = set_new(doc, "totals", day_json(&r->totals, NULL));
	if (rv == 0)
		rv = set_new(doc, "series", json_array());
	series = json_object_get(doc, "series");
	for (int64_t i = req->days - 1; rv == 0 && i >= 0; i--) {
		clock_fmt_day(now_ms - i * DAY_MS, day, sizeof(day));
		while (k < r->ndays && strcmp(r->days[k].day, day) < 0)
			k++;
		d = k < r->ndays && strcmp(r->days[k].day, day) == 0
			? &r->days[k]
			: &zero;
		if (json_array_append_new(series, day_json(d, day)) != 0)
			rv = -ENOMEM;
	}
	if (rv == 0) {
		out = json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(17));
		if (out == NULL) {
			rv = -ENOMEM;
		} else {
			*ret = out;
			*ret_len = strlen(out);
		}
	}
	json_decref(doc);
	return rv;
}

int
acct_analytics_error(
    const char *code, const char *message, char **ret, size_t *ret_len)
{
	json_t *doc =
	    json_pack("{s:s, s:s}", "error", code, "message", message);
	char *out;

	if (doc == NULL)
		return -ENOMEM;
	out = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	if (out == NULL)
		return -ENOMEM;
	*ret = out;
	*ret_len = strlen(out);
	return 0;
}
