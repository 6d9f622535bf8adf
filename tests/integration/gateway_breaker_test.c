/*
 * Resilience through the whole path (gateway, real provider-workers, the
 * mock upstream's fault injection, its request log as the proof of what
 * reached the provider): the circuit breaker opens after
 * CIRCUIT_BREAKER_FAILURE_THRESHOLD failures and then fails fast without
 * an upstream call; after the recovery timeout exactly one probe goes
 * out under 50 concurrent requests; a breaker tripped in one worker is
 * open in the other within a second; the admin reset closes it
 * everywhere; a 429 with retry-after: 1 is retried after >= 1 s and
 * answered 200; a provider that is down is served by its fallback
 * upstream, which the envelope and the headers name; the status
 * endpoint shows the numbers the test caused.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "clock.h"
#include "suite.h"

#define CHAT  "/api/v1/ai-proxy/claude/chat"
#define STATS "/api/v1/ai-proxy/providers/status"

static const char *const admin_hdr[] = {
    "Authorization: Bearer " SUITE_ADMIN_KEY, NULL};

/* POSTs a claude chat whose user text is text, with X-Request-ID rid. */
static void
chat(struct suite *s, const char *rid, const char *text, struct h_resp *r)
{
	char body[512], hdr[128];
	const char *const h[] = {hdr, NULL};

	snprintf(hdr, sizeof(hdr), "X-Request-ID: %s", rid);
	snprintf(body, sizeof(body),
	    "{\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}", text);
	ck_assert_int_eq(suite_post(s, CHAT, body, h, r), 0);
}

static json_t *
body_json(const struct h_resp *r)
{
	json_t *j = suite_json(r);

	ck_assert_msg(j != NULL, "not JSON: %s", r->body);
	return j;
}

static const char *
jstr(json_t *j, const char *key)
{
	const char *v = json_string_value(json_object_get(j, key));

	return v != NULL ? v : "";
}

static long long
jint(json_t *j, const char *key)
{
	return (long long)json_integer_value(json_object_get(j, key));
}

/* How many requests of the mock's log carry this X-Request-ID. */
static int
mock_count(const char *mock_url, const char *rid)
{
	struct h_resp r;
	char url[256];
	json_t *all, *e;
	size_t i;
	int n = 0;

	snprintf(url, sizeof(url), "%s/_mock/requests", mock_url);
	ck_assert_int_eq(h_http("GET", url, NULL, NULL, 0, 5000, &r), 0);
	all = suite_json(&r);
	h_resp_free(&r);
	ck_assert_ptr_nonnull(all);
	json_array_foreach(all, i, e) {
		const char *v = json_string_value(json_object_get(
		    json_object_get(e, "headers"), "x-request-id"));

		if (rid == NULL || (v != NULL && strcmp(v, rid) == 0))
			n++;
	}
	json_decref(all);
	return n;
}

/* The mock's default fault for every chat request ("" resets). */
static void
mock_fault(const char *mock_url, const char *fault)
{
	struct h_resp r;
	char url[256], body[256];
	const char *const h[] = {"Content-Type: application/json", NULL};

	snprintf(url, sizeof(url), "%s/_mock/config", mock_url);
	snprintf(body, sizeof(body), "{\"fault\":\"%s\",\"count\":-1}", fault);
	ck_assert_int_eq(
	    h_http("POST", url, h, body, strlen(body), 5000, &r), 0);
	ck_assert_msg(r.status == 200, "mock config: %ld", r.status);
	h_resp_free(&r);
}

/* data.providers.<prov> of the status endpoint.  Caller decrefs the
 * returned root (*ret_root). */
static json_t *
status_of(struct suite *s, const char *prov, json_t **ret_root)
{
	struct h_resp r;
	json_t *j, *p;

	ck_assert_int_eq(suite_get(s, STATS, NULL, &r), 0);
	ck_assert_msg(r.status == 200, "status: %ld %s", r.status, r.body);
	j = body_json(&r);
	h_resp_free(&r);
	ck_assert(json_is_true(json_object_get(j, "success")));
	p = json_object_get(
	    json_object_get(json_object_get(j, "data"), "providers"), prov);
	ck_assert_msg(p != NULL, "no %s in the status", prov);
	*ret_root = j;
	return p;
}

