/*
 * Limits at the HTTP level: the gateway asks the ratelimiter before each
 * chat (in-process store here; the Redis store has its own tests), answers
 * 429 with Retry-After and X-RateLimit-* headers, 403 for blocked
 * subjects, and 401 for a forged or expired token.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <check.h>
#include <jansson.h>

#include "clock.h"
#include "jwt.h"
#include "suite.h"

#define JWT_SECRET "limits-test-secret-0123456789abcdef"

static const char *const limit_env[] = {
    "AI_PROXY_RATE_LIMIT_PER_MINUTE=5",
    "AI_PROXY_RATE_LIMIT_PER_HOUR=1000",
    "AI_PROXY_RATE_LIMIT_PER_IP_MINUTE=1000",
    "AI_PROXY_JWT_SECRET=" JWT_SECRET,
    NULL,
};

static struct suite S;
static bool S_up;

static void
setup(void)
{
	struct suite_opts o = {
	    .workers = 1, .gw_env = limit_env, .rl_env = limit_env};

	S_up = suite_have("aiproxy-provider-worker") &&
	       suite_have("aiproxy-ratelimiter");
	if (S_up)
		ck_assert_int_eq(suite_start(&S, &o), 0);
}

static void
teardown(void)
{
	if (S_up)
		suite_stop(&S);
}

static long
chat(const char *session, const char *bearer, struct h_resp *r)
{
	char h1[128], h2[600];
	const char *h[3] = {NULL, NULL, NULL};
	int n = 0;

	if (session != NULL) {
		snprintf(h1, sizeof(h1), "X-Session-ID: %s", session);
		h[n++] = h1;
	}
	if (bearer != NULL) {
		snprintf(h2, sizeof(h2), "Authorization: Bearer %s", bearer);
		h[n++] = h2;
	}
	ck_assert_int_eq(suite_post(&S, "/api/v1/ai-proxy/claude/chat",
			     "{\"messages\":[{\"role\":\"user\","
			     "\"content\":\"hello\"}],\"max_tokens\":16}",
			     h, r),
	    0);
	return r->status;
}

START_TEST(test_minute_limit_then_admitted_again)
{
	struct h_resp r;
	char v[64];
	int64_t deadline;

	if (!S_up)
		return;
	for (int i = 0; i < 5; i++) {
		ck_assert_int_eq(chat("limits-session-0001", NULL, &r), 200);
		ck_assert_ptr_nonnull(
		    h_resp_header(&r, "X-RateLimit-Limit", v, sizeof(v)));
		ck_assert_str_eq(v, "5");
		ck_assert_ptr_nonnull(
		    h_resp_header(&r, "X-RateLimit-Remaining", v, sizeof(v)));
		ck_assert_int_eq(strtol(v, NULL, 10), 4 - i);
		h_resp_free(&r);
	}
	/* The 6th in the minute: refused, says when to come back. */
	ck_assert_int_eq(chat("limits-session-0001", NULL, &r), 429);
	ck_assert_ptr_nonnull(h_resp_header(&r, "Retry-After", v, sizeof(v)));
	ck_assert_int_ge(strtol(v, NULL, 10), 1);
	ck_assert_int_le(strtol(v, NULL, 10), 60);
	ck_assert_ptr_nonnull(
	    h_resp_header(&r, "x-should-retry", v, sizeof(v)));
	ck_assert_str_eq(v, "false");
	{
		json_t *j = suite_json(&r);

		ck_assert_str_eq(json_string_value(json_object_get(j, "error")),
		    "rate_limit_minute");
		json_decref(j);
	}
	h_resp_free(&r);
	/* Its quota says so; only its own numbers. */
	{
		const char *const h[] = {
		    "X-Session-ID: limits-session-0001", NULL};
		json_t *j, *d;

		ck_assert_int_eq(
		    suite_get(&S, "/api/v1/ai-proxy/usage/quota", h, &r), 0);
		ck_assert_int_eq(r.status, 200);
		j = suite_json(&r);
		d = json_object_get(j, "data");
		ck_assert_str_eq(
		    json_string_value(json_object_get(d, "subject_type")),
		    "session");
		ck_assert_int_eq(json_integer_value(json_object_get(
				     json_object_get(d, "minute"), "limit")),
		    5);
		ck_assert_int_eq(
		    json_integer_value(json_object_get(
			json_object_get(d, "minute"), "remaining")),
		    0);
		json_decref(j);
		h_resp_free(&r);
	}
	/* Another session is not affected. */
	ck_assert_int_eq(chat("limits-session-0002", NULL, &r), 200);
	h_resp_free(&r);
	/* GCRA refills one request every 12 s: admitted again within it. */
	deadline = clock_mono_ms() + 15000;
	for (;;) {
		long st = chat("limits-session-0001", NULL, &r);

		h_resp_free(&r);
		if (st == 200)
			break;
		ck_assert_int_eq(st, 429);
		ck_assert_msg(clock_mono_ms() < deadline, "never admitted");
		nanosleep(&(struct timespec){0, 250000000L}, NULL);
	}
}
END_TEST

