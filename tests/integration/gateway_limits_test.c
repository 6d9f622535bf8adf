/*
 * Limits at the HTTP level: the gateway asks the ratelimiter before each
 * chat (in-process store here; the Redis store has its own tests), answers
 * 429 with Retry-After and X-RateLimit-* headers, 403 for blocked
 * subjects, and 401 for a forged or expired token.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "clock.h"
#include "jwt.h"
#include "proto.h"
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

/* Settles travel in batches: after 12 concurrent chats of one session
 * its quota shows nothing reserved and exactly the envelopes' costs used,
 * and the gateway counts 12 settles in at most 12 batches. */
#define SETTLE_CHATS 12

struct settle_chat {
	struct suite *s;
	double cost;
	long status;
};

static void *
settle_chat_main(void *arg)
{
	struct settle_chat *c = arg;
	const char *const h[] = {"X-Session-ID: settle-batch-session-01", NULL};
	struct h_resp r;
	json_t *j;

	if (suite_post(c->s, "/api/v1/ai-proxy/claude/chat",
		"{\"messages\":[{\"role\":\"user\",\"content\":\"settle "
		"me\"}],\"max_tokens\":64}",
		h, &r) != 0)
		return NULL;
	c->status = r.status;
	if ((j = suite_json(&r)) != NULL) {
		c->cost = json_number_value(json_object_get(j, "cost"));
		json_decref(j);
	}
	h_resp_free(&r);
	return NULL;
}

/* A counter of the gateway's status payload, or -1. */
static long long
gateway_counter(struct suite *s, const char *name)
{
	json_t *j = suite_gateway_status(s);
	long long v = -1;

	ck_assert_ptr_nonnull(j);
	if (json_is_integer(json_object_get(j, name)))
		v = json_integer_value(json_object_get(j, name));
	json_decref(j);
	return v;
}

START_TEST(test_settles_batched)
{
	static const char *const env[] = {
	    "AI_PROXY_RATE_LIMIT_PER_MINUTE=1000",
	    "AI_PROXY_RATE_LIMIT_PER_IP_MINUTE=1000",
	    "AI_PROXY_COST_LIMIT_DAILY=5",
	    NULL,
	};
	struct suite_opts o = {.workers = 1, .gw_env = env, .rl_env = env};
	const char *const h[] = {"X-Session-ID: settle-batch-session-01", NULL};
	struct settle_chat c[SETTLE_CHATS];
	pthread_t t[SETTLE_CHATS];
	struct suite s;
	double sum = 0, used = -1, reserved = -1;
	long long settles, batches;
	int64_t deadline;

	if (!S_up)
		return;
	ck_assert_int_eq(suite_start(&s, &o), 0);
	for (int i = 0; i < SETTLE_CHATS; i++) {
		c[i] = (struct settle_chat){&s, 0, 0};
		ck_assert_int_eq(
		    pthread_create(&t[i], NULL, settle_chat_main, &c[i]), 0);
	}
	for (int i = 0; i < SETTLE_CHATS; i++) {
		pthread_join(t[i], NULL);
		ck_assert_msg(
		    c[i].status == 200, "chat %d: %ld", i, c[i].status);
		ck_assert(c[i].cost > 0);
		sum += c[i].cost;
	}
	/* Settled within a few ms of the answers: poll briefly. */
	deadline = clock_mono_ms() + 3000;
	while (clock_mono_ms() < deadline) {
		struct h_resp r;
		json_t *j, *cost;

		ck_assert_int_eq(
		    suite_get(&s, "/api/v1/ai-proxy/usage/quota", h, &r), 0);
		ck_assert_int_eq(r.status, 200);
		j = suite_json(&r);
		cost = json_object_get(
		    json_object_get(json_object_get(j, "data"), "cost_today"),
		    "used_usd");
		used = json_number_value(cost);
		reserved = json_number_value(json_object_get(
		    json_object_get(json_object_get(j, "data"), "cost_today"),
		    "reserved_usd"));
		json_decref(j);
		h_resp_free(&r);
		if (reserved == 0)
			break;
		usleep(20000);
	}
	ck_assert_msg(reserved == 0, "still reserved: %f", reserved);
	ck_assert_msg(used > sum - 1e-9 && used < sum + 1e-9,
	    "used %.6f, envelopes %.6f", used, sum);
	settles = gateway_counter(&s, "settles");
	batches = gateway_counter(&s, "settle_batches");
	ck_assert_int_eq(settles, SETTLE_CHATS);
	ck_assert_msg(
	    batches >= 1 && batches <= settles, "%lld batches", batches);
	fprintf(stderr, "settles: %lld in %lld batches\n", settles, batches);
	suite_stop(&s);
}
END_TEST