/* Polls the status until claude's field key equals want (integer) and
 * its state is state (NULL: any).  Returns the ms waited. */
static int64_t
status_wait(struct suite *s, const char *state, const char *key, long long want,
    int timeout_ms)
{
	int64_t t0 = clock_mono_ms();
	struct timespec nap = {0, 10 * 1000000L};
	json_t *root, *p;

	for (;;) {
		bool ok;

		p = status_of(s, "claude", &root);
		ok = (state == NULL || strcmp(jstr(p, "state"), state) == 0) &&
		     (key == NULL || jint(p, key) == want);
		if (!ok && clock_mono_ms() - t0 > timeout_ms) {
			char *d = json_dumps(p, JSON_COMPACT);

			ck_abort_msg("status never showed %s %s=%lld: %s",
			    state ? state : "", key ? key : "", want, d);
		}
		json_decref(root);
		if (ok)
			return clock_mono_ms() - t0;
		nanosleep(&nap, NULL);
	}
}

static void
assert_fast_fail(const struct h_resp *r)
{
	char v[64];
	json_t *j;

	ck_assert_msg(r->status == 503, "status %ld: %s", r->status, r->body);
	j = body_json(r);
	ck_assert_str_eq(jstr(j, "error"), "provider_unavailable");
	json_decref(j);
	ck_assert_ptr_nonnull(h_resp_header(r, "Retry-After", v, sizeof(v)));
	ck_assert_int_ge(strtol(v, NULL, 10), 1);
}

/* ---- the breaker opens, fails fast, and the status says so ---- */

START_TEST(test_breaker_opens_fast_fails)
{
	static const char *const wenv[] = {
	    "CIRCUIT_BREAKER_FAILURE_THRESHOLD=5",
	    "CIRCUIT_BREAKER_RECOVERY_TIMEOUT=30", NULL};
	struct suite_opts o = {
	    .workers = 1, .no_rl_acct = true, .worker_env = wenv};
	struct suite s;
	struct h_resp r;
	char rid[32], v[64];
	json_t *root, *p, *err;

	ck_assert_int_eq(suite_start(&s, &o), 0);
	/* One success first: the status shows a latency and a success. */
	chat(&s, "ok-1", "hello", &r);
	ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
	h_resp_free(&r);
	for (int i = 1; i <= 5; i++) {
		snprintf(rid, sizeof(rid), "fail-%d", i);
		chat(&s, rid, "boom [[mock:status=503]]", &r);
		ck_assert_msg(r.status == 503, "%s: %ld", rid, r.status);
		ck_assert_ptr_nonnull(strstr(r.body, "upstream_unavailable"));
		h_resp_free(&r);
	}
	ck_assert_int_eq(mock_count(s.mock.url, NULL), 6);
	/* The 6th fails fast and never reaches the mock. */
	chat(&s, "fast-6", "hello again", &r);
	assert_fast_fail(&r);
	ck_assert_ptr_nonnull(h_resp_header(&r, "Retry-After", v, sizeof(v)));
	ck_assert_msg(strtol(v, NULL, 10) >= 29 && strtol(v, NULL, 10) <= 30,
	    "Retry-After %s", v);
	h_resp_free(&r);
	ck_assert_int_eq(mock_count(s.mock.url, "fast-6"), 0);
	ck_assert_int_eq(mock_count(s.mock.url, NULL), 6);

	/* The status: exactly what was sent. */
	status_wait(&s, "open", "requests_per_minute", 7, 3000);
	p = status_of(&s, "claude", &root);
	ck_assert_int_eq(jint(p, "workers"), 1);
	ck_assert_int_eq(jint(p, "open_workers"), 1);
	ck_assert_int_eq(jint(p, "consecutive_failures"), 5);
	ck_assert_int_eq(jint(p, "window_attempts"), 6);
	ck_assert_int_eq(jint(p, "window_failures"), 5);
	ck_assert_double_eq_tol(
	    json_real_value(json_object_get(p, "failure_rate")), 5.0 / 6.0,
	    0.001);
	ck_assert_int_ge(jint(p, "retry_after_s"), 28);
	ck_assert_int_eq(jint(p, "in_flight"), 0);
	err = json_object_get(p, "last_error");
	ck_assert_str_eq(jstr(err, "code"), "upstream_unavailable");
	ck_assert_int_eq(jint(err, "status"), 503);
	ck_assert_int_gt(jint(err, "at_ms"), 0);
	ck_assert_int_gt(jint(p, "last_success_ms"), 0);
	ck_assert(json_is_integer(
	    json_object_get(json_object_get(p, "latency_ms"), "p50")));
	ck_assert(json_is_integer(
	    json_object_get(json_object_get(p, "latency_ms"), "p95")));
	ck_assert(json_is_null(json_object_get(p, "fallback")));
	json_decref(root);
	/* openai saw nothing. */
	p = status_of(&s, "openai", &root);
	ck_assert_str_eq(jstr(p, "state"), "closed");
	ck_assert_int_eq(jint(p, "requests_per_minute"), 0);
	json_decref(root);
	suite_stop(&s);
}
END_TEST

