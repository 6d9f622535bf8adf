/*
 * Failures around the gateway: a worker killed (SIGKILL) mid-request
 * gives the client a 502 worker_unavailable within a second and the next
 * request goes through the other worker (nng 1.5.2 fails the pending
 * receive when the pipe dies: this test is the proof); a worker killed
 * mid-stream ends the stream with an error event; SIGTERM lets in-flight
 * streams finish and exits 0.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "clock.h"
#include "suite.h"

struct call {
	struct suite *s;
	const char *path;
	const char *body;
	const char *rid;
	struct h_resp r;
	int rv;
	int64_t done_ms;
};

static void *
call_main(void *arg)
{
	struct call *c = arg;
	char hdr[128];
	const char *const h[] = {hdr, NULL};

	snprintf(hdr, sizeof(hdr), "X-Request-ID: %s", c->rid);
	c->rv = suite_post(c->s, c->path, c->body, h, &c->r);
	c->done_ms = clock_mono_ms();
	return NULL;
}

/* Polls the mock until the request is in flight there. */
static void
wait_upstream(struct suite *s, const char *rid)
{
	for (int i = 0; i < 250; i++) {
		json_t *e = suite_mock_find(s, rid);

		json_decref(e);
		if (e != NULL)
			return;
		usleep(20000);
	}
	ck_abort_msg("%s never reached the mock", rid);
}

START_TEST(test_worker_killed_mid_request)
{
	struct suite s;
	struct suite_opts o = {.workers = 1, .no_rl_acct = true};
	struct call c = {.path = "/api/v1/ai-proxy/claude/chat",
	    .body = "{\"messages\":[{\"role\":\"user\",\"content\":\"hold "
		    "[[mock:latency-ms=5000]]\"}]}",
	    .rid = "kill-1"};
	struct h_resp r;
	pthread_t th;
	int64_t killed;
	json_t *j;

	ck_assert_int_eq(suite_start(&s, &o), 0);
	c.s = &s;
	ck_assert_int_eq(pthread_create(&th, NULL, call_main, &c), 0);
	wait_upstream(&s, "kill-1");
	/* A second worker, then the one holding the request dies. */
	ck_assert_int_eq(suite_add_worker(&s), 0);
	ck_assert_int_eq(suite_wait_workers(&s, 2, 10000), 0);
	killed = clock_mono_ms();
	ck_assert_int_eq(kill(s.workers[0].pid, SIGKILL), 0);
	pthread_join(th, NULL);
	ck_assert_int_eq(c.rv, 0);
	ck_assert_int_eq(c.r.status, 502);
	ck_assert_msg(c.done_ms - killed < 1000, "502 after %lld ms",
	    (long long)(c.done_ms - killed));
	j = suite_json(&c.r);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(json_string_value(json_object_get(j, "error")),
	    "worker_unavailable");
	ck_assert_str_eq(
	    json_string_value(json_object_get(j, "request_id")), "kill-1");
	json_decref(j);
	h_resp_free(&c.r);
	h_proc_stop(&s.workers[0], SIGKILL, 1000);
	s.worker_up[0] = false;
	/* The next request goes through the surviving worker. */
	ck_assert_int_eq(suite_wait_workers(&s, 1, 5000), 0);
	ck_assert_int_eq(suite_post(&s, "/api/v1/ai-proxy/claude/chat",
			     "{\"messages\":[{\"role\":\"user\",\"content\":"
			     "\"again\"}]}",
			     NULL, &r),
	    0);
	ck_assert_msg(r.status == 200, "status %ld: %s", r.status, r.body);
	h_resp_free(&r);
	suite_stop(&s);
	ck_assert_int_eq(s.gw_exit, 0);
}
END_TEST

START_TEST(test_worker_killed_mid_stream)
{
	struct suite s;
	struct suite_opts o = {.workers = 1, .no_rl_acct = true};
	struct call c = {.path = "/v1/messages",
	    .body =
		"{\"model\":\"claude-3-haiku\",\"max_tokens\":99,\"stream\":"
		"true,\"messages\":[{\"role\":\"user\",\"content\":\"a b c "
		"d e f g h i j k l m n o p [[mock:chunk-delay-ms=200]]\"}]}",
	    .rid = "kill-2"};
	struct h_sse_event *ev;
	pthread_t th;
	size_t n;

	ck_assert_int_eq(suite_start(&s, &o), 0);
	c.s = &s;
	ck_assert_int_eq(pthread_create(&th, NULL, call_main, &c), 0);
	wait_upstream(&s, "kill-2");
	usleep(300000); /* a few events are out */
	ck_assert_int_eq(kill(s.workers[0].pid, SIGKILL), 0);
	pthread_join(th, NULL);
	ck_assert_int_eq(c.rv, 0);
	ck_assert_int_eq(c.r.status, 200);
	ck_assert_int_eq(h_sse_parse(c.r.body, c.r.body_len, &ev, &n), 0);
	ck_assert_uint_ge(n, 2);
	ck_assert_str_eq(ev[0].event, "message_start");
	ck_assert_str_eq(ev[n - 1].event, "error");
	ck_assert_ptr_null(strstr(c.r.body, "message_stop"));
	h_sse_free(ev, n);
	h_resp_free(&c.r);
	h_proc_stop(&s.workers[0], SIGKILL, 1000);
	s.worker_up[0] = false;
	suite_stop(&s);
	ck_assert_int_eq(s.gw_exit, 0);
}
END_TEST

