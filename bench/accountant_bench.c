/*
 * aiproxy-accountant-bench: sustained usage events per second into
 * PostgreSQL through the real aiproxy-accountant, and its memory.
 *
 * Starts a private PostgreSQL (tests/harness) and the accountant on it,
 * then W simulated workers each send N/W events in usage_batch messages
 * of B events (the catch-up path: acknowledged only after the commit),
 * one batch in flight per worker.  A second phase publishes events on the
 * live pub/sub path as fast as nng takes them and counts what the
 * accountant committed.  Prints events/s and the accountant's RSS.
 *
 *   aiproxy-accountant-bench [-n events] [-w workers] [-b batch]
 *                            [-l live_events]
 * Defaults: -n 200000 -w 4 -b 1000 -l 100000.  Bounded in count and time;
 * loopback only.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/reqrep0/req.h>

#include "clock.h"
#include "harness.h"
#include "nngx.h"
#include "proto.h"

#ifndef AIPROXY_BENCH_BUILD_DIR
#define AIPROXY_BENCH_BUILD_DIR "."
#endif
#ifndef AIPROXY_BENCH_SOURCE_DIR
#define AIPROXY_BENCH_SOURCE_DIR "."
#endif

#define BENCH_CALL_MS  30000
#define BENCH_READY_MS 20000
#define BENCH_DRAIN_MS 120000
#define BENCH_WORKERS  64

struct bench_worker {
	int id;
	const char *url;
	int64_t events;
	int batch;
	char **bufs; /* encoded usage_batch messages */
	size_t *lens;
	int64_t nbatches;
	int64_t busy;
	int failed;
};

static void
bench_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void
bench_event(
    struct msg_usage_event *ev, const char *stream, int64_t seq, int64_t now)
{
	memset(ev, 0, sizeof(*ev));
	snprintf(ev->request_id, sizeof(ev->request_id), "req-%" PRId64, seq);
	snprintf(
	    ev->event_id, sizeof(ev->event_id), "evt-%s-%" PRId64, stream, seq);
	for (char *p = ev->event_id; *p != '\0'; p++)
		if (*p == ':')
			*p = '.';
	ev->seq = seq;
	snprintf(ev->worker_id, sizeof(ev->worker_id), "%s", stream);
	ev->ts_ms = now;
	snprintf(ev->subject_type, sizeof(ev->subject_type), "user");
	snprintf(ev->subject_id, sizeof(ev->subject_id), "user-%d",
	    (int)(seq % 500));
	snprintf(ev->ip, sizeof(ev->ip), "10.1.%d.%d", (int)(seq % 200),
	    (int)(seq % 250));
	snprintf(ev->provider, sizeof(ev->provider), "%s",
	    seq % 2 ? "claude" : "openai");
	snprintf(ev->model, sizeof(ev->model), "%s",
	    seq % 2 ? "claude-3-5-haiku-20241022" : "gpt-4o-mini-2024-07-18");
	ev->input_tokens = 100 + seq % 900;
	ev->output_tokens = 20 + seq % 300;
	ev->cache_read_tokens = seq % 4 == 0 ? 64 : 0;
	ev->cost_micro_usd = 10 + seq % 5000;
	ev->cached = seq % 11 == 0;
	snprintf(ev->status, sizeof(ev->status), "%s",
	    seq % 20 == 0 ? "error" : "ok");
	ev->http_status = seq % 20 == 0 ? 502 : 200;
	ev->total_ms = 30 + seq % 2000;
	ev->upstream_ms = ev->total_ms - 3;
}

