/*
 * The gateway on its own (no worker connected): health, the model lists,
 * routing (404/405), CORS, the admin routes (and the control messages
 * they publish), every validation error in each route's shape, body
 * limits, security headers and request ids on every response, 503
 * no_workers, and AI_PROXY_ENABLED=false.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>

#include "proto.h"
#include "suite.h"

static struct suite S;   /* admin key, CORS origins, no worker */
static struct suite OFF; /* AI_PROXY_ENABLED=false, no admin key */

#define ORIGIN "https://app.example.com"

/* Asserts the common headers and returns the body as JSON. */
static json_t *
check_resp(const struct h_resp *r, long status)
{
	const char *missing = suite_missing_security_header(r);
	json_t *j;

	ck_assert_msg(r->status == status, "status %ld, want %ld: %s",
	    r->status, status, r->body ? r->body : "");
	ck_assert_msg(missing == NULL, "missing header %s", missing);
	if (status == 204)
		return NULL;
	j = suite_json(r);
	ck_assert_msg(j != NULL, "body is not JSON: %s", r->body);
	return j;
}

static const char *
jstr(json_t *j, const char *key)
{
	const char *v = json_string_value(json_object_get(j, key));

	ck_assert_msg(v != NULL, "no string %s", key);
	return v;
}

START_TEST(test_health)
{
	struct h_resp r;
	json_t *j;

	ck_assert_int_eq(suite_get(&S, "/health", NULL, &r), 0);
	j = check_resp(&r, 200);
	ck_assert_str_eq(jstr(j, "status"), "ok");
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

START_TEST(test_health_detailed_no_workers)
{
	struct h_resp r;
	json_t *j, *c;

	ck_assert_int_eq(suite_get(&S, "/health/detailed", NULL, &r), 0);
	j = check_resp(&r, 503);
	ck_assert_str_eq(jstr(j, "status"), "down");
	c = json_object_get(j, "components");
	ck_assert_str_eq(jstr(json_object_get(c, "workers"), "status"), "down");
	ck_assert_int_eq(json_integer_value(json_object_get(
			     json_object_get(c, "workers"), "connected")),
	    0);
	/* The ratelimiter and accountant: up when running, down else. */
	ck_assert_str_eq(jstr(json_object_get(c, "ratelimiter"), "status"),
	    S.rl_up ? "up" : "down");
	ck_assert_str_eq(jstr(json_object_get(c, "accountant"), "status"),
	    S.acct_up ? "up" : "down");
	ck_assert(json_is_integer(
	    json_object_get(json_object_get(c, "ratelimiter"), "latency_ms")));
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

START_TEST(test_models_shapes)
{
	const char *const ah[] = {"anthropic-version: 2023-06-01", NULL};
	struct h_resp r;
	json_t *j, *m;
	size_t i;

	ck_assert_int_eq(suite_get(&S, "/v1/models", NULL, &r), 0);
	j = check_resp(&r, 200);
	ck_assert_str_eq(jstr(j, "object"), "list");
	ck_assert_uint_gt(json_array_size(json_object_get(j, "data")), 0);
	json_array_foreach(json_object_get(j, "data"), i, m) {
		ck_assert_str_eq(jstr(m, "object"), "model");
		ck_assert_str_eq(jstr(m, "owned_by"), "openai");
	}
	json_decref(j);
	h_resp_free(&r);

	ck_assert_int_eq(suite_get(&S, "/v1/models", ah, &r), 0);
	j = check_resp(&r, 200);
	ck_assert(json_is_false(json_object_get(j, "has_more")));
	ck_assert_uint_gt(json_array_size(json_object_get(j, "data")), 0);
	json_array_foreach(json_object_get(j, "data"), i, m) {
		ck_assert_str_eq(jstr(m, "type"), "model");
		ck_assert_int_eq(strncmp(jstr(m, "id"), "claude", 6), 0);
	}
	ck_assert_str_eq(jstr(j, "first_id"),
	    jstr(json_array_get(json_object_get(j, "data"), 0), "id"));
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

static const struct {
	const char *method;
	const char *path;
	long status;
	const char *allow; /* expected Allow header, NULL: none */
	int shape;         /* 0 envelope, 1 openai, 2 anthropic */
	const char *code;
} routing[] = {
    {"GET", "/nope", 404, NULL, 0, "not_found"},
    {"GET", "/v1/nope", 404, NULL, 1, "not_found"},
    {"POST", "/v1/messages/count_tokens", 404, NULL, 2, "not_found"},
    {"GET", "/v1/messages", 405, "POST, OPTIONS", 2, "method_not_allowed"},
    {"GET", "/v1/chat/completions", 405, "POST, OPTIONS", 1,
	"method_not_allowed"},
    {"POST", "/health", 405, "GET, HEAD, OPTIONS", 0, "method_not_allowed"},
    {"DELETE", "/v1/models", 405, "GET, HEAD, OPTIONS", 1,
	"method_not_allowed"},
    {"PUT", "/api/v1/ai-proxy/claude/chat", 405, "POST, OPTIONS", 0,
	"method_not_allowed"},
    {"PATCH", "/api/v1/ai-proxy/openai/chat", 405, "POST, OPTIONS", 0,
	"method_not_allowed"},
    {"GET", "/api/v1/ai-proxy/cache/clear", 405, "DELETE, OPTIONS", 0,
	"method_not_allowed"},
};

START_TEST(test_routing)
{
	struct h_resp r;
	char url[256], allow[128];
	json_t *j;

	ck_assert_int_eq(h_http(routing[_i].method,
			     suite_url(&S, routing[_i].path, url, sizeof(url)),
			     NULL, NULL, 0, 5000, &r),
	    0);
	j = check_resp(&r, routing[_i].status);
	if (routing[_i].allow != NULL) {
		ck_assert_ptr_nonnull(
		    h_resp_header(&r, "Allow", allow, sizeof(allow)));
		ck_assert_str_eq(allow, routing[_i].allow);
	}
	switch (routing[_i].shape) {
	case 0:
		ck_assert(json_is_false(json_object_get(j, "success")));
		ck_assert_str_eq(jstr(j, "error"), routing[_i].code);
		break;
	case 1:
		ck_assert_str_eq(jstr(json_object_get(j, "error"), "code"),
		    routing[_i].code);
		break;
	default:
		ck_assert_str_eq(jstr(j, "type"), "error");
		ck_assert_ptr_nonnull(
		    json_object_get(json_object_get(j, "error"), "type"));
		break;
	}
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

START_TEST(test_request_id)
{
	const char *const mine[] = {"X-Request-ID: my-id_123", NULL};
	const char *const bad[] = {"X-Request-ID: bad id!", NULL};
	struct h_resp r;
	char v[128];
	json_t *j;

	ck_assert_int_eq(
	    suite_post(&S, "/api/v1/ai-proxy/claude/chat", "{}", mine, &r), 0);
	j = check_resp(&r, 400);
	h_resp_header(&r, "X-Request-ID", v, sizeof(v));
	ck_assert_str_eq(v, "my-id_123");
	ck_assert_str_eq(jstr(j, "request_id"), "my-id_123");
	json_decref(j);
	h_resp_free(&r);
	ck_assert_int_eq(
	    suite_post(&S, "/api/v1/ai-proxy/claude/chat", "{}", bad, &r), 0);
	j = check_resp(&r, 400);
	h_resp_header(&r, "X-Request-ID", v, sizeof(v));
	ck_assert_int_eq(strncmp(v, "req_", 4), 0);
	ck_assert_str_eq(jstr(j, "request_id"), v);
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

#define UM "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

/* Every validation error, through HTTP, in each route's shape. */
static const struct {
	const char *path;
	const char *body;
	long status;
	const char *code;
} invalid[] = {
    {"/api/v1/ai-proxy/claude/chat", "nope", 400, "invalid_json"},
    {"/api/v1/ai-proxy/claude/chat", "[]", 400, "invalid_json"},
    {"/api/v1/ai-proxy/openai/chat", "{\"a\":\"\xc3\x28\"}", 400,
	"invalid_json"},
    {"/api/v1/ai-proxy/claude/chat",
	"{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
	"]"
	"]]]]}",
	400, "json_too_deep"},
    {"/api/v1/ai-proxy/claude/chat", "{}", 400, "invalid_messages"},
    {"/api/v1/ai-proxy/claude/chat",
	"{\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}", 400,
	"invalid_messages"},
    {"/api/v1/ai-proxy/openai/chat",
	"{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":1}]}]}", 400,
	"invalid_messages"},
    {"/api/v1/ai-proxy/claude/chat", "{" UM ",\"max_tokens\":0}", 400,
	"invalid_max_tokens"},
    {"/api/v1/ai-proxy/claude/chat", "{" UM ",\"max_tokens\":999999}", 400,
	"max_tokens_too_large"},
    {"/api/v1/ai-proxy/claude/chat", "{" UM ",\"temperature\":1.2}", 400,
	"invalid_temperature"},
    {"/api/v1/ai-proxy/openai/chat", "{" UM ",\"temperature\":2.2}", 400,
	"invalid_temperature"},
    {"/api/v1/ai-proxy/claude/chat", "{" UM ",\"model\":\"nope-1\"}", 400,
	"unknown_model"},
    {"/api/v1/ai-proxy/claude/chat", "{" UM ",\"model\":\"gpt-4o\"}", 400,
	"model_provider_mismatch"},
    {"/api/v1/ai-proxy/openai/chat", "{" UM ",\"stream\":\"x\"}", 400,
	"invalid_stream"},
    {"/v1/chat/completions", "{" UM ",\"model\":\"gpt-4o\",\"max_tokens\":-1}",
	400, "invalid_max_tokens"},
    {"/v1/chat/completions", "{" UM ",\"model\":\"claude-3-haiku\"}", 400,
	"model_provider_mismatch"},
    {"/v1/chat/completions", "{" UM "}", 400, "invalid_model"},
    {"/v1/messages", "{" UM ",\"model\":\"claude-3-haiku\"}", 400,
	"invalid_max_tokens"},
    {"/v1/messages", "{" UM ",\"model\":\"x\",\"max_tokens\":5}", 400,
	"unknown_model"},
    {"/v1/messages", "not json", 400, "invalid_json"},
};

