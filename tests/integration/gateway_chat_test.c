/*
 * Non-streaming chat calls through the whole path (gateway, real
 * provider-workers, mock upstream): both providers on the envelope and
 * drop-in routes, the cost against the mock's token formula and the
 * model table, each upstream fault mapped to status/code/Retry-After,
 * latency, the deadline (504), and no provider key anywhere.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "clock.h"
#include "models.h"
#include "suite.h"

static struct suite S;
static struct model_table *T;

#define TIMEOUT_S 2 /* AI_PROXY_TIMEOUT_SECONDS of this suite */

/* Every response body seen, checked for keys at the end. */
static char *seen;
static size_t seen_len;

static void
remember(const struct h_resp *r)
{
	char *p;

	if (r->body == NULL)
		return;
	if ((p = realloc(seen, seen_len + r->body_len + 1)) == NULL)
		return;
	memcpy(p + seen_len, r->body, r->body_len);
	seen_len += r->body_len;
	p[seen_len] = '\0';
	seen = p;
	if (r->headers != NULL &&
	    (p = realloc(seen, seen_len + strlen(r->headers) + 1)) != NULL) {
		memcpy(p + seen_len, r->headers, strlen(r->headers));
		seen_len += strlen(r->headers);
		p[seen_len] = '\0';
		seen = p;
	}
}

static json_t *
post(const char *path, const char *body, const char *const hdrs[],
    struct h_resp *r, long want)
{
	json_t *j;
	const char *missing;

	ck_assert_int_eq(suite_post(&S, path, body, hdrs, r), 0);
	remember(r);
	ck_assert_msg(r->status == want, "%s: status %ld, want %ld: %s", path,
	    r->status, want, r->body);
	missing = suite_missing_security_header(r);
	ck_assert_msg(missing == NULL, "missing %s", missing);
	j = suite_json(r);
	ck_assert_msg(j != NULL, "not JSON: %s", r->body);
	return j;
}

static const char *
jstr(json_t *j, const char *key)
{
	const char *v = json_string_value(json_object_get(j, key));

	ck_assert_msg(v != NULL, "no string \"%s\"", key);
	return v;
}

/* The mock's formula: T/4+1 input tokens; output = words of
 * "Mock reply to: " + the first 48 bytes of the last user text. */
static int64_t
expected_cost(const char *model, const char *text)
{
	const struct model *m = models_lookup(T, model);
	struct model_usage u;
	char reply[128];
	int64_t words = 0;
	bool in_word = false;

	ck_assert_ptr_nonnull(m);
	memset(&u, 0, sizeof(u));
	u.input = (int64_t)strlen(text) / 4 + 1;
	snprintf(reply, sizeof(reply), "Mock reply to: %.48s", text);
	for (const char *p = reply; *p != '\0'; p++) {
		if (*p != ' ' && !in_word)
			words++;
		in_word = *p != ' ';
	}
	u.output = words;
	return models_cost(m, &u);
}

static int64_t
cost_micro(json_t *j)
{
	double c = json_number_value(json_object_get(j, "cost"));

	ck_assert(json_is_number(json_object_get(j, "cost")));
	return (int64_t)(c * 1e6 + 0.5);
}

#define TEXT "Hello there, how are you doing on this fine day?"

static const struct {
	const char *path;
	const char *model; /* as the client names it */
	const char *exact;
	const char *provider;
} envelope_cases[] = {
    {"/api/v1/ai-proxy/claude/chat", "claude-3-haiku",
	"claude-3-haiku-20240307", "claude"},
    {"/api/v1/ai-proxy/claude/chat", "claude-sonnet-4-5",
	"claude-sonnet-4-5-20250929", "claude"},
    {"/api/v1/ai-proxy/openai/chat", "gpt-4o-mini", "gpt-4o-mini-2024-07-18",
	"openai"},
    {"/api/v1/ai-proxy/openai/chat", "gpt-4o", "gpt-4o-2024-08-06", "openai"},
};