/* ---- after the recovery timeout: one probe among 50 ---- */

struct call {
	struct suite *s;
	char rid[32];
	struct h_resp r;
};

static void *
call_main(void *arg)
{
	struct call *c = arg;

	chat(c->s, c->rid, "probe me", &c->r);
	return NULL;
}

START_TEST(test_half_open_one_probe)
{
	static const char *const wenv[] = {
	    "CIRCUIT_BREAKER_FAILURE_THRESHOLD=1",
	    "CIRCUIT_BREAKER_RECOVERY_TIMEOUT=1", NULL};
	struct suite_opts o = {
	    .workers = 1, .no_rl_acct = true, .worker_env = wenv};
	static struct call calls[50];
	pthread_t th[50];
	struct suite s;
	struct h_resp r;
	int64_t tripped;
	int ok = 0, fast = 0;

	ck_assert_int_eq(suite_start(&s, &o), 0);
	chat(&s, "trip-1", "boom [[mock:status=529]]", &r);
	tripped = clock_mono_ms();
	ck_assert_msg(r.status == 503, "%ld %s", r.status, r.body);
	h_resp_free(&r);
	chat(&s, "still-open", "hello", &r);
	assert_fast_fail(&r);
	h_resp_free(&r);
	/* Every upstream answer now takes two seconds: the probe is still out
	 * while the 49 others arrive. */
	mock_fault(s.mock.url, "latency-ms=2000");
	/* Wait out the recovery timeout (a time, not an event). */
	while (clock_mono_ms() - tripped < 1100)
		usleep(20000);
	for (int i = 0; i < 50; i++) {
		calls[i].s = &s;
		snprintf(calls[i].rid, sizeof(calls[i].rid), "probe-%d", i);
		ck_assert_int_eq(
		    pthread_create(&th[i], NULL, call_main, &calls[i]), 0);
	}
	for (int i = 0; i < 50; i++) {
		pthread_join(th[i], NULL);
		if (calls[i].r.status == 200)
			ok++;
		else if (calls[i].r.status == 503 &&
			 strstr(calls[i].r.body, "provider_unavailable") !=
			     NULL)
			fast++;
		h_resp_free(&calls[i].r);
	}
	ck_assert_msg(
	    ok == 1 && fast == 49, "%d answered, %d failed fast", ok, fast);
	/* The mock saw the trip and exactly one probe. */
	ck_assert_int_eq(mock_count(s.mock.url, NULL), 2);
	/* The probe's success closed the breaker. */
	mock_fault(s.mock.url, "");
	chat(&s, "after", "hello", &r);
	ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
	h_resp_free(&r);
	status_wait(&s, "closed", "consecutive_failures", 0, 3000);
	suite_stop(&s);
}
END_TEST

/* ---- two workers: one trips, both are open, so is a third that joins
 * later; the reset closes all ---- */

