/*
 * GET /health/detailed: asks the ratelimiter for its status (status_req:
 * "degraded" while it runs on its in-process fallback because Redis is
 * down or slow), pings the accountant and one worker through the pool,
 * all at once, each bounded by 500 ms; the connection stays suspended
 * meanwhile.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "clock.h"
#include "gw.h"
#include "log.h"
#include "proto.h"

enum { PROBE_RL, PROBE_ACCT, PROBE_WORKERS, PROBE_MAX };

static const char *const probe_names[PROBE_MAX] = {
    "ratelimiter", "accountant", "workers"};

struct probe_arg {
	struct gw_req *r;
	int i;
};

static const char *
probe_status(const struct gw_req *r, int i, int pipes)
{
	if (i == PROBE_WORKERS) {
		if (pipes <= 0)
			return "down";
		return r->probes[i].rv == 0 ? "up" : "degraded";
	}
	if (r->probes[i].rv != 0)
		return "down";
	return strcmp(r->probes[i].state, "degraded") == 0 ? "degraded" : "up";
}

/* All probes are in: the body, then wake the connection.  Under r->mtx. */
static void
health_finish_locked(struct gw_req *r)
{
	int pipes = atomic_load(&r->gw->worker_pipes);
	const char *overall = "up";
	int rv = 0;

	for (int i = 0; i < PROBE_MAX; i++) {
		const char *s = probe_status(r, i, pipes);

		if (i == PROBE_WORKERS && strcmp(s, "down") == 0)
			overall = "down";
		else if (strcmp(s, "up") != 0 && strcmp(overall, "up") == 0)
			overall = "degraded";
	}
	buf_reset(&r->out);
	rv |=
	    buf_printf(&r->out, "{\"status\":\"%s\",\"components\":{", overall);
	for (int i = 0; i < PROBE_MAX; i++) {
		rv |= buf_printf(&r->out,
		    "%s\"%s\":{\"status\":\"%s\",\"latency_ms\":%lld",
		    i ? "," : "", probe_names[i], probe_status(r, i, pipes),
		    (long long)r->probes[i].ms);
		if (i == PROBE_WORKERS)
			rv |= buf_printf(&r->out, ",\"connected\":%d",
			    pipes > 0 ? pipes : 0);
		/* backend and redis are words from a closed set
		 * (status_fields): printed as they are. */
		if (r->probes[i].backend[0] != '\0')
			rv |= buf_printf(&r->out, ",\"backend\":\"%s\"",
			    r->probes[i].backend);
		if (r->probes[i].redis[0] != '\0')
			rv |= buf_printf(
			    &r->out, ",\"redis\":\"%s\"", r->probes[i].redis);
		rv |= buf_append_str(&r->out, "}");
	}
	rv |= buf_append_str(&r->out, "},\"request_id\":");
	rv |=
	    buf_append_json_str(&r->out, r->request_id, strlen(r->request_id));
	rv |= buf_append_str(&r->out, "}");
	if (rv != 0) {
		gw_req_set_error_locked(r, 500, "internal_error", NULL);
		return;
	}
	r->status = strcmp(overall, "down") == 0 ? 503 : 200;
	r->ctype = "application/json";
	r->state = GW_RS_READY;
	gw_req_wake_locked(r);
}

static void
probe_record(struct gw_req *r, int i, int rv)
{
	pthread_mutex_lock(&r->mtx);
	r->probes[i].rv = rv;
	if (rv != 0)
		r->probes[i].state[0] = '\0';
	r->probes[i].ms = (clock_mono_us() - r->probes[i].start_us) / 1000;
	if (--r->probes_left == 0 && !r->closed)
		health_finish_locked(r);
	pthread_mutex_unlock(&r->mtx);
}

/* Copies the string member key of doc into out when it is one of the
 * allowed words (the body prints it verbatim). */
static void
status_word(json_t *doc, const char *key, const char *const *allowed, char *out,
    size_t outlen)
{
	const char *v = json_string_value(json_object_get(doc, key));

	for (size_t i = 0; v != NULL && allowed[i] != NULL; i++)
		if (strcmp(v, allowed[i]) == 0)
			snprintf(out, outlen, "%s", v);
}

/* The ratelimiter's status_resp into probe i (its state and what its
 * JSON says about the backend).  0 or -EPROTO. */