START_TEST(test_sigterm_drains)
{
	struct suite s;
	struct suite_opts o = {.workers = 1, .no_rl_acct = true};
	struct call c = {.path = "/api/v1/ai-proxy/openai/chat",
	    .body =
		"{\"stream\":true,\"messages\":[{\"role\":\"user\","
		"\"content\":\"one two three [[mock:duration-ms=1500]]\"}]}",
	    .rid = "drain-1"};
	pthread_t th;
	int st;

	ck_assert_int_eq(suite_start(&s, &o), 0);
	c.s = &s;
	ck_assert_int_eq(pthread_create(&th, NULL, call_main, &c), 0);
	wait_upstream(&s, "drain-1");
	/* SIGTERM while the stream runs: it still completes. */
	ck_assert_int_eq(kill(s.gw.pid, SIGTERM), 0);
	pthread_join(th, NULL);
	ck_assert_int_eq(c.rv, 0);
	ck_assert_int_eq(c.r.status, 200);
	ck_assert_ptr_nonnull(strstr(c.r.body, "data: [DONE]"));
	ck_assert_ptr_nonnull(strstr(c.r.body, "event: aiproxy"));
	h_resp_free(&c.r);
	st = h_proc_stop(&s.gw, SIGTERM, 8000);
	s.gw_up = false;
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	    "gateway exit status %d", st);
	suite_stop(&s);
}
END_TEST

/* A worker whose shutdown outlasts AI_PROXY_SHUTDOWN_TIMEOUT_SECONDS (a
 * call still in flight, grace 5 s) ends itself: exit 1 after ~1 s, said
 * in its log, and the client gets an error, not a hang. */
START_TEST(test_shutdown_watchdog)
{
	static const char *const wenv[] = {
	    "AI_PROXY_SHUTDOWN_TIMEOUT_SECONDS=1", NULL};
	struct suite s;
	struct suite_opts o = {
	    .workers = 1, .no_rl_acct = true, .worker_env = wenv};
	struct call c = {.path = "/api/v1/ai-proxy/openai/chat",
	    .body = "{\"messages\":[{\"role\":\"user\","
		    "\"content\":\"slow [[mock:latency-ms=4000]]\"}]}",
	    .rid = "watchdog-1"};
	pthread_t th;
	int64_t t0, ms;
	int st;

	ck_assert_int_eq(suite_start(&s, &o), 0);
	c.s = &s;
	ck_assert_int_eq(pthread_create(&th, NULL, call_main, &c), 0);
	wait_upstream(&s, "watchdog-1");
	t0 = clock_mono_ms();
	st = h_proc_stop(&s.workers[0], SIGTERM, 8000);
	ms = clock_mono_ms() - t0;
	s.worker_up[0] = false;
	ck_assert_msg(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 1,
	    "worker exit status %d", st);
	ck_assert_msg(
	    ms < 3000, "the worker took %lld ms to stop", (long long)ms);
	ck_assert_int_eq(h_wait_file_contains(s.workers[0].log_path,
			     "shutdown still running", 1000),
	    0);
	pthread_join(th, NULL);
	ck_assert_int_eq(c.rv, 0);
	ck_assert_msg(c.r.status >= 500, "status %ld", c.r.status);
	h_resp_free(&c.r);
	suite_stop(&s);
}
END_TEST

static Suite *
gateway_resilience_suite(void)
{
	Suite *s = suite_create("gateway_resilience");
	TCase *tc = tcase_create("resilience");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_worker_killed_mid_request);
	tcase_add_test(tc, test_worker_killed_mid_stream);
	tcase_add_test(tc, test_sigterm_drains);
	tcase_add_test(tc, test_shutdown_watchdog);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(gateway_resilience_suite());
	int failed;

	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