START_TEST(test_validation_errors)
{
	struct h_resp r;
	char v[64];
	json_t *j, *e;

	ck_assert_int_eq(
	    suite_post(&S, invalid[_i].path, invalid[_i].body, NULL, &r), 0);
	j = check_resp(&r, invalid[_i].status);
	/* Rejected by aiproxy itself: SDKs must not retry. */
	ck_assert_ptr_nonnull(
	    h_resp_header(&r, "x-should-retry", v, sizeof(v)));
	ck_assert_str_eq(v, "false");
	if (strncmp(invalid[_i].path, "/api/", 5) == 0) {
		ck_assert(json_is_false(json_object_get(j, "success")));
		ck_assert(json_is_null(json_object_get(j, "data")));
		ck_assert_str_eq(jstr(j, "error"), invalid[_i].code);
		ck_assert_uint_gt(strlen(jstr(j, "message")), 0);
		ck_assert(json_is_false(json_object_get(j, "cached")));
		ck_assert(json_is_number(json_object_get(j, "cost")));
		ck_assert(
		    json_is_integer(json_object_get(j, "response_time_ms")));
		ck_assert(json_is_string(json_object_get(j, "request_id")));
	} else if (strcmp(invalid[_i].path, "/v1/chat/completions") == 0) {
		e = json_object_get(j, "error");
		ck_assert_str_eq(jstr(e, "code"), invalid[_i].code);
		ck_assert_str_eq(jstr(e, "type"), "invalid_request_error");
		ck_assert_ptr_nonnull(json_object_get(e, "param"));
		ck_assert_uint_gt(strlen(jstr(e, "message")), 0);
	} else {
		ck_assert_str_eq(jstr(j, "type"), "error");
		e = json_object_get(j, "error");
		ck_assert_str_eq(jstr(e, "type"), "invalid_request_error");
		ck_assert_uint_gt(strlen(jstr(e, "message")), 0);
	}
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

START_TEST(test_body_too_large)
{
	const char *const chunked[] = {"Transfer-Encoding: chunked", NULL};
	size_t n = (1u << 20) + 100; /* default AI_PROXY_MAX_BODY_BYTES + */
	char *big = malloc(n + 1);
	struct h_resp r;
	json_t *j;

	memset(big, ' ', n);
	big[n] = '\0';
	big[0] = '{';
	big[n - 1] = '}';
	/* Content-Length over the limit: 413 before the body is read. */
	ck_assert_int_eq(
	    suite_post(&S, "/api/v1/ai-proxy/claude/chat", big, NULL, &r), 0);
	j = check_resp(&r, 413);
	ck_assert_str_eq(jstr(j, "error"), "body_too_large");
	json_decref(j);
	h_resp_free(&r);
	/* Chunked: counted while reading. */
	ck_assert_int_eq(suite_post(&S, "/v1/messages", big, chunked, &r), 0);
	j = check_resp(&r, 413);
	ck_assert_str_eq(
	    jstr(json_object_get(j, "error"), "type"), "request_too_large");
	json_decref(j);
	h_resp_free(&r);
	free(big);
}
END_TEST

START_TEST(test_no_workers)
{
	struct h_resp r;
	char v[32];
	json_t *j;

	ck_assert_int_eq(suite_post(&S, "/api/v1/ai-proxy/claude/chat",
			     "{" UM "}", NULL, &r),
	    0);
	j = check_resp(&r, 503);
	ck_assert_str_eq(jstr(j, "error"), "no_workers");
	ck_assert_ptr_nonnull(h_resp_header(&r, "Retry-After", v, sizeof(v)));
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

START_TEST(test_cors)
{
	const char *const ok[] = {"Origin: " ORIGIN, NULL};
	const char *const evil[] = {"Origin: https://evil.example", NULL};
	const char *const pre_ok[] = {"Origin: " ORIGIN,
	    "Access-Control-Request-Method: POST",
	    "Access-Control-Request-Headers: content-type,x-api-key", NULL};
	const char *const pre_evil[] = {"Origin: https://evil.example",
	    "Access-Control-Request-Method: POST", NULL};
	struct h_resp r;
	char url[256], v[1024];

	/* Allowed origin on a normal response: echoed with credentials. */
	ck_assert_int_eq(suite_get(&S, "/health", ok, &r), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_ptr_nonnull(
	    h_resp_header(&r, "Access-Control-Allow-Origin", v, sizeof(v)));
	ck_assert_str_eq(v, ORIGIN);
	h_resp_header(&r, "Vary", v, sizeof(v));
	ck_assert_str_eq(v, "Origin");
	h_resp_header(&r, "Access-Control-Allow-Credentials", v, sizeof(v));
	ck_assert_str_eq(v, "true");
	h_resp_free(&r);
	/* Disallowed origin: no CORS headers at all. */
	ck_assert_int_eq(suite_get(&S, "/health", evil, &r), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_ptr_null(
	    h_resp_header(&r, "Access-Control-Allow-Origin", v, sizeof(v)));
	ck_assert_ptr_null(h_resp_header(
	    &r, "Access-Control-Allow-Credentials", v, sizeof(v)));
	h_resp_free(&r);
	/* Preflight, allowed. */
	ck_assert_int_eq(
	    h_http("OPTIONS", suite_url(&S, "/v1/messages", url, sizeof(url)),
		pre_ok, NULL, 0, 5000, &r),
	    0);
	check_resp(&r, 204);
	h_resp_header(&r, "Access-Control-Allow-Origin", v, sizeof(v));
	ck_assert_str_eq(v, ORIGIN);
	ck_assert_ptr_nonnull(
	    h_resp_header(&r, "Access-Control-Allow-Methods", v, sizeof(v)));
	ck_assert_ptr_nonnull(strstr(v, "POST"));
	ck_assert_ptr_nonnull(
	    h_resp_header(&r, "Access-Control-Allow-Headers", v, sizeof(v)));
	ck_assert_ptr_nonnull(strcasestr(v, "x-api-key"));
	ck_assert_ptr_nonnull(strcasestr(v, "anthropic-version"));
	ck_assert_ptr_nonnull(strcasestr(v, "Authorization"));
	ck_assert_ptr_nonnull(
	    h_resp_header(&r, "Access-Control-Max-Age", v, sizeof(v)));
	h_resp_free(&r);
	/* Preflight, disallowed: 403 and no CORS headers. */
	ck_assert_int_eq(
	    h_http("OPTIONS", suite_url(&S, "/v1/messages", url, sizeof(url)),
		pre_evil, NULL, 0, 5000, &r),
	    0);
	ck_assert_int_eq(r.status, 403);
	ck_assert_ptr_null(suite_missing_security_header(&r));
	ck_assert_ptr_null(
	    h_resp_header(&r, "Access-Control-Allow-Origin", v, sizeof(v)));
	h_resp_free(&r);
	/* Never "*" with credentials. */
	ck_assert_int_eq(
	    h_http("OPTIONS",
		suite_url(&S, "/api/v1/ai-proxy/openai/chat", url, sizeof(url)),
		pre_ok, NULL, 0, 5000, &r),
	    0);
	ck_assert_int_eq(r.status, 204);
	h_resp_header(&r, "Access-Control-Allow-Origin", v, sizeof(v));
	ck_assert_str_ne(v, "*");
	h_resp_free(&r);
}
END_TEST

/* Receives one control message on sub within ms; 0 or -errno. */
static int
recv_ctl(nng_socket sub, int ms, enum msg_type *ret_t, union proto_msg *ret)
{
	const char *body;
	size_t blen;
	char *buf = NULL;
	size_t len = 0;
	int rv;

	nng_socket_set_ms(sub, NNG_OPT_RECVTIMEO, ms);
	if ((rv = nng_recv(sub, &buf, &len, NNG_FLAG_ALLOC)) != 0)
		return -ETIMEDOUT;
	rv = proto_topic_strip(PROTO_TOPIC_CTL, buf, len, &body, &blen);
	if (rv == 0)
		rv = proto_peek_type(body, blen, ret_t);
	if (rv == 0)
		rv = proto_msg_decode(*ret_t, body, blen, ret);
	nng_free(buf, len);
	return rv;
}

START_TEST(test_admin)
{
	const char *const good[] = {
	    "Authorization: Bearer " SUITE_ADMIN_KEY, NULL};
	const char *const wrong[] = {"Authorization: Bearer nope", NULL};
	const char *const prefix[] = {
	    "Authorization: Bearer suite-admin-key", NULL};
	union proto_msg m;
	enum msg_type t = MSG_NONE;
	struct h_resp r;
	nng_socket sub;
	char url[256], v[64];
	json_t *j;
	int rv = -1;

	/* Wrong or missing key: 401. */
	ck_assert_int_eq(
	    suite_post(&S, "/api/v1/ai-proxy/circuit-breaker/claude/reset",
		NULL, wrong, &r),
	    0);
	j = check_resp(&r, 401);
	ck_assert_str_eq(jstr(j, "error"), "unauthorized");
	json_decref(j);
	h_resp_free(&r);
	ck_assert_int_eq(
	    suite_post(&S, "/api/v1/ai-proxy/circuit-breaker/claude/reset",
		NULL, prefix, &r),
	    0);
	ck_assert_int_eq(r.status, 401);
	h_resp_free(&r);
	ck_assert_int_eq(
	    h_http("DELETE",
		suite_url(&S, "/api/v1/ai-proxy/cache/clear", url, sizeof(url)),
		NULL, NULL, 0, 5000, &r),
	    0);
	ck_assert_int_eq(r.status, 401);
	h_resp_free(&r);
	/* Unknown provider: 404. */
	ck_assert_int_eq(
	    suite_post(&S, "/api/v1/ai-proxy/circuit-breaker/gemini/reset",
		NULL, good, &r),
	    0);
	j = check_resp(&r, 404);
	json_decref(j);
	h_resp_free(&r);
	ck_assert_int_eq(
	    h_http("DELETE",
		suite_url(&S, "/api/v1/ai-proxy/cache/clear?provider=x", url,
		    sizeof(url)),
		good, NULL, 0, 5000, &r),
	    0);
	ck_assert_int_eq(r.status, 404);
	h_resp_free(&r);

	/* 200, and the control message reaches a subscriber. */
	ck_assert_int_eq(nng_sub0_open(&sub), 0);
	ck_assert_int_eq(nng_socket_set(sub, NNG_OPT_SUB_SUBSCRIBE,
			     PROTO_TOPIC_CTL, strlen(PROTO_TOPIC_CTL)),
	    0);
	ck_assert_int_eq(nng_dial(sub, S.control_url, NULL, 0), 0);
	for (int i = 0; i < 20 && rv != 0; i++) {
		ck_assert_int_eq(suite_post(&S,
				     "/api/v1/ai-proxy/circuit-breaker/openai/"
				     "reset",
				     NULL, good, &r),
		    0);
		j = check_resp(&r, 200);
		ck_assert(json_is_true(json_object_get(j, "success")));
		h_resp_header(&r, "X-Request-ID", v, sizeof(v));
		json_decref(j);
		h_resp_free(&r);
		rv = recv_ctl(sub, 100, &t, &m);
	}
	ck_assert_int_eq(rv, 0);
	ck_assert_int_eq(t, MSG_BREAKER_RESET);
	ck_assert_str_eq(m.breaker_reset.provider, "openai");
	ck_assert_str_eq(m.breaker_reset.request_id, v);
	while (recv_ctl(sub, 50, &t, &m) == 0)
		; /* drain the extra ones */
	ck_assert_int_eq(
	    h_http("DELETE",
		suite_url(&S, "/api/v1/ai-proxy/cache/clear?provider=claude",
		    url, sizeof(url)),
		good, NULL, 0, 5000, &r),
	    0);
	j = check_resp(&r, 200);
	json_decref(j);
	h_resp_free(&r);
	ck_assert_int_eq(recv_ctl(sub, 2000, &t, &m), 0);
	ck_assert_int_eq(t, MSG_CACHE_CLEAR);
	ck_assert_str_eq(m.cache_clear.provider, "claude");
	ck_assert_int_eq(
	    h_http("DELETE",
		suite_url(&S, "/api/v1/ai-proxy/cache/clear", url, sizeof(url)),
		good, NULL, 0, 5000, &r),
	    0);
	ck_assert_int_eq(r.status, 200);
	h_resp_free(&r);
	ck_assert_int_eq(recv_ctl(sub, 2000, &t, &m), 0);
	ck_assert_int_eq(t, MSG_CACHE_CLEAR);
	ck_assert_str_eq(m.cache_clear.provider, "");
	nng_close(sub);
}
END_TEST

START_TEST(test_admin_without_key_is_404)
{
	const char *const any[] = {
	    "Authorization: Bearer " SUITE_ADMIN_KEY, NULL};
	struct h_resp r;
	json_t *j;

	ck_assert_int_eq(
	    suite_post(&OFF, "/api/v1/ai-proxy/circuit-breaker/claude/reset",
		NULL, any, &r),
	    0);
	j = check_resp(&r, 404);
	ck_assert_str_eq(jstr(j, "error"), "not_found");
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

START_TEST(test_proxy_disabled)
{
	struct h_resp r;
	json_t *j;

	ck_assert_int_eq(suite_post(&OFF, "/api/v1/ai-proxy/claude/chat",
			     "{" UM "}", NULL, &r),
	    0);
	j = check_resp(&r, 503);
	ck_assert_str_eq(jstr(j, "error"), "proxy_disabled");
	json_decref(j);
	h_resp_free(&r);
	ck_assert_int_eq(suite_post(&OFF, "/v1/chat/completions",
			     "{" UM ",\"model\":\"gpt-4o\"}", NULL, &r),
	    0);
	j = check_resp(&r, 503);
	ck_assert_str_eq(
	    jstr(json_object_get(j, "error"), "code"), "proxy_disabled");
	json_decref(j);
	h_resp_free(&r);
	/* Health still answers. */
	ck_assert_int_eq(suite_get(&OFF, "/health", NULL, &r), 0);
	ck_assert_int_eq(r.status, 200);
	h_resp_free(&r);
}
END_TEST

START_TEST(test_keepalive_many)
{
	/* Many requests in a row stay correct (no state leaks between). */
	for (int i = 0; i < 50; i++) {
		struct h_resp r;

		ck_assert_int_eq(
		    suite_post(&S, "/v1/messages", "{}", NULL, &r), 0);
		ck_assert_int_eq(r.status, 400);
		ck_assert_ptr_null(suite_missing_security_header(&r));
		h_resp_free(&r);
	}
}
END_TEST

/* The access line of request id rid in the gateway log of suite s. */
static char *
access_line(struct suite *s, const char *rid)
{
	char needle[128], *log, *p, *end, *line = NULL;

	snprintf(needle, sizeof(needle),
	    "\"request_id\":\"%s\",\"msg\":\"access\"", rid);
	for (int i = 0; i < 100 && line == NULL; i++) {
		log = h_read_file(s->gw.log_path, NULL);
		if (log != NULL && (p = strstr(log, needle)) != NULL) {
			while (p > log && p[-1] != '\n')
				p--;
			end = strchr(p, '\n');
			line = strndup(p, end ? (size_t)(end - p) : strlen(p));
		}
		free(log);
		if (line == NULL)
			usleep(20000);
	}
	ck_assert_msg(line != NULL, "no access line for %s", rid);
	return line;
}

START_TEST(test_session_id_malformed)
{
	static const char *const bad[] = {"X-Session-ID: short", NULL};
	static const char *const bad_chars[] = {
	    "X-Session-ID: has spaces in it, see?!", NULL};
	struct h_resp r;
	json_t *j;

	ck_assert_int_eq(suite_post(&S, "/api/v1/ai-proxy/claude/chat",
			     "{\"messages\":[{\"role\":\"user\","
			     "\"content\":\"hi\"}]}",
			     bad, &r),
	    0);
	j = check_resp(&r, 400);
	ck_assert_str_eq(jstr(j, "error"), "invalid_session_id");
	json_decref(j);
	h_resp_free(&r);
	ck_assert_int_eq(suite_post(&S, "/v1/chat/completions",
			     "{\"model\":\"gpt-4o-mini\",\"messages\":[{"
			     "\"role\":\"user\",\"content\":\"hi\"}]}",
			     bad_chars, &r),
	    0);
	ck_assert_msg(r.status == 400 && r.body != NULL &&
			  strstr(r.body, "invalid_session_id") != NULL,
	    "%ld %s", r.status, r.body ? r.body : "");
	h_resp_free(&r);
	ck_assert_int_eq(
	    suite_get(&S, "/api/v1/ai-proxy/usage/quota", bad, &r), 0);
	ck_assert_int_eq(r.status, 400);
	h_resp_free(&r);
	/* Liveness does not care who asks. */
	ck_assert_int_eq(suite_get(&S, "/health", bad, &r), 0);
	ck_assert_int_eq(r.status, 200);
	h_resp_free(&r);
}
END_TEST

START_TEST(test_forwarded_for)
{
	const char *const xff[] = {"X-Request-ID: xff-1",
	    "X-Forwarded-For: 198.51.100.9, 203.0.113.7, 10.1.2.3, 127.0.0.5",
	    NULL};
	const char *const xff_off[] = {
	    "X-Request-ID: xff-2", "X-Forwarded-For: 203.0.113.7", NULL};
	struct h_resp r;
	char *line;

	/* 127.0.0.0/8 and 10.1.2.3 are trusted proxies in S: the right-most
	 * other address. */
	ck_assert_int_eq(suite_get(&S, "/health", xff, &r), 0);
	h_resp_free(&r);
	line = access_line(&S, "xff-1");
	ck_assert_msg(
	    strstr(line, "\"ip\":\"203.0.113.7\"") != NULL, "%s", line);
	free(line);
	/* No trusted proxies: the header is ignored. */
	ck_assert_int_eq(suite_get(&OFF, "/health", xff_off, &r), 0);
	h_resp_free(&r);
	line = access_line(&OFF, "xff-2");
	ck_assert_msg(strstr(line, "\"ip\":\"127.0.0.1\"") != NULL, "%s", line);
	free(line);
}
END_TEST

START_TEST(test_header_too_large)
{
	/* Past AI_PROXY_MAX_HEADER_BYTES libmicrohttpd refuses by itself. */
	static char big[40000];
	const char *const h[] = {big, NULL};
	struct h_resp r;

	memcpy(big, "X-Big: ", 7);
	memset(big + 7, 'a', sizeof(big) - 8);
	big[sizeof(big) - 1] = '\0';
	if (suite_get(&S, "/health", h, &r) == 0) {
		ck_assert_msg(
		    r.status == 431 || r.status == 413, "status %ld", r.status);
		h_resp_free(&r);
	}
	/* The gateway still serves afterwards. */
	ck_assert_int_eq(suite_get(&S, "/health", NULL, &r), 0);
	ck_assert_int_eq(r.status, 200);
	h_resp_free(&r);
}
END_TEST

static Suite *
gateway_basic_suite(void)
{
	Suite *s = suite_create("gateway_basic");
	TCase *tc = tcase_create("basic");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_health);
	tcase_add_test(tc, test_health_detailed_no_workers);
	tcase_add_test(tc, test_models_shapes);
	tcase_add_loop_test(
	    tc, test_routing, 0, (int)(sizeof(routing) / sizeof(routing[0])));
	tcase_add_test(tc, test_request_id);
	tcase_add_loop_test(tc, test_validation_errors, 0,
	    (int)(sizeof(invalid) / sizeof(invalid[0])));
	tcase_add_test(tc, test_body_too_large);
	tcase_add_test(tc, test_no_workers);
	tcase_add_test(tc, test_cors);
	tcase_add_test(tc, test_admin);
	tcase_add_test(tc, test_admin_without_key_is_404);
	tcase_add_test(tc, test_proxy_disabled);
	tcase_add_test(tc, test_keepalive_many);
	tcase_add_test(tc, test_forwarded_for);
	tcase_add_test(tc, test_session_id_malformed);
	tcase_add_test(tc, test_header_too_large);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	static const char *const off_env[] = {"AI_PROXY_ENABLED=false", NULL};
	static const char *const gw_env[] = {
	    "AI_PROXY_TRUSTED_PROXIES=127.0.0.0/8, 10.1.2.3", NULL};
	struct suite_opts o = {
	    .workers = 0, .cors_origins = ORIGIN, .gw_env = gw_env};
	struct suite_opts off = {.workers = 0,
	    .no_admin_key = true,
	    .no_rl_acct = true,
	    .gw_env = off_env};
	SRunner *sr;
	int failed, rv;

	if ((rv = suite_start(&S, &o)) != 0) {
		fprintf(stderr, "suite_start: %d\n", rv);
		return 1;
	}
	if ((rv = suite_start(&OFF, &off)) != 0) {
		fprintf(stderr, "suite_start (disabled): %d\n", rv);
		suite_stop(&S);
		return 1;
	}
	sr = srunner_create(gateway_basic_suite());
	/* The daemons (and nng's threads) belong to this process: a forked
	 * test child could not use nng. */
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	suite_stop(&OFF);
	suite_stop(&S);
	/* Both gateways stopped cleanly on SIGTERM. */
	if (S.gw_exit != 0 || OFF.gw_exit != 0) {
		fprintf(stderr, "gateway exit status %d / %d\n", S.gw_exit,
		    OFF.gw_exit);
		failed++;
	}
	return failed == 0 ? 0 : 1;
}
