/*
 * The providers' health as the worker pool sees it: the latest
 * worker_stats of each worker (pushed once a second to the pull socket),
 * aggregated for GET /api/v1/ai-proxy/providers/status, and the relay of
 * breaker_state from one worker to all of them (control pub socket).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "clock.h"
#include "gw.h"
#include "log.h"
#include "proto.h"

#define GW_WSTATS_MAX      256  /* workers remembered */
#define GW_WSTATS_STALE_MS 5000 /* a worker silent this long is gone */
#define GW_LAT_BUCKETS     16

/* Upper bounds (ms) of the workers' latency buckets (proto.h). */
static const double lat_bounds[GW_LAT_BUCKETS - 1] = {5, 10, 25, 50, 100, 250,
    500, 1000, 2000, 4000, 8000, 15000, 30000, 60000, 120000};

struct gw_wstats {
	char worker_id[PROTO_NAME_MAX + 1];
	int64_t recv_ms; /* monotonic */
	json_t *doc;     /* the payload */
};

/* The last "open" relayed per provider and target, re-published to a
 * worker that reports that breaker closed (it joined after the trip). */
#define GW_BRK_MSG_MAX 1024
struct gw_open {
	bool set;
	char worker_id[PROTO_NAME_MAX + 1];
	int64_t until_ms;    /* wall clock */
	int64_t last_pub_ms; /* monotonic */
	size_t len;
	char msg[GW_BRK_MSG_MAX];
};

static const char *const prov_names[] = {"claude", "openai"};
static const char *const target_names[] = {"primary", "fallback"};
#define GW_NPROV   2
#define GW_NTARGET 2

struct gw_providers {
	pthread_mutex_t mtx;
	struct gw_wstats w[GW_WSTATS_MAX];
	struct gw_open open[GW_NPROV][GW_NTARGET];
};

static int
name_index(const char *const *names, int n, const char *s)
{
	for (int i = 0; i < n; i++)
		if (strcmp(names[i], s) == 0)
			return i;
	return -1;
}

/* Under p->mtx: re-publishes the trips a worker's stats do not show
 * (at most once a second each). */
static void
republish_locked(struct gw *gw, const char *worker_id, const json_t *doc)
{
	struct gw_providers *p = gw->providers;
	int64_t now = clock_mono_ms(), real = clock_real_ms();

	for (int i = 0; i < GW_NPROV; i++) {
		const json_t *t = json_object_get(
		    json_object_get(doc, "providers"), prov_names[i]);

		for (int k = 0; k < GW_NTARGET; k++) {
			struct gw_open *o = &p->open[i][k];
			const json_t *x =
			    k == 0 ? t : json_object_get(t, "fallback");
			const char *st =
			    json_string_value(json_object_get(x, "state"));

			if (!o->set || o->until_ms <= real + 1000 ||
			    now - o->last_pub_ms < 1000 || st == NULL ||
			    strcmp(st, "closed") != 0 ||
			    strcmp(o->worker_id, worker_id) == 0)
				continue;
			o->last_pub_ms = now;
			log_info(NULL, "breaker state re-published",
			    LF_S("to_worker", worker_id),
			    LF_S("provider", prov_names[i]),
			    LF_S("target", target_names[k]));
			gw_publish(gw, o->msg, o->len);
		}
	}
}

void
gw_providers_on_reset(struct gw *gw, const char *provider)
{
	struct gw_providers *p = gw->providers;
	int i = name_index(prov_names, GW_NPROV, provider);

	if (i < 0)
		return;
	pthread_mutex_lock(&p->mtx);
	for (int k = 0; k < GW_NTARGET; k++)
		p->open[i][k].set = false;
	pthread_mutex_unlock(&p->mtx);
}

int
gw_providers_init(struct gw *gw)
{
	struct gw_providers *p;

	if ((p = calloc(1, sizeof(*p))) == NULL)
		return -ENOMEM;
	pthread_mutex_init(&p->mtx, NULL);
	gw->providers = p;
	return 0;
}

