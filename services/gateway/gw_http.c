/*
 * libmicrohttpd glue: request state, routing, the responses and their
 * headers, suspend/resume, completion and the access log.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "clock.h"
#include "gw.h"
#include "gw_resp.h"
#include "log.h"
#include "proto.h"
#include "subject.h"

#define GW_BODY_DISCARD_FACTOR 4 /* past max x this, close the connection */

/* ---- request objects ---- */

static struct gw_req *
req_new(struct gw *gw, struct MHD_Connection *conn)
{
	struct gw_req *r;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	r->gw = gw;
	r->conn = conn;
	pthread_mutex_init(&r->mtx, NULL);
	atomic_store(&r->refs, 1); /* MHD's */
	r->state = GW_RS_READING;
	r->start_us = clock_mono_us();
	buf_init(&r->body, (size_t)gw->cfg->max_body_bytes);
	buf_init(&r->out, GW_RESP_MAX);
	buf_init(&r->tail, 64 * 1024);
	r->ctype = "application/json";
	r->provider = "";
	pthread_mutex_lock(&gw->mtx);
	r->next = gw->live;
	if (gw->live != NULL)
		gw->live->prev = r;
	gw->live = r;
	gw->nlive++;
	pthread_mutex_unlock(&gw->mtx);
	return r;
}

void
gw_req_ref(struct gw_req *r)
{
	atomic_fetch_add(&r->refs, 1);
}

void
gw_req_unref(struct gw_req *r)
{
	struct gw_chunk *c;

	if (r == NULL || atomic_fetch_sub(&r->refs, 1) != 1)
		return;
	while ((c = r->chunks) != NULL) {
		r->chunks = c->next;
		free(c);
	}
	buf_free(&r->body);
	buf_free(&r->out);
	buf_free(&r->tail);
	pthread_mutex_destroy(&r->mtx);
	free(r);
}

int64_t
gw_req_elapsed_ms(const struct gw_req *r)
{
	return (clock_mono_us() - r->start_us) / 1000;
}

void
gw_req_wake_locked(struct gw_req *r)
{
	if (r->suspended && !r->closed) {
		r->suspended = false;
		MHD_resume_connection(r->conn);
	}
}

static void
req_suspend_locked(struct gw_req *r)
{
	if (!r->suspended) {
		r->suspended = true;
		MHD_suspend_connection(r->conn);
	}
}

void
gw_req_set_error_locked(
    struct gw_req *r, int status, const char *code, const char *message)
{
	enum gw_shape shape = r->route != NULL
				  ? r->route->shape
				  : gw_route_shape_for_path(r->path);

	buf_reset(&r->out);
	r->status = status;
	r->ctype = "application/json";
	snprintf(r->code, sizeof(r->code), "%s", code);
	if (gw_fmt_error(&r->out, shape, status, code, message, NULL,
		r->request_id, gw_req_elapsed_ms(r)) != 0) {
		buf_reset(&r->out);
		buf_append_str(&r->out, "{}");
	}
	r->state = GW_RS_READY;
}

/* ---- responses ---- */

static void
add_hdr(struct MHD_Response *resp, const char *name, const char *value)
{
	MHD_add_response_header(resp, name, value);
}