/* Encodes every batch of worker w before the clock starts. */
static int
bench_prepare(struct bench_worker *w, int64_t now)
{
	char stream[64], *enc, *payload;
	struct msg_usage_batch b;
	struct msg_usage_event ev;
	size_t len, plen;
	int64_t seq = 1;

	snprintf(stream, sizeof(stream), "bench%d:%016x", w->id, w->id + 1);
	w->nbatches = (w->events + w->batch - 1) / w->batch;
	w->bufs = calloc((size_t)w->nbatches, sizeof(*w->bufs));
	w->lens = calloc((size_t)w->nbatches, sizeof(*w->lens));
	if (w->bufs == NULL || w->lens == NULL)
		return -ENOMEM;
	for (int64_t k = 0; k < w->nbatches; k++) {
		int64_t n = w->events - k * w->batch;

		if (n > w->batch)
			n = w->batch;
		payload = NULL;
		plen = 0;
		memset(&b, 0, sizeof(b));
		snprintf(b.worker_id, sizeof(b.worker_id), "%s", stream);
		b.first_seq = seq;
		for (int64_t i = 0; i < n; i++, seq++) {
			bench_event(&ev, stream, seq, now);
			if (msg_usage_event_encode(&ev, &enc, &len) != 0)
				return -EINVAL;
			payload = realloc(payload, plen + len);
			if (payload == NULL)
				return -ENOMEM;
			memcpy(payload + plen, enc, len);
			plen += len;
			free(enc);
		}
		b.last_seq = seq - 1;
		b.count = n;
		b.payload = payload;
		b.payload_len = plen;
		if (msg_usage_batch_encode(&b, &w->bufs[k], &w->lens[k]) != 0)
			return -EINVAL;
		free(payload);
	}
	return 0;
}

static void *
bench_worker_main(void *arg)
{
	struct bench_worker *w = arg;
	struct msg_usage_ack ack;
	enum msg_type t;
	char *out;
	size_t out_len;
	int64_t k = 0;
	int rv;

	while (k < w->nbatches) {
		rv = nngx_call(w->url, w->bufs[k], w->lens[k], BENCH_CALL_MS,
		    &out, &out_len);
		if (rv != 0) {
			fprintf(
			    stderr, "worker %d: %s\n", w->id, strerror(-rv));
			w->failed = 1;
			return NULL;
		}
		if (proto_peek_type(out, out_len, &t) != 0 ||
		    t != MSG_USAGE_ACK ||
		    msg_usage_ack_decode(out, out_len, &ack) != 0) {
			fprintf(stderr, "worker %d: unexpected reply\n", w->id);
			free(out);
			w->failed = 1;
			return NULL;
		}
		free(out);
		if (strcmp(ack.code, "ok") == 0) {
			k++;
		} else {
			w->busy++;
			bench_sleep_ms(1);
		}
	}
	return NULL;
}

/* The accountant's status payload field key (an integer), or -1. */
static int64_t
bench_status(const char *url, const char *key)
{
	struct msg_status_req q = {.request_id = "bench", .what = "health"};
	struct msg_status_resp r;
	char *req, *out;
	size_t len, out_len;
	int64_t v = -1;
	json_t *doc;

	if (msg_status_req_encode(&q, &req, &len) != 0)
		return -1;
	if (nngx_call(url, req, len, 5000, &out, &out_len) == 0) {
		if (msg_status_resp_decode(out, out_len, &r) == 0 &&
		    (doc = json_loadb(r.payload, r.payload_len, 0, NULL)) !=
			NULL) {
			v = json_integer_value(json_object_get(doc, key));
			json_decref(doc);
		}
		free(out);
	}
	free(req);
	return v;
}

static void
bench_rss(pid_t pid, long *ret_rss_kb, long *ret_hwm_kb)
{
	char path[64], line[256];
	FILE *f;

	*ret_rss_kb = *ret_hwm_kb = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "VmRSS:", 6) == 0)
			*ret_rss_kb = strtol(line + 6, NULL, 10);
		else if (strncmp(line, "VmHWM:", 6) == 0)
			*ret_hwm_kb = strtol(line + 6, NULL, 10);
	}
	fclose(f);
}

static int
bench_wait_ready(const char *url, struct hproc *p)
{
	int64_t deadline = clock_mono_ms() + BENCH_READY_MS;

	while (clock_mono_ms() < deadline) {
		if (bench_status(url, "queued") >= 0)
			return 0;
		if (!h_proc_alive(p))
			return -ECHILD;
		bench_sleep_ms(50);
	}
	return -ETIMEDOUT;
}

/* Publishes n events on the live path; returns the accountant's
 * committed count after it settles. */