START_TEST(test_shared_and_reset)
{
	static const char *const wenv[] = {
	    "CIRCUIT_BREAKER_FAILURE_THRESHOLD=3",
	    "CIRCUIT_BREAKER_RECOVERY_TIMEOUT=30", NULL};
	struct suite_opts o = {
	    .workers = 2, .no_rl_acct = true, .worker_env = wenv};
	struct suite s;
	struct h_resp r;
	char rid[32];
	json_t *root, *p;
	int64_t waited;
	int i, seen_before;

	ck_assert_int_eq(suite_start(&s, &o), 0);
	/* Both workers report. */
	status_wait(&s, "closed", "workers", 2, 5000);
	/* Failures until one worker's breaker opens (3 of its own). */
	for (i = 1; i <= 8; i++) {
		snprintf(rid, sizeof(rid), "sh-fail-%d", i);
		chat(&s, rid, "boom [[mock:status=500]]", &r);
		h_resp_free(&r);
		p = status_of(&s, "claude", &root);
		if (strcmp(jstr(p, "state"), "open") == 0) {
			json_decref(root);
			break;
		}
		json_decref(root);
	}
	ck_assert_msg(i <= 8, "no breaker opened");
	/* Within a second, the other worker's breaker is open too. */
	waited = status_wait(&s, "open", "open_workers", 2, 1000);
	ck_assert_int_lt(waited, 1000);
	/* Whichever worker takes them, nothing reaches the mock now. */
	seen_before = mock_count(s.mock.url, NULL);
	for (i = 0; i < 6; i++) {
		snprintf(rid, sizeof(rid), "sh-fast-%d", i);
		chat(&s, rid, "hello", &r);
		assert_fast_fail(&r);
		h_resp_free(&r);
	}
	ck_assert_int_eq(mock_count(s.mock.url, NULL), seen_before);
	/* A worker that joins after the trip is told by the gateway. */
	ck_assert_int_eq(suite_add_worker(&s), 0);
	ck_assert_int_eq(suite_wait_workers(&s, 3, 10000), 0);
	status_wait(&s, "open", "open_workers", 3, 5000);

	/* The reset: admin only, known providers only, then closed
	 * everywhere. */
	ck_assert_int_eq(
	    suite_post(&s, "/api/v1/ai-proxy/circuit-breaker/claude/reset",
		NULL, NULL, &r),
	    0);
	ck_assert_int_eq(r.status, 401);
	h_resp_free(&r);
	ck_assert_int_eq(
	    suite_post(&s, "/api/v1/ai-proxy/circuit-breaker/gemini/reset",
		NULL, admin_hdr, &r),
	    0);
	ck_assert_int_eq(r.status, 404);
	h_resp_free(&r);
	ck_assert_int_eq(
	    suite_post(&s, "/api/v1/ai-proxy/circuit-breaker/claude/reset",
		NULL, admin_hdr, &r),
	    0);
	ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
	h_resp_free(&r);
	status_wait(&s, "closed", "open_workers", 0, 1000);
	p = status_of(&s, "claude", &root);
	ck_assert_int_eq(jint(p, "workers"), 3);
	ck_assert_int_eq(jint(p, "consecutive_failures"), 0);
	json_decref(root);
	/* Both workers call the provider again. */
	for (i = 0; i < 4; i++) {
		snprintf(rid, sizeof(rid), "sh-ok-%d", i);
		chat(&s, rid, "hello", &r);
		ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
		h_resp_free(&r);
		ck_assert_int_eq(mock_count(s.mock.url, rid), 1);
	}
	suite_stop(&s);
}
END_TEST

/* ---- retries ---- */