void
gw_providers_free(struct gw *gw)
{
	struct gw_providers *p = gw->providers;

	if (p == NULL)
		return;
	for (int i = 0; i < GW_WSTATS_MAX; i++)
		json_decref(p->w[i].doc);
	pthread_mutex_destroy(&p->mtx);
	free(p);
	gw->providers = NULL;
}

void
gw_providers_on_stats(struct gw *gw, const char *buf, size_t len)
{
	struct gw_providers *p = gw->providers;
	struct msg_worker_stats m;
	struct gw_wstats *slot = NULL;
	json_t *doc;
	int rv;

	if ((rv = msg_worker_stats_decode(buf, len, &m)) != 0) {
		log_warn(NULL, "bad worker_stats dropped", LF_I("error", rv));
		return;
	}
	doc = json_loadb(m.payload, m.payload_len, 0, NULL);
	if (!json_is_object(json_object_get(doc, "providers"))) {
		json_decref(doc);
		log_warn(NULL, "worker_stats without providers",
		    LF_S("worker_id", m.worker_id));
		return;
	}
	pthread_mutex_lock(&p->mtx);
	for (int i = 0; i < GW_WSTATS_MAX; i++) {
		struct gw_wstats *w = &p->w[i];

		if (w->doc != NULL && strcmp(w->worker_id, m.worker_id) == 0) {
			slot = w;
			break;
		}
		if (slot == NULL ||
		    (slot->doc != NULL &&
			(w->doc == NULL || w->recv_ms < slot->recv_ms)))
			slot = w;
	}
	json_decref(slot->doc);
	snprintf(slot->worker_id, sizeof(slot->worker_id), "%s", m.worker_id);
	slot->recv_ms = clock_mono_ms();
	slot->doc = doc;
	republish_locked(gw, m.worker_id, doc);
	pthread_mutex_unlock(&p->mtx);
}

void
gw_providers_on_breaker(struct gw *gw, const char *buf, size_t len)
{
	struct gw_providers *p = gw->providers;
	struct msg_breaker_state m;
	struct gw_open *o;
	int rv, i, k;

	if ((rv = msg_breaker_state_decode(buf, len, &m)) != 0) {
		log_warn(NULL, "bad breaker_state dropped", LF_I("error", rv));
		return;
	}
	i = name_index(prov_names, GW_NPROV, m.provider);
	k = name_index(target_names, GW_NTARGET, m.target);
	if (i >= 0 && k >= 0) {
		pthread_mutex_lock(&p->mtx);
		o = &p->open[i][k];
		if (strcmp(m.state, "open") == 0 && len <= sizeof(o->msg)) {
			o->set = true;
			snprintf(o->worker_id, sizeof(o->worker_id), "%s",
			    m.worker_id);
			o->until_ms = m.open_until_ms;
			o->last_pub_ms = clock_mono_ms();
			memcpy(o->msg, buf, len);
			o->len = len;
		} else if (strcmp(m.state, "closed") == 0 && o->set &&
			   strcmp(o->worker_id, m.worker_id) == 0) {
			o->set = false;
		}
		pthread_mutex_unlock(&p->mtx);
	}
	log_info(NULL, "breaker state relayed", LF_S("worker_id", m.worker_id),
	    LF_S("provider", m.provider), LF_S("target", m.target),
	    LF_S("state", m.state), LF_I("open_until_ms", m.open_until_ms),
	    LF_S("reason", m.reason));
	if ((rv = gw_publish(gw, buf, len)) != 0)
		log_warn(NULL, "breaker state not relayed", LF_I("error", rv));
}

/* ---- aggregation ---- */

