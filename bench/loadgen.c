/*
 * aiproxy-loadgen: fires a bounded number of HTTP POSTs with up to c of
 * them open at once (curl multi, one thread) and reports how many
 * completed, the latency percentiles and the peak number open.
 *
 *   aiproxy-loadgen -u URL -n total -c concurrent -b body.json
 *                   [-H "Name: value"]... [-t timeout_s]
 *
 * Stops by itself: after n requests or the timeout, whichever is first.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <curl/curl.h>

#include "clock.h"

struct req {
	CURL *easy;
	int64_t start_us;
	size_t bytes;
};

struct load {
	CURLM *multi;
	const char *url;
	char *body;
	size_t body_len;
	struct curl_slist *hdrs;
	long timeout_s;
	int total, started, done, failed, open, peak;
	int64_t *lat_us;
};

static size_t
discard(char *p, size_t sz, size_t n, void *arg)
{
	struct req *r = arg;

	(void)p;
	r->bytes += sz * n;
	return sz * n;
}

static int
start_one(struct load *l)
{
	struct req *r = calloc(1, sizeof(*r));

	if (r == NULL || (r->easy = curl_easy_init()) == NULL) {
		free(r);
		return -ENOMEM;
	}
	curl_easy_setopt(r->easy, CURLOPT_URL, l->url);
	curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, l->body);
	curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE, (long)l->body_len);
	curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, l->hdrs);
	curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
	curl_easy_setopt(r->easy, CURLOPT_TIMEOUT, l->timeout_s);
	curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(r->easy, CURLOPT_NOPROXY, "*");
	r->start_us = clock_mono_us();
	curl_multi_add_handle(l->multi, r->easy);
	l->started++;
	l->open++;
	if (l->open > l->peak)
		l->peak = l->open;
	return 0;
}

static int
cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

int
main(int argc, char **argv)
{
	struct load l = {.timeout_s = 60};
	struct rlimit rl;
	int concurrent = 1, ch, running;
	const char *body_path = NULL;
	int64_t t0, t1;
	FILE *f;
	CURLMsg *m;
	int left;

	while ((ch = getopt(argc, argv, "u:n:c:b:H:t:")) != -1) {
		switch (ch) {
		case 'u':
			l.url = optarg;
			break;
		case 'n':
			l.total = (int)strtol(optarg, NULL, 10);
			break;
		case 'c':
			concurrent = (int)strtol(optarg, NULL, 10);
			break;
		case 'b':
			body_path = optarg;
			break;
		case 'H':
			l.hdrs = curl_slist_append(l.hdrs, optarg);
			break;
		case 't':
			l.timeout_s = strtol(optarg, NULL, 10);
			break;
		default:
			fprintf(stderr,
			    "usage: aiproxy-loadgen -u url -n total "
			    "-c concurrent -b body [-H hdr] [-t s]\n");
			return 2;
		}
	}
	if (l.url == NULL || body_path == NULL || l.total <= 0 ||
	    concurrent <= 0) {
		fprintf(stderr, "aiproxy-loadgen: -u, -b, -n and -c needed\n");
		return 2;
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if ((f = fopen(body_path, "rb")) == NULL) {
		perror(body_path);
		return 2;
	}
	l.body = calloc(1, 1 << 20);
	l.body_len = fread(l.body, 1, (1 << 20) - 1, f);
	fclose(f);
	l.hdrs = curl_slist_append(l.hdrs, "Content-Type: application/json");
	l.hdrs = curl_slist_append(l.hdrs, "Expect:");
	l.lat_us = calloc((size_t)l.total, sizeof(*l.lat_us));
	curl_global_init(CURL_GLOBAL_DEFAULT);
	l.multi = curl_multi_init();
	curl_multi_setopt(
	    l.multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)concurrent);
	t0 = clock_mono_us();
	while (l.started < l.total && l.open < concurrent)
		start_one(&l);
	do {
		curl_multi_perform(l.multi, &running);
		while ((m = curl_multi_info_read(l.multi, &left)) != NULL) {
			struct req *r;
			long code = 0;

			if (m->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(
			    m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
			curl_easy_getinfo(
			    m->easy_handle, CURLINFO_RESPONSE_CODE, &code);
			if (m->data.result == CURLE_OK && code == 200)
				l.lat_us[l.done++] =
				    clock_mono_us() - r->start_us;
			else
				l.failed++;
			curl_multi_remove_handle(l.multi, r->easy);
			curl_easy_cleanup(r->easy);
			free(r);
			l.open--;
			if (l.started < l.total)
				start_one(&l);
		}
		if (l.open > 0)
			curl_multi_poll(l.multi, NULL, 0, 100, NULL);
	} while (
	    l.open > 0 && clock_mono_us() - t0 < (l.timeout_s + 5) * 1000000LL);
	t1 = clock_mono_us();
	qsort(l.lat_us, (size_t)l.done, sizeof(*l.lat_us), cmp64);
	printf("{\"requests\":%d,\"completed\":%d,\"failed\":%d,"
	       "\"unfinished\":%d,\"peak_open\":%d,\"seconds\":%.3f,"
	       "\"rps\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n",
	    l.total, l.done, l.failed, l.open, l.peak, (t1 - t0) / 1e6,
	    l.done / ((t1 - t0) / 1e6),
	    l.done ? l.lat_us[l.done / 2] / 1000.0 : 0,
	    l.done ? l.lat_us[(l.done * 99) / 100] / 1000.0 : 0);
	curl_multi_cleanup(l.multi);
	curl_slist_free_all(l.hdrs);
	curl_global_cleanup();
	free(l.lat_us);
	free(l.body);
	return l.done == l.total ? 0 : 1;
}