START_TEST(test_retry_after_429)
{
	static const char *const wenv[] = {"AI_PROXY_MAX_RETRIES=2", NULL};
	struct suite_opts o = {.workers = 1,
	    .no_rl_acct = true,
	    .worker_env = wenv,
	    .timeout_seconds = 3};
	struct suite s;
	struct h_resp r;
	json_t *all, *e;
	int64_t t0, ms, ts[3];
	char v[64];
	size_t i;
	int n = 0;

	ck_assert_int_eq(suite_start(&s, &o), 0);
	t0 = clock_mono_ms();
	chat(&s, "r429",
	    "retry me [[mock:status=429;retry-after=1;fail-first=1;key=k429]]",
	    &r);
	ms = clock_mono_ms() - t0;
	ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
	ck_assert_msg(ms >= 1000, "answered after %lld ms", (long long)ms);
	h_resp_free(&r);
	/* The mock saw two attempts, at least a second apart. */
	all = suite_mock_requests(&s);
	ck_assert_ptr_nonnull(all);
	json_array_foreach(all, i, e) {
		const char *rid = json_string_value(json_object_get(
		    json_object_get(e, "headers"), "x-request-id"));

		if (rid != NULL && strcmp(rid, "r429") == 0 && n < 3)
			ts[n++] = jint(e, "ts_ms");
	}
	json_decref(all);
	ck_assert_int_eq(n, 2);
	ck_assert_int_ge(ts[1] - ts[0], 1000);

	/* A provider that keeps failing: 1 + 2 attempts, then the error,
	 * with x-should-retry: false so the SDKs do not multiply them. */
	chat(&s, "r503", "boom [[mock:status=503]]", &r);
	ck_assert_msg(r.status == 503, "%ld %s", r.status, r.body);
	ck_assert_ptr_nonnull(
	    h_resp_header(&r, "x-should-retry", v, sizeof(v)));
	ck_assert_str_eq(v, "false");
	h_resp_free(&r);
	ck_assert_int_eq(mock_count(s.mock.url, "r503"), 3);
	/* A stream whose upstream answered an error before any event is
	 * retried too: the client sees only the good stream. */
	{
		const char *const h[] = {"X-Request-ID: rstream", NULL};

		ck_assert_int_eq(
		    suite_post(&s, "/v1/messages",
			"{\"model\":\"claude-3-haiku\",\"max_tokens\":50,"
			"\"stream\":true,\"messages\":[{\"role\":\"user\","
			"\"content\":\"hi [[mock:status=529;fail-first=1;"
			"key=kstream]]\"}]}",
			h, &r),
		    0);
		ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
		ck_assert_ptr_nonnull(strstr(r.body, "event: message_stop"));
		ck_assert_ptr_null(strstr(r.body, "overloaded"));
		h_resp_free(&r);
		ck_assert_int_eq(mock_count(s.mock.url, "rstream"), 2);
	}
	/* A retry-after past the deadline (3 s): no retry, the 429 and its
	 * Retry-After go to the client at once. */
	t0 = clock_mono_ms();
	chat(&s, "rlate", "later [[mock:status=429;retry-after=5]]", &r);
	ms = clock_mono_ms() - t0;
	ck_assert_msg(r.status == 429, "%ld %s", r.status, r.body);
	ck_assert_msg(ms < 1000, "answered after %lld ms", (long long)ms);
	ck_assert_ptr_nonnull(h_resp_header(&r, "Retry-After", v, sizeof(v)));
	ck_assert_str_eq(v, "5");
	h_resp_free(&r);
	ck_assert_int_eq(mock_count(s.mock.url, "rlate"), 1);
	/* A client error is not retried. */
	chat(&s, "r400", "bad [[mock:status=400]]", &r);
	ck_assert_int_eq(r.status, 400);
	h_resp_free(&r);
	ck_assert_int_eq(mock_count(s.mock.url, "r400"), 1);
	suite_stop(&s);
}
END_TEST

/* ---- failover to a second upstream of the same provider ---- */