static int
bench_live(const char *usage_url, const char *rep_url, int64_t n,
    double *ret_rate, int64_t *ret_committed)
{
	struct msg_usage_event ev;
	char *enc, *wrapped;
	size_t len, wlen;
	nng_socket pub;
	nng_msg *m;
	int64_t before, now, last = -1, t0, t_end, stable_since;
	int rv;

	if ((rv = nng_pub0_open(&pub)) != 0)
		return nngx_err(rv);
	nng_socket_set_int(pub, NNG_OPT_SENDBUF, 8192);
	if ((rv = nng_dial(pub, usage_url, NULL, 0)) != 0) {
		nng_close(pub);
		return nngx_err(rv);
	}
	bench_sleep_ms(300); /* let the subscription reach the publisher */
	before = bench_status(rep_url, "events_committed");
	t0 = t_end = stable_since = clock_mono_ms();
	now = clock_real_ms();
	for (int64_t i = 1; i <= n; i++) {
		bench_event(&ev, "live:0000000000000000", 0, now);
		snprintf(ev.event_id, sizeof(ev.event_id), "live-%" PRId64, i);
		if (msg_usage_event_encode(&ev, &enc, &len) != 0 ||
		    proto_topic_wrap(
			PROTO_TOPIC_USAGE, enc, len, &wrapped, &wlen) != 0 ||
		    nngx_msg_new(wrapped, wlen, &m) != 0)
			return -ENOMEM;
		free(enc);
		free(wrapped);
		if (nng_sendmsg(pub, m, 0) != 0)
			nng_msg_free(m);
	}
	/* Until the committed count stops moving for a second. */
	for (;;) {
		now = bench_status(rep_url, "events_committed");
		if (now != last) {
			last = now;
			stable_since = clock_mono_ms();
			t_end = stable_since;
		} else if (clock_mono_ms() - stable_since > 1000 ||
			   clock_mono_ms() - t0 > BENCH_DRAIN_MS) {
			break;
		}
		bench_sleep_ms(20);
	}
	nng_close(pub);
	*ret_committed = last - before;
	*ret_rate = (double)(last - before) * 1000.0 /
		    (double)(t_end - t0 > 0 ? t_end - t0 : 1);
	return 0;
}

