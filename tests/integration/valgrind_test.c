/*
 * Every daemon under valgrind memcheck: the whole suite (gateway,
 * ratelimiter, accountant, one provider-worker) serves chats on both
 * providers, a stream, a refused request and the status routes, then each
 * daemon gets SIGTERM and must exit 0: no memory error on the way and
 * nothing definitely leaked at exit (memcheck's --error-exitcode).
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "suite.h"

#define VG_STOP_MS 60000 /* memcheck's leak search takes a while */

static const char *const anthropic_hdrs[] = {
    "anthropic-version: 2023-06-01", NULL};

/* The daemon's memcheck report, on stderr, when it did not exit 0. */
static void
show_report(const struct suite *s, const char *name)
{
	char path[PATH_MAX], line[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s.vg", s->dir, name);
	if ((f = fopen(path, "r")) == NULL)
		return;
	fprintf(stderr, "---- %s ----\n", path);
	while (fgets(line, sizeof(line), f) != NULL)
		fputs(line, stderr);
	fclose(f);
}

/* SIGTERM, then the exit status; the suite forgets the process. */
static void
stop_clean(struct suite *s, struct hproc *p, bool *up, const char *name)
{
	int st;

	ck_assert_msg(*up, "%s is not running", name);
	st = h_proc_stop(p, SIGTERM, VG_STOP_MS);
	*up = false;
	if (!(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0))
		show_report(s, name);
	ck_assert_msg(
	    st >= 0 && WIFEXITED(st), "%s did not exit (%d)", name, st);
	ck_assert_msg(WEXITSTATUS(st) == 0,
	    "%s exited %d under memcheck (99: memory errors or leaks)", name,
	    WEXITSTATUS(st));
}

static void
post_ok(struct suite *s, const char *path, const char *body,
    const char *const hdrs[], const char *needle)
{
	struct h_resp r;

	ck_assert_int_eq(suite_post(s, path, body, hdrs, &r), 0);
	ck_assert_msg(r.status == 200, "%s: status %ld: %s", path, r.status,
	    r.body ? r.body : "");
	ck_assert_msg(r.body != NULL && strstr(r.body, needle) != NULL,
	    "%s: no %s in %s", path, needle, r.body ? r.body : "");
	h_resp_free(&r);
}

START_TEST(test_clean_under_memcheck)
{
	struct suite s;
	struct suite_opts o = {.workers = 1, .valgrind = true};
	struct h_resp r;

	ck_assert_int_eq(suite_start(&s, &o), 0);
	ck_assert_msg(s.rl_up && s.acct_up, "ratelimiter/accountant missing");

	post_ok(&s, "/api/v1/ai-proxy/claude/chat",
	    "{\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}],"
	    "\"max_tokens\":32}",
	    NULL, "\"success\":true");
	post_ok(&s, "/v1/chat/completions",
	    "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"hello\"}]}",
	    NULL, "chat.completion");
	post_ok(&s, "/v1/messages",
	    "{\"model\":\"claude-3-haiku-20240307\",\"max_tokens\":32,"
	    "\"stream\":true,\"messages\":[{\"role\":\"user\","
	    "\"content\":\"stream please\"}]}",
	    anthropic_hdrs, "message_stop");
	/* An upstream failure, mapped. */
	ck_assert_int_eq(suite_post(&s, "/api/v1/ai-proxy/openai/chat",
			     "{\"messages\":[{\"role\":\"user\",\"content\":"
			     "\"[[mock:status=500]] fail\"}]}",
			     NULL, &r),
	    0);
	ck_assert_msg(r.status == 502, "status %ld", r.status);
	h_resp_free(&r);
	/* Refused in the gateway. */
	ck_assert_int_eq(suite_post(&s, "/api/v1/ai-proxy/claude/chat",
			     "{\"messages\":[]}", NULL, &r),
	    0);
	ck_assert_msg(r.status == 400, "status %ld", r.status);
	h_resp_free(&r);
	ck_assert_int_eq(suite_get(&s, "/health/detailed", NULL, &r), 0);
	ck_assert_msg(r.status == 200, "detailed: %ld %s", r.status,
	    r.body ? r.body : "");
	h_resp_free(&r);
	ck_assert_int_eq(
	    suite_get(&s, "/api/v1/ai-proxy/usage/quota", NULL, &r), 0);
	ck_assert_msg(r.status == 200, "quota: %ld", r.status);
	h_resp_free(&r);

	/* Workers first (they flush usage to the accountant), then the
	 * rest. */
	stop_clean(&s, &s.workers[0], &s.worker_up[0], "worker1");
	stop_clean(&s, &s.gw, &s.gw_up, "gateway");
	stop_clean(&s, &s.rl, &s.rl_up, "ratelimiter");
	stop_clean(&s, &s.acct, &s.acct_up, "accountant");
	suite_stop(&s);
}
END_TEST

int
main(void)
{
	Suite *su = suite_create("valgrind");
	TCase *tc = tcase_create("memcheck");
	SRunner *sr;
	int failed;

	if (access(SUITE_VALGRIND, X_OK) != 0) {
		fprintf(stderr, "valgrind_test: %s not installed, skipped\n",
		    SUITE_VALGRIND);
		return 77;
	}
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_clean_under_memcheck);
	suite_add_tcase(su, tc);
	sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