START_TEST(test_failover)
{
	struct h_mock fb;
	char fbenv[128];
	const char *wenv[] = {
	    fbenv, "CLAUDE_FALLBACK_API_KEY=" SUITE_ANTHROPIC_KEY, NULL};
	struct suite_opts o = {
	    .workers = 1, .no_rl_acct = true, .worker_env = wenv};
	struct suite s;
	struct h_resp r;
	char v[64];
	json_t *j, *root, *p;

	ck_assert_int_eq(
	    h_mock_start(&fb, SUITE_ANTHROPIC_KEY, SUITE_OPENAI_KEY), 0);
	snprintf(fbenv, sizeof(fbenv), "CLAUDE_FALLBACK_BASE_URL=%s", fb.url);
	ck_assert_int_eq(suite_start(&s, &o), 0);
	/* Healthy primary: it serves, no fallback. */
	chat(&s, "fo-1", "hello", &r);
	ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
	ck_assert_ptr_null(h_resp_header(&r, "X-AI-Proxy-Fallback", v, 64));
	h_resp_free(&r);
	ck_assert_int_eq(mock_count(s.mock.url, "fo-1"), 1);
	ck_assert_int_eq(mock_count(fb.url, "fo-1"), 0);
	/* The primary is down: the fallback answers, and says so. */
	mock_fault(s.mock.url, "status=503");
	chat(&s, "fo-2", "hello", &r);
	ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
	ck_assert_ptr_nonnull(
	    h_resp_header(&r, "X-AI-Proxy-Fallback", v, sizeof(v)));
	ck_assert_str_eq(v, "true");
	ck_assert_ptr_nonnull(
	    h_resp_header(&r, "X-AI-Proxy-Provider", v, sizeof(v)));
	ck_assert_str_eq(v, "claude");
	ck_assert_ptr_nonnull(
	    h_resp_header(&r, "X-AI-Proxy-Model", v, sizeof(v)));
	j = body_json(&r);
	ck_assert(json_is_true(json_object_get(j, "success")));
	ck_assert(json_is_true(json_object_get(j, "fallback")));
	ck_assert_str_eq(jstr(j, "provider"), "claude");
	ck_assert_str_eq(jstr(j, "model"), v);
	json_decref(j);
	h_resp_free(&r);
	ck_assert_int_eq(mock_count(s.mock.url, "fo-2"), 1);
	ck_assert_int_eq(mock_count(fb.url, "fo-2"), 1);
	/* The status shows the fallback upstream. */
	status_wait(&s, NULL, "window_failures", 1, 3000);
	p = status_of(&s, "claude", &root);
	ck_assert_int_eq(
	    jint(json_object_get(p, "fallback"), "window_attempts"), 1);
	ck_assert_str_eq(
	    jstr(json_object_get(p, "fallback"), "state"), "closed");
	json_decref(root);
	suite_stop(&s);
	h_mock_stop(&fb);
}
END_TEST

/* The log entry of rid on the mock at mock_url.  Caller decrefs. */
static json_t *
oa_entry(const char *mock_url, const char *rid)
{
	struct h_resp r;
	char url[256];
	json_t *all, *e, *found = NULL;
	size_t i;

	snprintf(url, sizeof(url), "%s/_mock/requests", mock_url);
	ck_assert_int_eq(h_http("GET", url, NULL, NULL, 0, 5000, &r), 0);
	all = suite_json(&r);
	h_resp_free(&r);
	json_array_foreach(all, i, e) {
		const char *v = json_string_value(json_object_get(
		    json_object_get(e, "headers"), "x-request-id"));

		if (v != NULL && strcmp(v, rid) == 0)
			found = json_incref(e);
	}
	json_decref(all);
	ck_assert_ptr_nonnull(found);
	return found;
}

/* ---- failover across providers: claude -> openai, with a model map ---- */

START_TEST(test_cross_provider_failover)
{
	struct h_mock oa;
	char oaenv[128];
	const char *wenv[] = {
	    oaenv, "AI_PROXY_FALLBACK_MODEL_MAP=*=gpt-4o-mini", NULL};
	struct suite_opts o = {
	    .workers = 1, .no_rl_acct = true, .worker_env = wenv};
	struct suite s;
	struct h_resp r;
	char v[64];
	json_t *j, *d, *e;

	/* OpenAI on a mock of its own, so the Anthropic one can fail. */
	ck_assert_int_eq(
	    h_mock_start(&oa, SUITE_ANTHROPIC_KEY, SUITE_OPENAI_KEY), 0);
	snprintf(oaenv, sizeof(oaenv), "OPENAI_BASE_URL=%s", oa.url);
	ck_assert_int_eq(suite_start(&s, &o), 0);
	mock_fault(s.mock.url, "status=529");
	chat(&s, "x-1", "hello there", &r);
	ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
	ck_assert_ptr_nonnull(
	    h_resp_header(&r, "X-AI-Proxy-Provider", v, sizeof(v)));
	ck_assert_str_eq(v, "openai");
	ck_assert_ptr_nonnull(
	    h_resp_header(&r, "X-AI-Proxy-Model", v, sizeof(v)));
	/* The exact id of the mapped alias. */
	ck_assert_str_eq(v, "gpt-4o-mini-2024-07-18");
	ck_assert_ptr_nonnull(
	    h_resp_header(&r, "X-AI-Proxy-Fallback", v, sizeof(v)));
	j = body_json(&r);
	ck_assert(json_is_true(json_object_get(j, "fallback")));
	ck_assert_str_eq(jstr(j, "provider"), "openai");
	ck_assert_str_eq(jstr(j, "model"), "gpt-4o-mini-2024-07-18");
	ck_assert(json_real_value(json_object_get(j, "cost")) > 0 ||
		  json_integer_value(json_object_get(j, "cost")) > 0);
	/* Anthropic's shape, as the client asked. */
	d = json_object_get(j, "data");
	ck_assert_str_eq(jstr(d, "type"), "message");
	ck_assert_ptr_nonnull(strstr(
	    jstr(json_array_get(json_object_get(d, "content"), 0), "text"),
	    "Mock reply to: hello there"));
	json_decref(j);
	h_resp_free(&r);
	/* Anthropic was tried once, OpenAI answered with the mapped model. */
	ck_assert_int_eq(mock_count(s.mock.url, "x-1"), 1);
	ck_assert_int_eq(mock_count(oa.url, "x-1"), 1);
	e = oa_entry(oa.url, "x-1");
	ck_assert_str_eq(jstr(e, "model"), "gpt-4o-mini-2024-07-18");
	ck_assert_str_eq(jstr(e, "path"), "/v1/chat/completions");
	json_decref(e);
	suite_stop(&s);
	h_mock_stop(&oa);
}
END_TEST