/* n chats of one session at once; counts the 200s and the 429s (any
 * other answer fails the test). */
static void
chats_at_once(struct suite *s, int n, int *ret_ok, int *ret_limited)
{
	struct settle_chat *c = calloc((size_t)n, sizeof(*c));
	pthread_t *t = calloc((size_t)n, sizeof(*t));

	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_nonnull(t);
	for (int i = 0; i < n; i++) {
		c[i] = (struct settle_chat){s, 0, 0};
		ck_assert_int_eq(
		    pthread_create(&t[i], NULL, settle_chat_main, &c[i]), 0);
	}
	for (int i = 0; i < n; i++) {
		pthread_join(t[i], NULL);
		if (c[i].status == 200)
			(*ret_ok)++;
		else if (c[i].status == 429)
			(*ret_limited)++;
		else
			ck_abort_msg("chat %d: %ld", i, c[i].status);
	}
	free(c);
	free(t);
}

/* Checks travel in batches too: 40 chats of one session at once against
 * a minute limit of 25.  Each check is decided exactly as alone: 25
 * answered, 15 refused 429 rate_limit_minute; and the gateway sent fewer
 * messages than checks (those that met one in flight left together). */
#define CHECK_CHATS 40

START_TEST(test_checks_batched)
{
	static const char *const env[] = {
	    "AI_PROXY_RATE_LIMIT_PER_MINUTE=25",
	    "AI_PROXY_RATE_LIMIT_PER_IP_MINUTE=1000",
	    NULL,
	};
	struct suite_opts o = {.workers = 2, .gw_env = env, .rl_env = env};
	struct suite s;
	long long checks, sends;
	int ok = 0, limited = 0;

	if (!S_up)
		return;
	ck_assert_int_eq(suite_start(&s, &o), 0);
	chats_at_once(&s, CHECK_CHATS, &ok, &limited);
	ck_assert_int_eq(ok, 25);
	ck_assert_int_eq(limited, CHECK_CHATS - 25);
	checks = gateway_counter(&s, "checks");
	sends = gateway_counter(&s, "check_sends");
	fprintf(stderr, "checks: %lld in %lld sends\n", checks, sends);
	ck_assert_int_eq(checks, CHECK_CHATS);
	ck_assert_msg(sends >= 1 && sends < checks,
	    "%lld checks in %lld sends: none batched", checks, sends);
	suite_stop(&s);
}
END_TEST

/*
 * A ratelimiter of before limit_check_batch (as during a rolling upgrade):
 * it answers single checks, and a batch with ack bad_request as any
 * unknown message.  It admits the first OLD_ADMIT checks and refuses the
 * rest; its first answer waits for a second check, so that a batch comes.
 */
#define OLD_CHATS 30
#define OLD_ADMIT 10

struct old_rl {
	struct suite *s;
	nng_socket sock;
	atomic_int pipes; /* gateways connected */
	pthread_t thread;
	atomic_bool stop;
	int singles, batches;
};

static void
old_rl_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	struct old_rl *o = arg;

	(void)p;
	atomic_fetch_add(&o->pipes, ev == NNG_PIPE_EV_ADD_POST ? 1 : -1);
}

/* Waits until the gateway counts a second check, 100 ms at most: the
 * gateway gives up on a check after 200 ms (and lets it through). */
static void
old_rl_hold(struct old_rl *o)
{
	int64_t until = clock_mono_ms() + 100;

	while (clock_mono_ms() < until) {
		json_t *j = suite_gateway_status(o->s);
		long long n =
		    j != NULL ? json_integer_value(json_object_get(j, "checks"))
			      : 0;

		json_decref(j);
		if (n >= 2)
			return;
		usleep(2000);
	}
}