START_TEST(test_tokens)
{
	char token[512];
	struct h_resp r;
	char payload[128];
	long now = (long)(clock_real_ms() / 1000);

	if (!S_up)
		return;
	/* A valid token: a user subject, admitted. */
	snprintf(payload, sizeof(payload), "{\"sub\":\"user-42\",\"exp\":%ld}",
	    now + 600);
	ck_assert_int_eq(jwt_hs256_sign(payload, JWT_SECRET, strlen(JWT_SECRET),
			     token, sizeof(token)),
	    0);
	ck_assert_int_eq(chat(NULL, token, &r), 200);
	h_resp_free(&r);
	/* Expired. */
	snprintf(payload, sizeof(payload), "{\"sub\":\"user-42\",\"exp\":%ld}",
	    now - 600);
	ck_assert_int_eq(jwt_hs256_sign(payload, JWT_SECRET, strlen(JWT_SECRET),
			     token, sizeof(token)),
	    0);
	ck_assert_int_eq(chat(NULL, token, &r), 401);
	h_resp_free(&r);
	/* Forged: signed with another secret. */
	snprintf(payload, sizeof(payload), "{\"sub\":\"user-42\",\"exp\":%ld}",
	    now + 600);
	ck_assert_int_eq(
	    jwt_hs256_sign(payload, "not-the-secret-at-all-000",
		strlen("not-the-secret-at-all-000"), token, sizeof(token)),
	    0);
	ck_assert_int_eq(chat(NULL, token, &r), 401);
	{
		json_t *j = suite_json(&r);

		ck_assert_str_eq(json_string_value(json_object_get(j, "error")),
		    "invalid_token");
		json_decref(j);
	}
	h_resp_free(&r);
}
END_TEST

/* AI_PROXY_RATE_LIMIT_ENABLED=false: the same tight limits, never
 * applied, and no X-RateLimit-* headers. */
START_TEST(test_limits_off)
{
	static const char *const off_env[] = {
	    "AI_PROXY_RATE_LIMIT_PER_MINUTE=2",
	    "AI_PROXY_RATE_LIMIT_PER_IP_MINUTE=2",
	    "AI_PROXY_RATE_LIMIT_ENABLED=false",
	    NULL,
	};
	struct suite_opts o = {
	    .workers = 1, .gw_env = off_env, .rl_env = off_env};
	struct suite off;
	struct h_resp r;
	char *logs, v[64];

	if (!S_up)
		return;
	ck_assert_int_eq(suite_start(&off, &o), 0);
	for (int i = 0; i < 6; i++) {
		ck_assert_int_eq(
		    suite_post(&off, "/api/v1/ai-proxy/claude/chat",
			"{\"messages\":[{\"role\":\"user\","
			"\"content\":\"hello\"}],"
			"\"max_tokens\":16}",
			(const char *const[]){
			    "X-Session-ID: limits-off-session-01", NULL},
			&r),
		    0);
		ck_assert_msg(r.status == 200, "request %d: %ld %s", i,
		    r.status, r.body ? r.body : "");
		ck_assert_ptr_null(
		    h_resp_header(&r, "X-RateLimit-Limit", v, sizeof(v)));
		h_resp_free(&r);
	}
	logs = suite_logs(&off, NULL);
	ck_assert_ptr_nonnull(
	    strstr(logs, "AI_PROXY_RATE_LIMIT_ENABLED=false"));
	free(logs);
	suite_stop(&off);
}
END_TEST

static Suite *
limits_suite(void)
{
	Suite *su = suite_create("gateway_limits");
	TCase *tc = tcase_create("limits");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_minute_limit_then_admitted_again);
	tcase_add_test(tc, test_tokens);
	tcase_add_test(tc, test_limits_off);
	suite_add_tcase(su, tc);
	return su;
}

int
main(void)
{
	SRunner *sr = srunner_create(limits_suite());
	int failed;

	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
