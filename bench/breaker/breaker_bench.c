/*
 * The breaker's fast-fail path, measured: the whole request path (gateway,
 * ratelimiter, accountant, one provider-worker, the mock upstream) on
 * loopback through tests/integration/suite.c; one keep-alive client
 * connection; N calls that reach the mock (the baseline), then the
 * breaker is tripped and N calls fail fast, then N GET /health (what
 * the client, HTTP and the gateway cost alone).  Prints p50/p90/p99/max
 * of each, client-side, then the same calls as the gateway's access log
 * timed them (from the request's headers to the answer's last byte).  Bounded:
 * N <= 20000, one connection, sequential.
 *
 *   aiproxy-breaker-bench [-n calls]     (bench/breaker/run sets the
 *                                         AIPROXY_BUILD_DIR/SOURCE_DIR)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "clock.h"
#include "suite.h"

static size_t
sink(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	return size * n;
}

static int
cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* n calls of body on h; latencies (us) into lat; returns the calls that
 * got want. */
static int
run(CURL *h, const char *body, int n, long want, int64_t *lat)
{
	int good = 0;

	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	for (int i = 0; i < n; i++) {
		int64_t t0 = clock_mono_us();
		long st = 0;

		if (curl_easy_perform(h) == CURLE_OK) {
			curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
			good += st == want;
		}
		lat[i] = clock_mono_us() - t0;
	}
	return good;
}

static void
report(const char *what, int64_t *lat, int n, int good)
{
	if (n == 0)
		return;
	qsort(lat, (size_t)n, sizeof(*lat), cmp64);
	printf("%-34s n=%d ok=%d  p50=%.3f ms  p90=%.3f ms  p99=%.3f ms  "
	       "max=%.3f ms\n",
	    what, n, good, lat[n / 2] / 1000.0, lat[n * 90 / 100] / 1000.0,
	    lat[n * 99 / 100] / 1000.0, lat[n - 1] / 1000.0);
}

/*
 * Inside aiproxy: the gateway's access log times each request ("us",
 * from its headers to the last byte of the answer handed to the
 * kernel).  Collects the chat calls answered with status want, after
 * skip of them.
 */
static int
server_side(const struct suite *s, long want, int skip, int64_t *lat, int max)
{
	size_t len = 0;
	char *log = h_read_file(s->gw.log_path, &len), *line, *nl;
	int n = 0, seen = 0;

	if (log == NULL)
		return 0;
	for (line = log; line != NULL && *line != '\0' && n < max;
	     line = nl != NULL ? nl + 1 : NULL) {
		json_t *j;

		if ((nl = strchr(line, '\n')) != NULL)
			*nl = '\0';

		if (strstr(line, "\"access\"") == NULL ||
		    strstr(line, "/claude/chat") == NULL)
			continue;
		if ((j = json_loads(line, 0, NULL)) == NULL)
			continue;
		if (json_integer_value(json_object_get(j, "status")) == want &&
		    seen++ >= skip)
			lat[n++] = json_integer_value(json_object_get(j, "us"));
		json_decref(j);
	}
	free(log);
	return n;
}

int
main(int argc, char **argv)
{
	static const char *const wenv[] = {
	    "CIRCUIT_BREAKER_FAILURE_THRESHOLD=1",
	    "CIRCUIT_BREAKER_RECOVERY_TIMEOUT=3600", "LOG_LEVEL=warn", NULL};
	static const char *const genv[] = {"LOG_LEVEL=warn", NULL};
	/* The gateway logs at info: its access log times every request. */
	struct suite_opts o = {
	    .workers = 1, .worker_env = wenv, .rl_env = genv};
	struct curl_slist *hdrs = NULL;
	struct suite s;
	char url[256];
	int64_t *lat;
	CURL *h;
	int n = 2000, ch, good;

	while ((ch = getopt(argc, argv, "n:")) != -1) {
		if (ch == 'n')
			n = (int)strtol(optarg, NULL, 10);
		else {
			fprintf(stderr, "usage: %s [-n calls]\n", argv[0]);
			return 2;
		}
	}
	if (n < 100 || n > 20000) {
		fprintf(stderr, "-n: 100..20000\n");
		return 2;
	}
	if ((lat = calloc((size_t)n, sizeof(*lat))) == NULL)
		return 1;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (suite_start(&s, &o) != 0) {
		fprintf(stderr, "cannot start the daemons\n");
		return 1;
	}
	h = curl_easy_init();
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	curl_easy_setopt(h, CURLOPT_URL,
	    suite_url(&s, "/api/v1/ai-proxy/claude/chat", url, sizeof(url)));
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
	curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 20000L);

	printf("aiproxy breaker bench: %d sequential calls per phase, one "
	       "keep-alive connection, loopback; client-side round trips\n",
	    n);
	/* Warm-up, then the baseline: calls that reach the mock. */
	run(h, "{\"messages\":[{\"role\":\"user\",\"content\":\"warm up\"}]}",
	    n / 10, 200, lat);
	good =
	    run(h, "{\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}",
		n, 200, lat);
	report("reaches the mock (200)", lat, n, good);
	/* Trip the breaker: one upstream failure at threshold 1. */
	run(h,
	    "{\"messages\":[{\"role\":\"user\",\"content\":\"boom "
	    "[[mock:status=503]]\"}]}",
	    1, 503, lat);
	good =
	    run(h, "{\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}",
		n, 503, lat);
	report("breaker open: fast fail (503)", lat, n, good);
	/* The floor: the client, HTTP and the gateway alone. */
	curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(
	    h, CURLOPT_URL, suite_url(&s, "/health", url, sizeof(url)));
	good = 0;
	for (int i = 0; i < n; i++) {
		int64_t t0 = clock_mono_us();
		long st = 0;

		if (curl_easy_perform(h) == CURLE_OK) {
			curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
			good += st == 200;
		}
		lat[i] = clock_mono_us() - t0;
	}
	report("GET /health (HTTP floor)", lat, n, good);
	/* The same calls as the gateway timed them (its access log is
	 * written after each answer went out). */
	usleep(200000);
	good = server_side(&s, 200, n / 10, lat, n);
	report("inside aiproxy: reaches the mock", lat, good, good);
	good = server_side(&s, 503, 1, lat, n);
	report("inside aiproxy: fast fail", lat, good, good);

	curl_easy_cleanup(h);
	curl_slist_free_all(hdrs);
	suite_stop(&s);
	curl_global_cleanup();
	free(lat);
	return 0;
}