/* The headers every response carries, and the ones r asked for. */
static void
add_common_headers(struct gw_req *r, struct MHD_Response *resp)
{
	char num[32];

	add_hdr(resp, "X-Content-Type-Options", "nosniff");
	add_hdr(resp, "X-Frame-Options", "DENY");
	add_hdr(resp, "X-XSS-Protection", "1; mode=block");
	add_hdr(resp, "Cache-Control", "no-cache, no-store, must-revalidate");
	add_hdr(resp, "X-Request-ID", r->request_id);
	if (r->ctype != NULL)
		add_hdr(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->ctype);
	if (r->cors == GW_CORS_ALLOW) {
		add_hdr(resp, "Access-Control-Allow-Origin", r->origin);
		add_hdr(resp, "Vary", "Origin");
		add_hdr(resp, "Access-Control-Allow-Credentials", "true");
		add_hdr(resp, "Access-Control-Expose-Headers",
		    GW_CORS_EXPOSE_HEADERS);
	} else if (r->cors == GW_CORS_ALLOW_ANY) {
		add_hdr(resp, "Access-Control-Allow-Origin", "*");
		add_hdr(resp, "Access-Control-Expose-Headers",
		    GW_CORS_EXPOSE_HEADERS);
	}
	if (r->allow[0] != '\0')
		add_hdr(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
	if (r->retry_after_ms > 0) {
		snprintf(num, sizeof(num), "%lld",
		    (long long)((r->retry_after_ms + 999) / 1000));
		add_hdr(resp, "Retry-After", num);
		snprintf(
		    num, sizeof(num), "%lld", (long long)r->retry_after_ms);
		add_hdr(resp, "retry-after-ms", num);
	}
	if (r->rl_hdrs) {
		snprintf(num, sizeof(num), "%lld", (long long)r->rl_limit);
		add_hdr(resp, "X-RateLimit-Limit", num);
		snprintf(num, sizeof(num), "%lld", (long long)r->rl_remaining);
		add_hdr(resp, "X-RateLimit-Remaining", num);
		snprintf(num, sizeof(num), "%lld", (long long)r->rl_reset);
		add_hdr(resp, "X-RateLimit-Reset", num);
	}
	if (r->no_retry)
		add_hdr(resp, "x-should-retry", "false");
	if (r->route != NULL && r->route->chat && r->model[0] != '\0' &&
	    r->provider[0] != '\0') {
		add_hdr(resp, "X-AI-Proxy-Provider", r->provider);
		add_hdr(resp, "X-AI-Proxy-Model", r->model);
		if (r->fallback)
			add_hdr(resp, "X-AI-Proxy-Fallback", "true");
	}
	if (r->www_auth)
		add_hdr(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
}

/* Queues r->out with r->status.  Called on an MHD thread. */
static enum MHD_Result
req_queue_buffer(struct gw_req *r)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(r->out.len,
	    r->out.data != NULL ? r->out.data : (char *)"",
	    MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return MHD_NO;
	add_common_headers(r, resp);
	r->bytes_out = r->out.len;
	r->state = GW_RS_QUEUED;
	ret = MHD_queue_response(r->conn, (unsigned)r->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result
req_queue_stream(struct gw_req *r)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	gw_req_ref(r); /* the response's, dropped by gw_stream_free */
	resp = MHD_create_response_from_callback(
	    MHD_SIZE_UNKNOWN, 32 * 1024, gw_stream_read, r, gw_stream_free);
	if (resp == NULL) {
		gw_req_unref(r);
		return MHD_NO;
	}
	r->status = 200;
	r->ctype = "text/event-stream";
	add_common_headers(r, resp);
	add_hdr(resp, "X-Accel-Buffering", "no");
	r->state = GW_RS_QUEUED;
	ret = MHD_queue_response(r->conn, 200, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* An error answered at once, from an MHD thread. */
enum MHD_Result
gw_req_error(struct gw_req *r, int status, const char *code,
    const char *message, const char *param)
{
	enum gw_shape shape = r->route != NULL
				  ? r->route->shape
				  : gw_route_shape_for_path(r->path);

	buf_reset(&r->out);
	r->status = status;
	r->ctype = "application/json";
	snprintf(r->code, sizeof(r->code), "%s", code);
	if (gw_fmt_error(&r->out, shape, status, code, message, param,
		r->request_id, gw_req_elapsed_ms(r)) != 0)
		return MHD_NO;
	return req_queue_buffer(r);
}

enum MHD_Result
gw_req_json(struct gw_req *r, int status)
{
	r->status = status;
	r->ctype = "application/json";
	return req_queue_buffer(r);
}

/* ---- helpers ---- */

static const char *
hdr(struct gw_req *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

static void
client_ip(struct MHD_Connection *conn, char *out, size_t outlen)
{
	const union MHD_ConnectionInfo *ci;
	const struct sockaddr *sa;

	snprintf(out, outlen, "unknown");
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci == NULL || (sa = ci->client_addr) == NULL)
		return;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET,
		    &((const struct sockaddr_in *)(const void *)sa)->sin_addr,
		    out, (socklen_t)outlen);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6,
		    &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
		    out, (socklen_t)outlen);
}

/*
 * Behind a trusted proxy (AI_PROXY_TRUSTED_PROXIES: addresses and CIDR
 * blocks), the client is the right-most X-Forwarded-For address that is
 * not itself a trusted proxy (common/subject.c).  Anyone else's
 * X-Forwarded-For is ignored.
 */
static void
forwarded_ip(struct gw_req *r)
{
	const char *list = r->gw->cfg->trusted_proxies;
	char ip[sizeof(r->ip)];

	if (list == NULL || list[0] == '\0')
		return;
	if (subject_client_ip(
		r->ip, hdr(r, "X-Forwarded-For"), list, ip, sizeof(ip)) == 0)
		memcpy(r->ip, ip, sizeof(r->ip));
}

/* Constant-time (for equal lengths) comparison of a bearer key. */
static bool
key_equal(const char *given, const char *want)
{
	size_t gl = strlen(given), wl = strlen(want);
	unsigned char diff = gl != wl;

	for (size_t i = 0; i < wl; i++)
		diff |= (unsigned char)(want[i] ^ (i < gl ? given[i] : 0));
	return diff == 0;
}

static bool
admin_ok(struct gw_req *r)
{
	const char *auth = hdr(r, MHD_HTTP_HEADER_AUTHORIZATION);

	if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
		return false;
	auth += 7;
	while (*auth == ' ')
		auth++;
	return key_equal(auth, r->gw->cfg->admin_key);
}

static bool
known_provider(const char *p)
{
	return strcmp(p, "claude") == 0 || strcmp(p, "openai") == 0;
}

/* ---- routes answered at once ---- */

static enum MHD_Result
route_options(struct gw_req *r)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char methods[64];

	gw_route_allow_str(r->route, methods, sizeof(methods));
	if (r->cors == GW_CORS_DENY)
		return gw_req_error(r, 403, "forbidden_origin", NULL, NULL);
	resp = MHD_create_response_from_buffer(
	    0, (char *)"", MHD_RESPMEM_PERSISTENT);
	if (resp == NULL)
		return MHD_NO;
	r->ctype = NULL;
	r->status = 204;
	if (r->cors == GW_CORS_NONE)
		snprintf(r->allow, sizeof(r->allow), "%s", methods);
	add_common_headers(r, resp);
	if (r->cors != GW_CORS_NONE) {
		char age[16];

		snprintf(age, sizeof(age), "%d", GW_CORS_MAX_AGE);
		add_hdr(resp, "Access-Control-Allow-Methods", methods);
		add_hdr(resp, "Access-Control-Allow-Headers",
		    GW_CORS_ALLOW_HEADERS);
		add_hdr(resp, "Access-Control-Max-Age", age);
	}
	r->state = GW_RS_QUEUED;
	ret = MHD_queue_response(r->conn, 204, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result
route_admin(struct gw_req *r)
{
	struct msg_breaker_reset br;
	struct msg_cache_clear cc;
	const char *provider;
	char *buf = NULL;
	size_t len = 0;
	int rv;

	memset(&br, 0, sizeof(br));
	memset(&cc, 0, sizeof(cc));
	if (r->route->id == GW_R_BREAKER_RESET) {
		provider = r->param;
		if (!known_provider(provider))
			return gw_req_error(
			    r, 404, "unknown_provider", NULL, NULL);
		snprintf(
		    br.request_id, sizeof(br.request_id), "%s", r->request_id);
		snprintf(br.provider, sizeof(br.provider), "%s", provider);
		gw_providers_on_reset(r->gw, provider);
		rv = msg_breaker_reset_encode(&br, &buf, &len);
	} else {
		provider = MHD_lookup_connection_value(
		    r->conn, MHD_GET_ARGUMENT_KIND, "provider");
		if (provider == NULL)
			provider = "";
		if (provider[0] != '\0' && !known_provider(provider))
			return gw_req_error(
			    r, 404, "unknown_provider", NULL, NULL);
		snprintf(
		    cc.request_id, sizeof(cc.request_id), "%s", r->request_id);
		snprintf(cc.provider, sizeof(cc.provider), "%s", provider);
		rv = msg_cache_clear_encode(&cc, &buf, &len);
	}
	if (rv == 0)
		rv = gw_publish(r->gw, buf, len);
	free(buf);
	if (rv != 0) {
		log_error(r->request_id, "control message not published",
		    LF_I("error", rv));
		return gw_req_error(r, 503, "control_unavailable",
		    "the control channel is unavailable", NULL);
	}
	log_info(r->request_id,
	    r->route->id == GW_R_BREAKER_RESET ? "breaker reset published"
					       : "cache clear published",
	    LF_S("provider", provider[0] != '\0' ? provider : "all"));
	buf_reset(&r->out);
	r->provider = "";
	rv = buf_append_str(&r->out, "{\"success\":true,\"data\":{\"action\":");
	rv |= buf_append_str(&r->out, r->route->id == GW_R_BREAKER_RESET
					  ? "\"circuit_breaker_reset\""
					  : "\"cache_clear\"");
	rv |= buf_append_str(&r->out, ",\"provider\":");
	rv |=
	    buf_append_json_str(&r->out, provider[0] != '\0' ? provider : "all",
		strlen(provider[0] != '\0' ? provider : "all"));
	rv |= buf_printf(&r->out,
	    "},\"error\":null,\"message\":null,\"cached\":false,\"cost\":0,"
	    "\"response_time_ms\":%lld,\"request_id\":",
	    (long long)gw_req_elapsed_ms(r));
	rv |=
	    buf_append_json_str(&r->out, r->request_id, strlen(r->request_id));
	rv |= buf_append_str(&r->out, "}");
	if (rv != 0)
		return MHD_NO;
	return gw_req_json(r, 200);
}

static enum MHD_Result
route_models(struct gw_req *r)
{
	bool anthropic = hdr(r, "anthropic-version") != NULL;

	buf_reset(&r->out);
	if (gw_fmt_models(&r->out, r->gw->models, anthropic) != 0)
		return gw_req_error(r, 500, "internal_error", NULL, NULL);
	return gw_req_json(r, 200);
}

/* First call: headers are in.  Answers what needs no body. */
static enum MHD_Result
req_begin(struct gw_req *r)
{
	struct gw *gw = r->gw;
	const char *rid, *cl, *v;

	r->begun = true;
	rid = hdr(r, "X-Request-ID");
	gw_request_id(rid, r->request_id, sizeof(r->request_id));
	client_ip(r->conn, r->ip, sizeof(r->ip));
	forwarded_ip(r);
	if ((v = hdr(r, "X-Session-ID")) != NULL) {
		if (subject_session_valid(v))
			snprintf(r->session, sizeof(r->session), "%s", v);
		else
			r->session_bad = true;
	}
	if ((v = hdr(r, MHD_HTTP_HEADER_AUTHORIZATION)) != NULL &&
	    strncasecmp(v, "Bearer ", 7) == 0)
		v += 7;
	else
		v = hdr(r, "x-api-key");
	gw_limit_subject(r, v);
	if ((v = hdr(r, "anthropic-beta")) != NULL && strlen(v) <= 512) {
		bool clean = true;

		for (const char *p = v; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				clean = false;
		if (clean)
			snprintf(r->beta, sizeof(r->beta), "%s", v);
	}
	v = hdr(r, "Origin");
	r->cors = gw_cors_check(gw->cors, v);
	if (r->cors == GW_CORS_ALLOW)
		snprintf(r->origin, sizeof(r->origin), "%s", v);
	atomic_fetch_add(&gw->n_requests, 1);

	if (!r->path_ok)
		r->route = NULL;
	else
		r->route = gw_route_lookup(r->path, r->param, sizeof(r->param));
	if (r->route != NULL && r->route->admin &&
	    (gw->cfg->admin_key == NULL || gw->cfg->admin_key[0] == '\0'))
		r->route = NULL; /* no admin key: the route does not exist */
	if (r->route == NULL) {
		r->no_retry = true;
		return gw_req_error(r, 404, "not_found", NULL, NULL);
	}
	if (r->method == GW_M_OPTIONS)
		return route_options(r);
	if (!gw_route_allows(r->route, r->method)) {
		gw_route_allow_str(r->route, r->allow, sizeof(r->allow));
		r->no_retry = true;
		return gw_req_error(r, 405, "method_not_allowed", NULL, NULL);
	}
	if (r->route->admin && !admin_ok(r)) {
		gw_limit_threat(
		    r, "auth_failure", SUBJECT_THREAT_AUTH_FAILURE, false);
		r->no_retry = true;
		r->www_auth = true;
		return gw_req_error(r, 401, "unauthorized", NULL, NULL);
	}
	/* A malformed session id would silently make the caller someone
	 * else (anon:<ip>): refused wherever the caller matters. */
	if (r->session_bad && (r->route->chat || r->route->id == GW_R_QUOTA ||
				  r->route->id == GW_R_ANALYTICS)) {
		gw_limit_threat(r, "invalid_request",
		    SUBJECT_THREAT_INVALID_REQUEST, false);
		r->no_retry = true;
		return gw_req_error(r, 400, "invalid_session_id",
		    "X-Session-ID must be 16 to 64 characters of "
		    "[A-Za-z0-9._:-]",
		    NULL);
	}
	if (r->route->chat) {
		if (!gw->cfg->enabled) {
			r->no_retry = true;
			return gw_req_error(
			    r, 503, "proxy_disabled", NULL, NULL);
		}
		cl = hdr(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl != NULL) {
			char *end;
			unsigned long long n = strtoull(cl, &end, 10);

			if (end == cl || *end != '\0' ||
			    n > (unsigned long long)gw->cfg->max_body_bytes) {
				r->no_retry = true;
				return gw_req_error(
				    r, 413, "body_too_large", NULL, NULL);
			}
		}
		return MHD_YES; /* wait for the body */
	}
	switch (r->route->id) {
	case GW_R_HEALTH:
		r->provider = "";
		buf_reset(&r->out);
		buf_append_str(&r->out, "{\"status\":\"ok\"}");
		return gw_req_json(r, 200);
	case GW_R_MODELS:
		return route_models(r);
	default:
		return MHD_YES; /* answered once the request is complete */
	}
}

/* The request is complete (body included). */
static enum MHD_Result
req_dispatch(struct gw_req *r)
{
	switch (r->route->id) {
	case GW_R_HEALTH_DETAILED:
		return gw_health_detailed(r);
	case GW_R_BREAKER_RESET:
	case GW_R_CACHE_CLEAR:
		return route_admin(r);
	case GW_R_QUOTA:
		return gw_usage_quota(r);
	case GW_R_BLOCKED:
		return gw_admin_blocked(r);
	case GW_R_UNBLOCK:
		return gw_admin_unblock(r);
	case GW_R_PROVIDERS_STATUS:
		return gw_providers_status(r);
	case GW_R_ANALYTICS:
		return gw_usage_analytics(
		    r, r->gw->cfg->admin_key != NULL &&
			   r->gw->cfg->admin_key[0] != '\0' && admin_ok(r));
	default:
		break;
	}
	if (r->too_large) {
		r->no_retry = true;
		return gw_req_error(r, 413, "body_too_large", NULL, NULL);
	}
	return gw_chat_dispatch(r);
}

enum MHD_Result
gw_http_access(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	struct gw *gw = cls;
	struct gw_req *r = *con_cls;
	enum MHD_Result ret;
	const char *v;

	(void)version;
	if (r == NULL) {
		const char *te;

		if ((r = req_new(gw, conn)) == NULL)
			return MHD_NO;
		*con_cls = r;
		r->path_ok = strlen(url) < sizeof(r->path);
		snprintf(r->path, sizeof(r->path), "%s", url);
		r->method = gw_method_bit(method);
		/* Without a body, answer once the request is complete (an
		 * answer now would close the connection); with one, answer
		 * errors now and skip the body. */
		te = hdr(r, MHD_HTTP_HEADER_TRANSFER_ENCODING);
		v = hdr(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (te == NULL && (v == NULL || strcmp(v, "0") == 0))
			return MHD_YES;
		return req_begin(r);
	}
	if (*upload_data_size > 0) {
		size_t n = *upload_data_size;

		*upload_data_size = 0;
		if (r->state != GW_RS_READING)
			return MHD_YES;
		if (!r->too_large && buf_append(&r->body, upload_data, n) == 0)
			return MHD_YES;
		/* Over the limit: keep reading (bounded) to answer 413. */
		r->too_large = true;
		buf_free(&r->body);
		r->discarded += n;
		if (r->discarded >
		    (size_t)gw->cfg->max_body_bytes * GW_BODY_DISCARD_FACTOR)
			return MHD_NO;
		return MHD_YES;
	}
	pthread_mutex_lock(&r->mtx);
	switch (r->state) {
	case GW_RS_READING:
		pthread_mutex_unlock(&r->mtx);
		if (!r->begun) {
			ret = req_begin(r);
			if (ret != MHD_YES || r->state != GW_RS_READING)
				return ret;
		}
		return req_dispatch(r);
	case GW_RS_READY: {
		bool stream = r->stream_started;

		/* Only this thread moves r out of READY; queue unlocked
		 * (the stream reader takes r->mtx). */
		r->state = GW_RS_QUEUED;
		pthread_mutex_unlock(&r->mtx);
		return stream ? req_queue_stream(r) : req_queue_buffer(r);
	}
	case GW_RS_WAITING:
		/* Woken without a result (should not happen): wait on. */
		req_suspend_locked(r);
		pthread_mutex_unlock(&r->mtx);
		return MHD_YES;
	case GW_RS_QUEUED:
	default:
		pthread_mutex_unlock(&r->mtx);
		return MHD_YES;
	}
}

void
gw_req_wait(struct gw_req *r)
{
	pthread_mutex_lock(&r->mtx);
	r->state = GW_RS_WAITING;
	req_suspend_locked(r);
	pthread_mutex_unlock(&r->mtx);
}

static void
access_log(struct gw_req *r, enum MHD_RequestTerminationCode toe)
{
	static const char *const methods[] = {
	    "GET", "POST", "DELETE", "OPTIONS", "HEAD", "OTHER"};
	const char *m = "OTHER";
	char cost[32];

	if (!log_enabled(LOG_LVL_INFO))
		return;
	for (int i = 0; i < 6; i++)
		if (r->method == (1u << i))
			m = methods[i];
	gw_cost_str(r->cost_micro_usd, cost, sizeof(cost));
	log_info(r->request_id, "access", LF_S("method", m),
	    LF_S("path", r->path), LF_I("status", r->status),
	    LF_I("ms", gw_req_elapsed_ms(r)), LF_I("bytes", r->bytes_out),
	    LF_S("ip", r->ip), LF_S("provider", r->provider),
	    LF_S("model", r->model), LF_I("cost_micro_usd", r->cost_micro_usd),
	    LF_B("stream", r->is_stream), LF_S("error", r->code),
	    LF_B("completed", toe == MHD_REQUEST_TERMINATED_COMPLETED_OK),
	    LF_I("us", clock_mono_us() - r->start_us));
}

void
gw_http_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct gw *gw = cls;
	struct gw_req *r = *con_cls;
	bool cancel = false;

	(void)conn;
	if (r == NULL)
		return;
	*con_cls = NULL;
	pthread_mutex_lock(&r->mtx);
	r->closed = true;
	r->suspended = false;
	if (r->is_stream && !r->finished && !r->cancel_sent &&
	    (!r->resp_done || r->next_seq < r->chunks_expected)) {
		r->cancel_sent = true;
		cancel = true;
	}
	if (r->status == 0)
		r->status = 499; /* nothing was answered */
	pthread_mutex_unlock(&r->mtx);
	if (cancel) {
		log_info(r->request_id, "client left mid-stream",
		    LF_I("termination", toe));
		gw_publish_cancel(gw, r->request_id);
	}
	gw_stab_remove(gw, r);
	access_log(r, toe);
	pthread_mutex_lock(&gw->mtx);
	if (r->prev != NULL)
		r->prev->next = r->next;
	else
		gw->live = r->next;
	if (r->next != NULL)
		r->next->prev = r->prev;
	gw->nlive--;
	pthread_cond_broadcast(&gw->cond);
	pthread_mutex_unlock(&gw->mtx);
	gw_req_unref(r);
}

/* ---- the daemon ---- */

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];
	size_t n;

	(void)cls;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	log_warn(NULL, "libmicrohttpd", LF_S("detail", line));
}

/* Raises RLIMIT_NOFILE to the hard limit; returns the soft limit. */
static rlim_t
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 1024;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur;
}

int
gw_http_start(struct gw *gw)
{
	const struct cfg *c = gw->cfg;
	struct addrinfo hints, *ai = NULL;
	const union MHD_DaemonInfo *di;
	char port[16];
	rlim_t nofile;
	unsigned int conn_limit, mem_limit;
	int rv;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%lld", (long long)c->port);
	if ((rv = getaddrinfo(c->host, port, &hints, &ai)) != 0 || ai == NULL) {
		log_error(NULL, "cannot resolve AI_PROXY_HOST",
		    LF_S("host", c->host), LF_S("error", gai_strerror(rv)));
		return -EADDRNOTAVAIL;
	}
	nofile = raise_nofile();
	conn_limit = nofile > 1280 ? (unsigned)(nofile - 256) : 1024;
	if (nofile > 0 && conn_limit > nofile - 64 && nofile > 128)
		conn_limit = (unsigned)(nofile - 64);
	if (conn_limit > 1000000)
		conn_limit = 1000000;
	/* The header block lives in the pool with the read and write
	 * buffers: little more than the header limit. */
	mem_limit = (unsigned)c->max_header_bytes + 4096;
	gw->mhd = MHD_start_daemon(
	    MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
		MHD_USE_TURBO | MHD_USE_ERROR_LOG |
		(ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0),
	    (uint16_t)c->port, NULL, NULL, gw_http_access, gw,
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_log, gw, MHD_OPTION_SOCK_ADDR,
	    ai->ai_addr, MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)2,
	    MHD_OPTION_CONNECTION_LIMIT, conn_limit,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT,
	    (unsigned int)c->max_conns_per_ip, MHD_OPTION_CONNECTION_TIMEOUT,
	    (unsigned int)c->conn_timeout_seconds,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)mem_limit,
	    MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)4096,
	    MHD_OPTION_NOTIFY_COMPLETED, gw_http_completed, gw, MHD_OPTION_END);
	freeaddrinfo(ai);
	if (gw->mhd == NULL) {
		log_error(NULL, "cannot start the HTTP server",
		    LF_S("host", c->host), LF_I("port", c->port));
		return -EADDRINUSE;
	}
	di = MHD_get_daemon_info(gw->mhd, MHD_DAEMON_INFO_BIND_PORT);
	gw->port = di != NULL ? di->port : (uint16_t)c->port;
	log_info(NULL, "listening", LF_S("host", c->host),
	    LF_I("port", gw->port), LF_I("connection_limit", conn_limit),
	    LF_I("nofile", nofile));
	return 0;
}