static void
old_rl_answer(struct old_rl *o, const char *buf, size_t len)
{
	union proto_msg in;
	enum msg_type t = MSG_NONE;
	char *out = NULL;
	size_t out_len = 0;

	if (proto_peek_type(buf, len, &t) != 0)
		t = MSG_NONE;
	if (t == MSG_LIMIT_CHECK &&
	    msg_limit_check_decode(buf, len, &in.limit_check) == 0) {
		struct msg_limit_verdict v;

		memset(&v, 0, sizeof(v));
		memcpy(v.request_id, in.limit_check.request_id,
		    sizeof(v.request_id));
		v.allow = o->singles < OLD_ADMIT;
		snprintf(v.code, sizeof(v.code), "%s",
		    v.allow ? "ok" : "rate_limit_minute");
		v.limit = OLD_ADMIT;
		v.remaining = v.allow ? OLD_ADMIT - o->singles - 1 : 0;
		v.reset_s = 60;
		v.retry_after_s = v.allow ? 0 : 60;
		if (v.allow)
			snprintf(v.reservation_id, sizeof(v.reservation_id),
			    "mold%d", o->singles);
		/* Hold the first answer until the gateway has taken another
		 * check: that one must wait for this answer, so a batch
		 * follows (a fixed delay was not enough on a loaded CI). */
		if (o->singles++ == 0)
			old_rl_hold(o);
		ck_assert_int_eq(
		    msg_limit_verdict_encode(&v, &out, &out_len), 0);
	} else {
		struct msg_ack a;

		memset(&a, 0, sizeof(a));
		a.ok = t != MSG_LIMIT_CHECK_BATCH && t != MSG_NONE;
		snprintf(
		    a.code, sizeof(a.code), "%s", a.ok ? "ok" : "bad_request");
		if (t == MSG_LIMIT_CHECK_BATCH)
			o->batches++;
		ck_assert_int_eq(msg_ack_encode(&a, &out, &out_len), 0);
	}
	ck_assert_int_eq(nng_send(o->sock, out, out_len, 0), 0);
	free(out);
}

static void *
old_rl_main(void *arg)
{
	struct old_rl *o = arg;
	char *buf;
	size_t len;

	while (!atomic_load(&o->stop)) {
		if (nng_recv(o->sock, &buf, &len, NNG_FLAG_ALLOC) != 0)
			continue; /* the receive timeout: look at stop */
		old_rl_answer(o, buf, len);
		nng_free(buf, len);
	}
	return NULL;
}

/* Against the old ratelimiter the refused batch is sent again check by
 * check, and later checks go one by one: exactly OLD_ADMIT answered,
 * the rest refused 429 (letting a refused batch through would admit
 * them all). */
START_TEST(test_old_ratelimiter)
{
	struct suite_opts o = {.workers = 2, .no_rl_acct = true};
	struct old_rl rl = {.s = NULL};
	struct suite s;
	int ok = 0, limited = 0;

	if (!S_up)
		return;
	ck_assert_int_eq(suite_start(&s, &o), 0);
	rl.s = &s;
	ck_assert_int_eq(nng_rep0_open(&rl.sock), 0);
	ck_assert_int_eq(nng_socket_set_ms(rl.sock, NNG_OPT_RECVTIMEO, 100), 0);
	atomic_init(&rl.pipes, 0);
	ck_assert_int_eq(
	    nng_pipe_notify(rl.sock, NNG_PIPE_EV_ADD_POST, old_rl_pipe, &rl),
	    0);
	ck_assert_int_eq(
	    nng_pipe_notify(rl.sock, NNG_PIPE_EV_REM_POST, old_rl_pipe, &rl),
	    0);
	ck_assert_int_eq(nng_listen(rl.sock, s.rl_url, NULL, 0), 0);
	atomic_init(&rl.stop, false);
	ck_assert_int_eq(pthread_create(&rl.thread, NULL, old_rl_main, &rl), 0);
	/* The gateway redials by itself: wait until it has (a check sent
	 * before would wait for the connection and could time out). */
	for (int64_t until = clock_mono_ms() + 10000;
	     atomic_load(&rl.pipes) < 1 && clock_mono_ms() < until;)
		usleep(5000);
	ck_assert_int_ge(atomic_load(&rl.pipes), 1);
	chats_at_once(&s, OLD_CHATS, &ok, &limited);
	atomic_store(&rl.stop, true);
	pthread_join(rl.thread, NULL);
	nng_close(rl.sock);
	fprintf(stderr,
	    "old ratelimiter: %d singles, %d batches refused; %d ok, %d "
	    "limited (%s)\n",
	    rl.singles, rl.batches, ok, limited, s.dir);
	ck_assert_int_ge(rl.batches, 1);
	ck_assert_int_eq(rl.singles, OLD_CHATS);
	ck_assert_int_eq(ok, OLD_ADMIT);
	ck_assert_int_eq(limited, OLD_CHATS - OLD_ADMIT);
	suite_stop(&s);
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
	tcase_add_test(tc, test_settles_batched);
	tcase_add_test(tc, test_checks_batched);
	tcase_add_test(tc, test_old_ratelimiter);
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
