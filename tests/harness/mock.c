/*
 * Harness service: the bundled mock upstream (tests/mock-upstream) in a
 * temporary folder, on a port it picks itself and reports through -P.
 */
#include "harness.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MOCK_BIN      "aiproxy-mock-upstream"
#define MOCK_START_MS 10000
#define MOCK_STOP_MS  5000
#define MOCK_POLL_MS  10

static long long
mock_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Polls the port file until it holds "<port>\n".  Returns the port or a
 * negative errno. */
static int
mock_wait_port(struct h_mock *m, const char *portfile)
{
	long long deadline = mock_now_ms() + MOCK_START_MS;
	struct timespec nap = {0, MOCK_POLL_MS * 1000000L};
	char *buf, *end;
	long port;
	bool ok;

	for (;;) {
		buf = h_read_file(portfile, NULL);
		if (buf != NULL && strchr(buf, '\n') != NULL) {
			errno = 0;
			port = strtol(buf, &end, 10);
			ok = errno == 0 && port > 0 && port <= 65535 &&
			     *end == '\n';
			free(buf);
			return ok ? (int)port : -EPROTO;
		}
		free(buf);
		if (!h_proc_alive(&m->proc))
			return -ECHILD;
		if (mock_now_ms() >= deadline)
			return -ETIMEDOUT;
		nanosleep(&nap, NULL);
	}
}

int
h_mock_start(
    struct h_mock *m, const char *anthropic_key, const char *openai_key)
{
	char portfile[PATH_MAX], logfile[PATH_MAX], reqlog[PATH_MAX];
	char akey[256], okey[256];
	char *bin;
	int rv;

	if (m == NULL)
		return -EINVAL;
	memset(m, 0, sizeof(*m));
	if (snprintf(akey, sizeof(akey), "%s",
		anthropic_key != NULL ? anthropic_key : "test-anthropic-key") >=
		(int)sizeof(akey) ||
	    snprintf(okey, sizeof(okey), "%s",
		openai_key != NULL ? openai_key : "test-openai-key") >=
		(int)sizeof(okey))
		return -ENAMETOOLONG;
	bin = h_bin_path(MOCK_BIN);
	if (bin == NULL) {
		fprintf(stderr, "harness: %s not built under %s\n", MOCK_BIN,
		    h_build_dir());
		return -ENOENT;
	}
	m->dir = h_tmpdir("mock");
	if (m->dir == NULL) {
		rv = -errno;
		goto fail_bin;
	}
	if (snprintf(portfile, sizeof(portfile), "%s/port", m->dir) >=
		(int)sizeof(portfile) ||
	    snprintf(logfile, sizeof(logfile), "%s/mock.log", m->dir) >=
		(int)sizeof(logfile) ||
	    snprintf(reqlog, sizeof(reqlog), "%s/requests.jsonl", m->dir) >=
		(int)sizeof(reqlog)) {
		rv = -ENAMETOOLONG;
		goto fail_dir;
	}
	{
		char *const argv[] = {bin, "-H", "127.0.0.1", "-p", "0", "-P",
		    portfile, "-k", akey, "-K", okey, "-l", reqlog, NULL};

		rv = h_proc_start(
		    &m->proc, "mock-upstream", argv, NULL, logfile, NULL);
	}
	if (rv != 0)
		goto fail_dir;
	rv = mock_wait_port(m, portfile);
	if (rv < 0) {
		char *log = h_read_file(logfile, NULL);
		size_t len = log != NULL ? strlen(log) : 0;

		fprintf(stderr,
		    "harness: mock upstream did not start (%s); its log:\n%s\n",
		    strerror(-rv),
		    log == NULL ? "(none)"
				: log + (len > 4096 ? len - 4096 : 0));
		free(log);
		goto fail_proc;
	}
	m->port = rv;
	snprintf(m->url, sizeof(m->url), "http://127.0.0.1:%d", m->port);
	free(bin);
	return 0;
fail_proc:
	h_proc_stop(&m->proc, SIGKILL, MOCK_STOP_MS);
fail_dir:
	h_rmtree(m->dir);
	free(m->dir);
	m->dir = NULL;
fail_bin:
	free(bin);
	return rv;
}

void
h_mock_stop(struct h_mock *m)
{
	if (m == NULL)
		return;
	if (m->proc.pid > 0)
		h_proc_stop(&m->proc, SIGTERM, MOCK_STOP_MS);
	if (m->dir != NULL && getenv("AIPROXY_KEEP_TMP") == NULL)
		h_rmtree(m->dir);
	free(m->dir);
	m->dir = NULL;
	m->port = 0;
	m->url[0] = '\0';
}