static int
status_fields(struct gw_req *r, int i, const char *buf, size_t len)
{
	static const char *const backends[] = {"redis", "memory", NULL};
	static const char *const redis[] = {"up", "down", "disabled", NULL};
	struct msg_status_resp m;
	struct gw_probe p;
	json_t *doc;

	if (msg_status_resp_decode(buf, len, &m) != 0)
		return -EPROTO;
	memset(&p, 0, sizeof(p));
	snprintf(p.state, sizeof(p.state), "%s", m.state);
	if (m.payload_len > 0 &&
	    (doc = json_loadb(m.payload, m.payload_len, 0, NULL)) != NULL) {
		status_word(
		    doc, "backend", backends, p.backend, sizeof(p.backend));
		status_word(doc, "redis", redis, p.redis, sizeof(p.redis));
		json_decref(doc);
	}
	pthread_mutex_lock(&r->mtx);
	memcpy(r->probes[i].state, p.state, sizeof(p.state));
	memcpy(r->probes[i].backend, p.backend, sizeof(p.backend));
	memcpy(r->probes[i].redis, p.redis, sizeof(p.redis));
	pthread_mutex_unlock(&r->mtx);
	return 0;
}

static void
probe_done(void *arg, int err, bool sent, const char *buf, size_t len)
{
	struct probe_arg *pa = arg;
	struct gw_req *r = pa->r;
	struct msg_pong pong;
	int rv = err;

	(void)sent;
	if (rv == 0 && pa->i == PROBE_RL)
		rv = status_fields(r, pa->i, buf, len);
	else if (rv == 0 && msg_pong_decode(buf, len, &pong) != 0)
		rv = -EPROTO;
	if (rv != 0)
		log_info(r->request_id, "health probe failed",
		    LF_S("component", probe_names[pa->i]), LF_I("error", rv));
	probe_record(r, pa->i, rv);
	free(pa);
	gw_req_unref(r);
}

enum MHD_Result
gw_health_detailed(struct gw_req *r)
{
	struct gw *gw = r->gw;
	nng_socket socks[PROBE_MAX];
	bool open[PROBE_MAX];
	struct msg_ping ping;
	struct msg_status_req sr;
	char *buf = NULL, *sbuf = NULL;
	size_t len = 0, slen = 0;
	int rv;

	socks[PROBE_RL] = gw->rl_sock;
	socks[PROBE_ACCT] = gw->acct_sock;
	socks[PROBE_WORKERS] = gw->worker_sock;
	open[PROBE_RL] = gw->rl_open;
	open[PROBE_ACCT] = gw->acct_open;
	open[PROBE_WORKERS] =
	    gw->worker_open && atomic_load(&gw->worker_pipes) > 0;
	memset(&ping, 0, sizeof(ping));
	snprintf(ping.request_id, sizeof(ping.request_id), "%s", r->request_id);
	ping.ts_us = clock_real_us();
	memset(&sr, 0, sizeof(sr));
	snprintf(sr.request_id, sizeof(sr.request_id), "%s", r->request_id);
	snprintf(sr.what, sizeof(sr.what), "health");
	if ((rv = msg_ping_encode(&ping, &buf, &len)) != 0 ||
	    (rv = msg_status_req_encode(&sr, &sbuf, &slen)) != 0) {
		free(buf);
		return gw_req_error(r, 500, "internal_error", NULL, NULL);
	}
	r->probes_left = PROBE_MAX;
	for (int i = 0; i < PROBE_MAX; i++) {
		r->probes[i].start_us = clock_mono_us();
		r->probes[i].rv = -ENOTCONN;
		r->probes[i].state[0] = '\0';
		r->probes[i].backend[0] = '\0';
		r->probes[i].redis[0] = '\0';
	}
	gw_req_wait(r);
	for (int i = 0; i < PROBE_MAX; i++) {
		struct probe_arg *pa;

		rv = -ENOTCONN;
		if (open[i] && (pa = malloc(sizeof(*pa))) != NULL) {
			pa->r = r;
			pa->i = i;
			gw_req_ref(r);
			/* The ratelimiter tells its own state. */
			rv = gw_call(gw, socks[i], i == PROBE_RL ? sbuf : buf,
			    i == PROBE_RL ? slen : len, GW_HEALTH_TIMEOUT_MS,
			    probe_done, pa);
			if (rv == 0)
				continue;
			free(pa);
			gw_req_unref(r);
		}
		probe_record(r, i, rv);
	}
	free(buf);
	free(sbuf);
	return MHD_YES;
}