START_TEST(test_envelope_success)
{
	char body[512], rid[64], want_cost[64];
	const char *hdrs[] = {rid, NULL};
	struct h_resp r;
	json_t *j, *data, *e;
	int64_t cost = expected_cost(envelope_cases[_i].exact, TEXT);

	snprintf(rid, sizeof(rid), "X-Request-ID: env-ok-%d", _i);
	snprintf(body, sizeof(body),
	    "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":"
	    "\"" TEXT "\"}],\"max_tokens\":100}",
	    envelope_cases[_i].model);
	j = post(envelope_cases[_i].path, body, hdrs, &r, 200);
	ck_assert(json_is_true(json_object_get(j, "success")));
	ck_assert(json_is_null(json_object_get(j, "error")));
	ck_assert(json_is_null(json_object_get(j, "message")));
	ck_assert(json_is_false(json_object_get(j, "cached")));
	ck_assert_str_eq(jstr(j, "provider"), envelope_cases[_i].provider);
	ck_assert_str_eq(jstr(j, "model"), envelope_cases[_i].exact);
	ck_assert_str_eq(jstr(j, "request_id"), rid + 14);
	ck_assert(json_is_integer(json_object_get(j, "response_time_ms")));
	/* The cost equals the formula, printed exactly. */
	ck_assert_int_eq(cost_micro(j), cost);
	snprintf(want_cost, sizeof(want_cost), "\"cost\":%lld.%06lld",
	    (long long)(cost / 1000000), (long long)(cost % 1000000));
	while (want_cost[strlen(want_cost) - 1] == '0')
		want_cost[strlen(want_cost) - 1] = '\0';
	ck_assert_msg(strstr(r.body, want_cost) != NULL, "%s not in %s",
	    want_cost, r.body);
	/* data is the provider's body, verbatim. */
	data = json_object_get(j, "data");
	ck_assert_ptr_nonnull(data);
	if (strcmp(envelope_cases[_i].provider, "claude") == 0) {
		ck_assert_str_eq(jstr(data, "type"), "message");
		ck_assert_str_eq(
		    jstr(json_array_get(json_object_get(data, "content"), 0),
			"text"),
		    "Mock reply to: " TEXT);
	} else {
		ck_assert_str_eq(jstr(data, "object"), "chat.completion");
	}
	/* The mock saw the exact model id and our request id. */
	e = suite_mock_find(&S, rid + 14);
	ck_assert_ptr_nonnull(e);
	ck_assert_str_eq(jstr(e, "model"), envelope_cases[_i].exact);
	ck_assert_str_eq(jstr(json_object_get(e, "headers"),
			     strcmp(envelope_cases[_i].provider, "claude") == 0
				 ? "x-api-key"
				 : "authorization"),
	    "<ok>");
	json_decref(e);
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

START_TEST(test_envelope_default_model)
{
	struct h_resp r;
	json_t *j;

	/* DEFAULT_AI_MODEL (claude-3-sonnet), max_tokens defaulted. */
	j = post("/api/v1/ai-proxy/claude/chat",
	    "{\"messages\":[{\"role\":\"user\",\"content\":\"" TEXT "\"}]}",
	    NULL, &r, 200);
	ck_assert_str_eq(jstr(j, "model"), "claude-3-sonnet-20240229");
	ck_assert_int_eq(
	    cost_micro(j), expected_cost("claude-3-sonnet-20240229", TEXT));
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

START_TEST(test_dropin_messages)
{
	const char *body = "{\"model\":\"claude-3-5-haiku\",\"max_tokens\":64,"
			   "\"system\":\"be brief\",\"messages\":[{\"role\":"
			   "\"user\",\"content\":\"" TEXT "\"}],"
			   "\"metadata\":{\"user_id\":\"u1\"}}";
	const char *const hdrs[] = {
	    "anthropic-version: 2023-06-01", "X-Request-ID: dropin-msg", NULL};
	struct h_resp r;
	json_t *j, *u, *e;

	j = post("/v1/messages", body, hdrs, &r, 200);
	/* The provider's body as it came: no envelope. */
	ck_assert_ptr_null(json_object_get(j, "success"));
	ck_assert_str_eq(jstr(j, "type"), "message");
	ck_assert_str_eq(jstr(j, "model"), "claude-3-5-haiku-20241022");
	u = json_object_get(j, "usage");
	/* system counts: strlen("be brief") + strlen(TEXT). */
	ck_assert_int_eq(json_integer_value(json_object_get(u, "input_tokens")),
	    (int64_t)(strlen("be brief") + strlen(TEXT)) / 4 + 1);
	/* Unknown top-level fields reach the provider unchanged. */
	e = suite_mock_find(&S, "dropin-msg");
	ck_assert_ptr_nonnull(e);
	{
		json_t *meta =
		    json_object_get(json_object_get(e, "body"), "metadata");

		ck_assert_str_eq(jstr(meta, "user_id"), "u1");
	}
	json_decref(e);
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

START_TEST(test_dropin_chat_completions)
{
	const char *body =
	    "{\"model\":\"gpt-4.1-nano\",\"messages\":[{\"role\":"
	    "\"developer\",\"content\":\"x\"},{\"role\":"
	    "\"user\",\"content\":\"" TEXT "\"}]}";
	struct h_resp r;
	json_t *j, *u;

	j = post("/v1/chat/completions", body, NULL, &r, 200);
	ck_assert_str_eq(jstr(j, "object"), "chat.completion");
	ck_assert_str_eq(jstr(j, "model"), "gpt-4.1-nano-2025-04-14");
	u = json_object_get(j, "usage");
	ck_assert_int_eq(
	    json_integer_value(json_object_get(u, "prompt_tokens")),
	    (int64_t)(1 + strlen(TEXT)) / 4 + 1);
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

/* Upstream faults and how each route answers them. */
static const struct {
	const char *fault;
	long status;
	const char *code;
	int64_t retry_after_ms; /* 0: no Retry-After expected */
} faults[] = {
    {"status=400", 400, "upstream_bad_request", 0},
    {"status=401", 502, "upstream_auth", 0},
    {"status=403", 502, "upstream_auth", 0},
    {"status=404", 404, "upstream_bad_request", 0},
    {"status=429;retry-after=3", 429, "upstream_rate_limited", 3000},
    {"status=429;retry-after-ms=1500", 429, "upstream_rate_limited", 1500},
    {"status=500", 502, "upstream_error", 0},
    {"status=502", 503, "upstream_unavailable", 0},
    {"status=503", 503, "upstream_unavailable", 0},
    {"status=529", 503, "upstream_unavailable", 0},
    {"status=504", 504, "upstream_timeout", 0},
};

START_TEST(test_fault_envelope)
{
	char body[512], v[32];
	struct h_resp r;
	json_t *j;

	snprintf(body, sizeof(body),
	    "{\"messages\":[{\"role\":\"user\",\"content\":\"hi "
	    "[[mock:%s]]\"}]}",
	    faults[_i].fault);
	j = post(_i % 2 ? "/api/v1/ai-proxy/claude/chat"
			: "/api/v1/ai-proxy/openai/chat",
	    body, NULL, &r, faults[_i].status);
	ck_assert(json_is_false(json_object_get(j, "success")));
	ck_assert(json_is_null(json_object_get(j, "data")));
	ck_assert_str_eq(jstr(j, "error"), faults[_i].code);
	/* A plain message, never the provider's text. */
	ck_assert_ptr_null(strstr(jstr(j, "message"), "Overloaded"));
	ck_assert_ptr_null(strstr(r.body, "invalid x-api-key"));
	if (faults[_i].retry_after_ms > 0) {
		ck_assert_ptr_nonnull(
		    h_resp_header(&r, "Retry-After", v, sizeof(v)));
		ck_assert_int_eq(
		    atoll(v), (faults[_i].retry_after_ms + 999) / 1000);
		ck_assert_ptr_nonnull(
		    h_resp_header(&r, "retry-after-ms", v, sizeof(v)));
		ck_assert_int_eq(atoll(v), faults[_i].retry_after_ms);
	}
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

START_TEST(test_fault_dropin)
{
	char body[512], v[32];
	struct h_resp r;
	json_t *j, *e;

	/* /v1/messages: the provider's error body, the mapped status. */
	snprintf(body, sizeof(body),
	    "{\"model\":\"claude-3-haiku\",\"max_tokens\":5,\"messages\":[{"
	    "\"role\":\"user\",\"content\":\"hi [[mock:%s]]\"}]}",
	    faults[_i].fault);
	j = post("/v1/messages", body, NULL, &r, faults[_i].status);
	ck_assert_str_eq(jstr(j, "type"), "error");
	e = json_object_get(j, "error");
	ck_assert(json_is_string(json_object_get(e, "type")));
	ck_assert(json_is_string(json_object_get(e, "message")));
	if (faults[_i].retry_after_ms > 0) {
		ck_assert_ptr_nonnull(
		    h_resp_header(&r, "Retry-After", v, sizeof(v)));
		ck_assert_int_eq(
		    atoll(v), (faults[_i].retry_after_ms + 999) / 1000);
	}
	json_decref(j);
	h_resp_free(&r);
	/* /v1/chat/completions: OpenAI's shape. */
	snprintf(body, sizeof(body),
	    "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"hi [[mock:%s]]\"}]}",
	    faults[_i].fault);
	j = post("/v1/chat/completions", body, NULL, &r, faults[_i].status);
	e = json_object_get(j, "error");
	ck_assert_ptr_nonnull(e);
	ck_assert(json_is_string(json_object_get(e, "message")));
	ck_assert(json_is_string(json_object_get(e, "type")));
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

START_TEST(test_latency)
{
	struct h_resp r;
	int64_t t0 = clock_mono_ms();
	json_t *j;

	j = post("/api/v1/ai-proxy/claude/chat",
	    "{\"messages\":[{\"role\":\"user\",\"content\":\"hi "
	    "[[mock:latency-ms=400]]\"}]}",
	    NULL, &r, 200);
	/* Timer and millisecond rounding: a few ms of slack. */
	ck_assert_int_ge(clock_mono_ms() - t0, 395);
	ck_assert_int_ge(
	    json_integer_value(json_object_get(j, "response_time_ms")), 380);
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

START_TEST(test_deadline_504)
{
	struct h_resp r;
	int64_t t0 = clock_mono_ms();
	json_t *j;

	/* The provider answers after the deadline: 504. */
	j = post("/api/v1/ai-proxy/openai/chat",
	    "{\"messages\":[{\"role\":\"user\",\"content\":\"hi "
	    "[[mock:latency-ms=6000]]\"}]}",
	    NULL, &r, 504);
	ck_assert_str_eq(jstr(j, "error"), "upstream_timeout");
	ck_assert_int_lt(clock_mono_ms() - t0, TIMEOUT_S * 1000 + 2500);
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

/* The mock's count of connections ever accepted, or -1. */
static long long
mock_connections(void)
{
	struct h_resp r;
	char url[256];
	long long n = -1;
	json_t *j;

	snprintf(url, sizeof(url), "%s/_mock/stats", S.mock.url);
	if (h_http("GET", url, NULL, NULL, 0, 5000, &r) != 0)
		return -1;
	if (r.status == 200 && (j = suite_json(&r)) != NULL) {
		if (json_is_integer(json_object_get(j, "connections")))
			n = json_integer_value(
			    json_object_get(j, "connections"));
		json_decref(j);
	}
	h_resp_free(&r);
	return n;
}

/* N calls at once, each held 500 ms by the mock; asserts all succeed in
 * about one latency, not one after another. */
static void
concurrent_wave(int n)
{
	char url[256];
	const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi "
			   "[[mock:latency-ms=500]]\"}]}";
	pid_t kids[64];
	int64_t t0 = clock_mono_ms();

	ck_assert_int_le(n, 64);
	suite_url(&S, "/api/v1/ai-proxy/claude/chat", url, sizeof(url));
	for (int i = 0; i < n; i++) {
		const char *const h[] = {
		    "Content-Type: application/json", NULL};

		if ((kids[i] = fork()) == 0) {
			struct h_resp r;
			int rv = h_http(
			    "POST", url, h, body, strlen(body), 20000, &r);

			_exit(rv == 0 && r.status == 200 ? 0 : 1);
		}
		ck_assert_int_gt(kids[i], 0);
	}
	for (int i = 0; i < n; i++) {
		int st;

		ck_assert_int_eq(waitpid(kids[i], &st, 0), kids[i]);
		ck_assert_msg(
		    WIFEXITED(st) && WEXITSTATUS(st) == 0, "call %d failed", i);
	}
	ck_assert_int_lt(clock_mono_ms() - t0, 4000);
}

START_TEST(test_concurrent)
{
	/* Many calls in flight at once through the async path.  Then calls
	 * one at a time, and a second wave: the connections the first wave
	 * opened stay idle in the workers' caches and are reused, a handful
	 * of new ones at most (the waves need not split the same way
	 * between the workers).  A cache sized by the calls in flight
	 * (curl's default: 4 per transfer) sheds one per call meanwhile,
	 * and the second wave opens them again. */
	enum { N = 40, SEQ = 24 };
	const char *one = "{\"messages\":[{\"role\":\"user\",\"content\":"
			  "\"one at a time\"}]}";
	long long before, after;
	char url[256];

	concurrent_wave(N);
	suite_url(&S, "/api/v1/ai-proxy/claude/chat", url, sizeof(url));
	for (int i = 0; i < SEQ; i++) {
		const char *const h[] = {
		    "Content-Type: application/json", NULL};
		struct h_resp r;

		ck_assert_int_eq(
		    h_http("POST", url, h, one, strlen(one), 5000, &r), 0);
		ck_assert_int_eq(r.status, 200);
		h_resp_free(&r);
	}
	before = mock_connections();
	ck_assert_int_ge(before, 1);
	concurrent_wave(N);
	after = mock_connections();
	ck_assert_msg(after - before < N / 4,
	    "the second wave opened %lld new upstream connections",
	    after - before);
}
END_TEST

START_TEST(test_no_key_anywhere)
{
	size_t n = 0;
	char *logs;

	/* Access lines are written once a response has gone out. */
	ck_assert_int_eq(
	    h_wait_file_contains(S.gw.log_path, "\"msg\":\"access\"", 5000), 0);
	logs = suite_logs(&S, &n);

	ck_assert_ptr_nonnull(logs);
	ck_assert_uint_gt(n, 0);
	ck_assert_msg(!suite_has_key(logs, n), "a provider key is in a log");
	ck_assert_msg(
	    !suite_has_key(seen, seen_len), "a provider key is in a response");
	/* One access line per request, with the fields. */
	ck_assert_ptr_nonnull(strstr(logs, "\"msg\":\"access\""));
	ck_assert_ptr_nonnull(strstr(logs, "\"cost_micro_usd\":"));
	free(logs);
}
END_TEST

static Suite *
gateway_chat_suite(void)
{
	Suite *s = suite_create("gateway_chat");
	TCase *tc = tcase_create("chat");

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_envelope_success, 0,
	    (int)(sizeof(envelope_cases) / sizeof(envelope_cases[0])));
	tcase_add_test(tc, test_envelope_default_model);
	tcase_add_test(tc, test_dropin_messages);
	tcase_add_test(tc, test_dropin_chat_completions);
	tcase_add_loop_test(tc, test_fault_envelope, 0,
	    (int)(sizeof(faults) / sizeof(faults[0])));
	tcase_add_loop_test(tc, test_fault_dropin, 0,
	    (int)(sizeof(faults) / sizeof(faults[0])));
	tcase_add_test(tc, test_latency);
	tcase_add_test(tc, test_deadline_504);
	tcase_add_test(tc, test_concurrent);
	tcase_add_test(tc, test_no_key_anywhere); /* last */
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	struct suite_opts o = {.workers = 2, .timeout_seconds = TIMEOUT_S};
	char path[4096], err[256];
	SRunner *sr;
	int failed, rv;

	snprintf(path, sizeof(path), "%s/config/models.json", h_source_dir());
	if (models_load(path, &T, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s: %s\n", path, err);
		return 1;
	}
	if ((rv = suite_start(&S, &o)) != 0) {
		fprintf(stderr, "suite_start: %d\n", rv);
		models_free(T);
		return 1;
	}
	sr = srunner_create(gateway_chat_suite());
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	suite_stop(&S);
	if (S.gw_exit != 0) {
		fprintf(stderr, "gateway exit status %d\n", S.gw_exit);
		failed++;
	}
	models_free(T);
	free(seen);
	return failed == 0 ? 0 : 1;
}
