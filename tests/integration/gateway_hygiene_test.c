/*
 * Connection hygiene over raw sockets: the per-IP connection cap
 * (AI_PROXY_MAX_CONNS_PER_IP) and the connection timeout
 * (AI_PROXY_CONN_TIMEOUT_SECONDS) that stops a client stalling in its
 * headers or its body from holding a connection.  After each, the
 * gateway still serves.
 */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "clock.h"
#include "suite.h"

#define CAP 4

static struct suite S;

static void
setup(void)
{
	static const char *const gw_env[] = {"AI_PROXY_MAX_CONNS_PER_IP=4",
	    "AI_PROXY_CONN_TIMEOUT_SECONDS=1", NULL};
	struct suite_opts o = {
	    .workers = 0, .no_rl_acct = true, .gw_env = gw_env};

	ck_assert_int_eq(suite_start(&S, &o), 0);
}

static void
teardown(void)
{
	suite_stop(&S);
}

static int
dial(void)
{
	struct sockaddr_in a;
	int fd;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)S.http_port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_msg(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0,
	    "connect: %s", strerror(errno));
	return fd;
}

static void
send_all(int fd, const char *s)
{
	size_t n = strlen(s);

	ck_assert_msg(send(fd, s, n, MSG_NOSIGNAL) == (ssize_t)n, "send: %s",
	    strerror(errno));
}

/* Milliseconds until the peer closes fd (EOF or reset), -1 when it is
 * still open after timeout_ms.  Bytes the server sends are read and
 * dropped (an error answer before the close is fine). */
static int
ms_until_closed(int fd, int timeout_ms)
{
	int64_t t0 = clock_mono_us() / 1000;
	char buf[1024];

	for (;;) {
		int64_t left = timeout_ms - (clock_mono_us() / 1000 - t0);
		struct pollfd p = {fd, POLLIN, 0};
		ssize_t r;

		if (left <= 0)
			return -1;
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		r = recv(fd, buf, sizeof(buf), 0);
		if (r <= 0)
			return (int)(clock_mono_us() / 1000 - t0);
	}
}

static void
assert_serves(void)
{
	struct h_resp r;

	ck_assert_int_eq(suite_get(&S, "/health", NULL, &r), 0);
	ck_assert_int_eq(r.status, 200);
	h_resp_free(&r);
}

START_TEST(test_per_ip_cap)
{
	int fds[CAP], extra, ms;

	/* CAP idle connections are held... */
	for (int i = 0; i < CAP; i++)
		fds[i] = dial();
	/* ...and give MHD the time to accept them all. */
	for (int i = 0; i < CAP; i++)
		ck_assert_int_eq(ms_until_closed(fds[i], 100), -1);
	/* One more from the same IP is closed at once, unanswered. */
	extra = dial();
	send_all(extra, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
	ms = ms_until_closed(extra, 900);
	ck_assert_msg(ms >= 0, "the connection over the cap stayed open");
	close(extra);
	/* Freeing one slot lets a request in again. */
	for (int i = 0; i < CAP; i++)
		close(fds[i]);
	for (int i = 0; i < 50; i++) {
		struct h_resp r;
		bool ok;

		if (suite_get(&S, "/health", NULL, &r) == 0) {
			ok = r.status == 200;
			h_resp_free(&r);
			if (ok)
				return;
		}
		usleep(20000);
	}
	ck_abort_msg("no request served after the connections closed");
}
END_TEST

START_TEST(test_stalled_headers_closed)
{
	int fd = dial(), ms;

	/* Half a request line's headers, then nothing. */
	send_all(fd, "GET /health HTTP/1.1\r\nHost: t\r\n");
	ms = ms_until_closed(fd, 5000);
	close(fd);
	ck_assert_msg(ms >= 0, "a client stalled in its headers kept the "
			       "connection for 5 s (timeout 1 s)");
	assert_serves();
}
END_TEST

START_TEST(test_stalled_body_closed)
{
	int fd = dial(), ms;

	/* Promises 100 bytes of body, sends 10. */
	send_all(fd, "POST /api/v1/ai-proxy/claude/chat HTTP/1.1\r\nHost: t\r\n"
		     "Content-Type: application/json\r\nContent-Length: "
		     "100\r\n\r\n{\"message");
	ms = ms_until_closed(fd, 5000);
	close(fd);
	ck_assert_msg(ms >= 0, "a client stalled in its body kept the "
			       "connection for 5 s (timeout 1 s)");
	assert_serves();
}
END_TEST

START_TEST(test_idle_keepalive_closed)
{
	int fd = dial(), ms;
	char buf[4096];
	ssize_t n;

	/* One full request on a keep-alive connection, then silence. */
	send_all(fd, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
	n = recv(fd, buf, sizeof(buf) - 1, 0);
	ck_assert_int_gt(n, 0);
	buf[n] = '\0';
	ck_assert_msg(strstr(buf, " 200 ") != NULL, "answer: %s", buf);
	ms = ms_until_closed(fd, 5000);
	close(fd);
	ck_assert_msg(ms >= 0, "an idle keep-alive connection was held 5 s");
}
END_TEST

int
main(void)
{
	Suite *su = suite_create("gateway_hygiene");
	TCase *tc = tcase_create("connections");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_per_ip_cap);
	tcase_add_test(tc, test_stalled_headers_closed);
	tcase_add_test(tc, test_stalled_body_closed);
	tcase_add_test(tc, test_idle_keepalive_closed);
	suite_add_tcase(su, tc);
	sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