/* ---- and the other way: openai -> claude ---- */

START_TEST(test_cross_provider_failover_openai)
{
	struct h_mock an;
	char anenv[128];
	const char *wenv[] = {anenv,
	    "AI_PROXY_FALLBACK_MODEL_MAP=*=gpt-4o-mini,*=claude-3-haiku", NULL};
	struct suite_opts o = {
	    .workers = 1, .no_rl_acct = true, .worker_env = wenv};
	const char *const h[] = {"X-Request-ID: xo-1", NULL};
	struct suite s;
	struct h_resp r;
	char v[64];
	json_t *j, *d, *msg;

	ck_assert_int_eq(
	    h_mock_start(&an, SUITE_ANTHROPIC_KEY, SUITE_OPENAI_KEY), 0);
	snprintf(anenv, sizeof(anenv), "CLAUDE_BASE_URL=%s", an.url);
	ck_assert_int_eq(suite_start(&s, &o), 0);
	mock_fault(s.mock.url, "status=503");
	ck_assert_int_eq(suite_post(&s, "/api/v1/ai-proxy/openai/chat",
			     "{\"messages\":[{\"role\":\"user\",\"content\":"
			     "\"hello there\"}]}",
			     h, &r),
	    0);
	ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
	ck_assert_ptr_nonnull(
	    h_resp_header(&r, "X-AI-Proxy-Provider", v, sizeof(v)));
	ck_assert_str_eq(v, "claude");
	j = body_json(&r);
	ck_assert(json_is_true(json_object_get(j, "fallback")));
	ck_assert_str_eq(jstr(j, "provider"), "claude");
	ck_assert_str_eq(jstr(j, "model"), "claude-3-haiku-20240307");
	/* OpenAI's shape, as the client asked. */
	d = json_object_get(j, "data");
	ck_assert_str_eq(jstr(d, "object"), "chat.completion");
	msg = json_object_get(
	    json_array_get(json_object_get(d, "choices"), 0), "message");
	ck_assert_ptr_nonnull(
	    strstr(jstr(msg, "content"), "Mock reply to: hello there"));
	json_decref(j);
	h_resp_free(&r);
	ck_assert_int_eq(mock_count(s.mock.url, "xo-1"), 1);
	ck_assert_int_eq(mock_count(an.url, "xo-1"), 1);
	suite_stop(&s);
	h_mock_stop(&an);
}
END_TEST

static Suite *
gateway_breaker_suite(void)
{
	Suite *s = suite_create("gateway_breaker");
	TCase *tc = tcase_create("breaker");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_breaker_opens_fast_fails);
	tcase_add_test(tc, test_half_open_one_probe);
	tcase_add_test(tc, test_shared_and_reset);
	tcase_add_test(tc, test_retry_after_429);
	tcase_add_test(tc, test_failover);
	tcase_add_test(tc, test_cross_provider_failover);
	tcase_add_test(tc, test_cross_provider_failover_openai);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(gateway_breaker_suite());
	int failed;

	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