struct agg {
	int workers, open, half_open;
	int64_t open_until_ms;
	int64_t consecutive; /* the largest of the workers' */
	int64_t total, failures, requests, in_flight;
	int64_t last_success_ms;
	const json_t *last_error; /* borrowed, the latest */
	int64_t last_error_ms;
	int64_t lat[GW_LAT_BUCKETS];
};

static int64_t
geti(const json_t *o, const char *k)
{
	const json_t *v = json_object_get(o, k);

	return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

static void
agg_add(struct agg *a, const json_t *t)
{
	const char *st = json_string_value(json_object_get(t, "state"));
	const json_t *err = json_object_get(t, "last_error"), *lat;
	size_t i;
	json_t *v;

	if (!json_is_object(t))
		return;
	a->workers++;
	if (st != NULL && strcmp(st, "open") == 0) {
		a->open++;
		if (geti(t, "open_until_ms") > a->open_until_ms)
			a->open_until_ms = geti(t, "open_until_ms");
	} else if (st != NULL && strcmp(st, "half_open") == 0) {
		a->half_open++;
	}
	if (geti(t, "consecutive_failures") > a->consecutive)
		a->consecutive = geti(t, "consecutive_failures");
	a->total += geti(t, "window_total");
	a->failures += geti(t, "window_failures");
	a->requests += geti(t, "requests_last_minute");
	a->in_flight += geti(t, "in_flight");
	if (geti(t, "last_success_ms") > a->last_success_ms)
		a->last_success_ms = geti(t, "last_success_ms");
	if (json_is_object(err) && geti(err, "at_ms") > a->last_error_ms) {
		a->last_error_ms = geti(err, "at_ms");
		a->last_error = err;
	}
	lat = json_object_get(t, "latency_buckets");
	json_array_foreach(lat, i, v) {
		if (i < GW_LAT_BUCKETS && json_is_integer(v))
			a->lat[i] += (int64_t)json_integer_value(v);
	}
}

/* The p-quantile (0..1) of the merged histogram, interpolated inside
 * its bucket; -1 without samples. */
static double
agg_quantile(const struct agg *a, double q)
{
	int64_t n = 0, seen = 0;
	double rank;

	for (int i = 0; i < GW_LAT_BUCKETS; i++)
		n += a->lat[i];
	if (n == 0)
		return -1;
	rank = q * (double)n;
	for (int i = 0; i < GW_LAT_BUCKETS; i++) {
		double lo = i == 0 ? 0 : lat_bounds[i - 1];
		double hi =
		    i < GW_LAT_BUCKETS - 1 ? lat_bounds[i] : lat_bounds[i - 1];

		if (a->lat[i] > 0 && (double)(seen + a->lat[i]) >= rank) {
			double f = (rank - (double)seen) / (double)a->lat[i];

			return round(lo + (hi - lo) * (f < 0 ? 0 : f));
		}
		seen += a->lat[i];
	}
	return lat_bounds[GW_LAT_BUCKETS - 2];
}

static json_t *
time_json(int64_t ms)
{
	char iso[32];

	if (ms <= 0)
		return json_null();
	clock_fmt_iso8601(ms, iso, sizeof(iso));
	return json_string(iso);
}

static json_t *
agg_json(const struct agg *a, int64_t now_ms)
{
	const char *state = a->workers == 0    ? "unknown"
			    : a->open > 0      ? "open"
			    : a->half_open > 0 ? "half_open"
					       : "closed";
	double p50 = agg_quantile(a, 0.50), p95 = agg_quantile(a, 0.95);
	json_t *o, *err = json_null();
	int64_t retry = 0;

	if (a->open > 0 && a->open_until_ms > now_ms)
		retry = (a->open_until_ms - now_ms + 999) / 1000;
	if (a->last_error != NULL)
		err = json_pack("{s:O?, s:O?, s:O?, s:I, s:o}", "code",
		    json_object_get(a->last_error, "code"), "message",
		    json_object_get(a->last_error, "message"), "status",
		    json_object_get(a->last_error, "status"), "at_ms",
		    (json_int_t)a->last_error_ms, "at",
		    time_json(a->last_error_ms));
	o = json_pack("{s:s, s:i, s:i, s:I, s:I, s:I, s:I, s:f, s:o, s:I, "
		      "s:o, s:{s:o, s:o}, s:I, s:I}",
	    "state", state, "workers", a->workers, "open_workers", a->open,
	    "retry_after_s", (json_int_t)retry, "consecutive_failures",
	    (json_int_t)a->consecutive, "window_attempts", (json_int_t)a->total,
	    "window_failures", (json_int_t)a->failures, "failure_rate",
	    a->total > 0 ? (double)a->failures / (double)a->total : 0.0,
	    "last_error", err, "last_success_ms",
	    (json_int_t)a->last_success_ms, "last_success",
	    time_json(a->last_success_ms), "latency_ms", "p50",
	    p50 < 0 ? json_null() : json_integer((json_int_t)p50), "p95",
	    p95 < 0 ? json_null() : json_integer((json_int_t)p95), "in_flight",
	    (json_int_t)a->in_flight, "requests_per_minute",
	    (json_int_t)a->requests);
	return o;
}

/* The status document: {"providers":{...}}.  Caller decrefs. */
static json_t *
status_doc(struct gw *gw)
{
	static const char *const names[] = {"claude", "openai"};
	struct gw_providers *p = gw->providers;
	int64_t now = clock_mono_ms(), real = clock_real_ms();
	json_t *provs = json_object(), *doc;

	pthread_mutex_lock(&p->mtx);
	for (size_t n = 0; n < sizeof(names) / sizeof(names[0]); n++) {
		struct agg prim, fb;
		json_t *o;

		memset(&prim, 0, sizeof(prim));
		memset(&fb, 0, sizeof(fb));
		for (int i = 0; i < GW_WSTATS_MAX; i++) {
			struct gw_wstats *w = &p->w[i];
			json_t *t;

			if (w->doc == NULL)
				continue;
			if (now - w->recv_ms > GW_WSTATS_STALE_MS) {
				json_decref(w->doc);
				w->doc = NULL;
				continue;
			}
			t = json_object_get(
			    json_object_get(w->doc, "providers"), names[n]);
			agg_add(&prim, t);
			agg_add(&fb, json_object_get(t, "fallback"));
		}
		o = agg_json(&prim, real);
		if (o == NULL)
			continue;
		json_object_set_new(o, "fallback",
		    fb.workers > 0 ? agg_json(&fb, real) : json_null());
		json_object_set_new(provs, names[n], o);
	}
	pthread_mutex_unlock(&p->mtx);
	doc = json_pack("{s:o}", "providers", provs);
	return doc;
}

enum MHD_Result
gw_providers_status(struct gw_req *r)
{
	json_t *doc = status_doc(r->gw);
	char *data;
	int rv = 0;

	r->provider = "";
	if (doc == NULL ||
	    (data = json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(6))) ==
		NULL) {
		json_decref(doc);
		return gw_req_error(r, 500, "internal_error", NULL, NULL);
	}
	json_decref(doc);
	buf_reset(&r->out);
	rv |= buf_append_str(&r->out, "{\"success\":true,\"data\":");
	rv |= buf_append_str(&r->out, data);
	rv |= buf_printf(&r->out,
	    ",\"error\":null,\"message\":null,\"cached\":false,\"cost\":0,"
	    "\"response_time_ms\":%lld,\"request_id\":",
	    (long long)gw_req_elapsed_ms(r));
	rv |=
	    buf_append_json_str(&r->out, r->request_id, strlen(r->request_id));
	rv |= buf_append_str(&r->out, "}");
	free(data);
	if (rv != 0)
		return gw_req_error(r, 500, "internal_error", NULL, NULL);
	return gw_req_json(r, 200);
}