int
main(int argc, char **argv)
{
	int64_t events = 200000, live = 100000, t0, t1, committed = 0;
	int workers = 4, batch = 1000, ch, rv, status = 1;
	struct bench_worker *w = NULL;
	pthread_t th[BENCH_WORKERS];
	char root[] = "/tmp/aiproxy-bench-acct-XXXXXX";
	char env_s[5][PATH_MAX + 64], *env[6], rep_url[64], usage_url[64];
	char log[PATH_MAX + 32], *bin;
	struct hproc acct;
	struct h_pg pg;
	long rss, hwm;
	double rate, live_rate = 0;

	memset(&acct, 0, sizeof(acct));

	while ((ch = getopt(argc, argv, "n:w:b:l:h")) != -1) {
		switch (ch) {
		case 'n':
			events = strtoll(optarg, NULL, 10);
			break;
		case 'w':
			workers = (int)strtol(optarg, NULL, 10);
			break;
		case 'b':
			batch = (int)strtol(optarg, NULL, 10);
			break;
		case 'l':
			live = strtoll(optarg, NULL, 10);
			break;
		default:
			fprintf(stderr, "usage: aiproxy-accountant-bench [-n "
					"events] [-w workers] [-b batch] [-l "
					"live_events]\n");
			return ch == 'h' ? 0 : 1;
		}
	}
	if (events < 1 || events > 10000000 || workers < 1 ||
	    workers > BENCH_WORKERS || batch < 1 ||
	    batch > PROTO_USAGE_BATCH_MAX || live < 0 || live > 10000000) {
		fprintf(stderr, "bench: values out of range\n");
		return 1;
	}
	setenv("AIPROXY_BUILD_DIR", AIPROXY_BENCH_BUILD_DIR, 0);
	setenv("AIPROXY_SOURCE_DIR", AIPROXY_BENCH_SOURCE_DIR, 0);
	signal(SIGPIPE, SIG_IGN);
	if (mkdtemp(root) == NULL || chmod(root, 0711) != 0 ||
	    setenv("TMPDIR", root, 1) != 0) {
		perror("bench: temporary folder");
		return 1;
	}
	if ((rv = h_pg_start(&pg)) != 0) {
		fprintf(stderr, "bench: PostgreSQL: %s\n", strerror(-rv));
		goto out_root;
	}
	if ((bin = h_bin_path("aiproxy-accountant")) == NULL) {
		fprintf(stderr, "bench: aiproxy-accountant is not built\n");
		goto out_pg;
	}
	snprintf(rep_url, sizeof(rep_url), "tcp://127.0.0.1:%d", h_free_port());
	snprintf(
	    usage_url, sizeof(usage_url), "tcp://127.0.0.1:%d", h_free_port());
	snprintf(
	    env_s[0], sizeof(env_s[0]), "AI_PROXY_ACCOUNTANT_URL=%s", rep_url);
	snprintf(
	    env_s[1], sizeof(env_s[1]), "AI_PROXY_USAGE_URL=%s", usage_url);
	snprintf(
	    env_s[2], sizeof(env_s[2]), "AI_PROXY_STATE_DIR=%s/state", root);
	snprintf(env_s[3], sizeof(env_s[3]), "DATABASE_URL=%s", pg.url);
	snprintf(env_s[4], sizeof(env_s[4]), "LOG_LEVEL=warn");
	for (int i = 0; i < 5; i++)
		env[i] = env_s[i];
	env[5] = NULL;
	snprintf(log, sizeof(log), "%s/accountant.log", root);
	{
		char *args[] = {bin, NULL};

		rv = h_proc_start(&acct, "accountant", args, env, log, NULL);
	}
	free(bin);
	if (rv != 0 || bench_wait_ready(rep_url, &acct) != 0) {
		fprintf(
		    stderr, "bench: the accountant did not start (%s)\n", log);
		goto out_acct;
	}

	if ((w = calloc((size_t)workers, sizeof(*w))) == NULL)
		goto out_acct;
	for (int i = 0; i < workers; i++) {
		w[i].id = i;
		w[i].url = rep_url;
		w[i].events = events / workers + (i < events % workers);
		w[i].batch = batch;
		if (bench_prepare(&w[i], clock_real_ms()) != 0) {
			fprintf(stderr, "bench: cannot prepare batches\n");
			goto out_acct;
		}
	}
	printf("accountant bench: %" PRId64 " events, %d workers, batches of "
	       "%d, PostgreSQL %s\n",
	    events, workers, batch, pg.url);
	t0 = clock_mono_ms();
	for (int i = 0; i < workers; i++)
		pthread_create(&th[i], NULL, bench_worker_main, &w[i]);
	for (int i = 0; i < workers; i++)
		pthread_join(th[i], NULL);
	t1 = clock_mono_ms();
	for (int i = 0; i < workers; i++)
		if (w[i].failed)
			goto out_acct;
	rate = (double)events * 1000.0 / (double)(t1 - t0 > 0 ? t1 - t0 : 1);
	bench_rss(acct.pid, &rss, &hwm);
	printf("catch-up path (usage_batch, acked after commit): %" PRId64
	       " events in %" PRId64 " ms = %.0f events/s (target >= 20000: "
	       "%s)\n",
	    events, t1 - t0, rate, rate >= 20000 ? "met" : "NOT met");
	printf(
	    "accountant memory after it: RSS %ld kB, peak %ld kB\n", rss, hwm);
	if (live > 0) {
		if ((rv = bench_live(usage_url, rep_url, live, &live_rate,
			 &committed)) != 0) {
			fprintf(
			    stderr, "bench: live phase: %s\n", strerror(-rv));
			goto out_acct;
		}
		bench_rss(acct.pid, &rss, &hwm);
		printf("live path (pub/sub, lossy by design): %" PRId64
		       " published, %" PRId64 " committed, %.0f events/s\n",
		    live, committed, live_rate);
		printf("accountant memory after it: RSS %ld kB, peak %ld kB\n",
		    rss, hwm);
	}
	status = 0;
out_acct:
	if (acct.pid > 0)
		h_proc_stop(&acct, SIGTERM, 10000);
	if (w != NULL)
		for (int i = 0; i < workers; i++) {
			for (int64_t k = 0; k < w[i].nbatches && w[i].bufs; k++)
				free(w[i].bufs[k]);
			free(w[i].bufs);
			free(w[i].lens);
		}
	free(w);
out_pg:
	h_pg_stop(&pg);
out_root:
	h_rmtree(root);
	return status;
}
