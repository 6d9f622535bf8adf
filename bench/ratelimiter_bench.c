/*
 * aiproxy-rl-bench: decisions per second and decision latency of running
 * ratelimiters, as the gateway sees them (one nng req/rep round trip per
 * decision).  bench/ratelimiter starts Redis and the ratelimiters and runs
 * this; it can also be pointed at any ratelimiter by hand.
 *
 *   aiproxy-rl-bench -u URL [-u URL ...] [-m ping|check|settle]
 *                    [-c connections] [-d seconds] [-n subjects]
 *
 * ping    a ping round trip: the transport alone, the baseline
 * check   limit_check of one of n users (a $0.001 reservation each)
 * settle  limit_check, then limit_settle of its reservation: the whole
 *         per-request cost on the request path
 *
 * Prints one line: mode, connections, requests, errors, refusals,
 * decisions/s and latency p50/p90/p99/max in microseconds.  Bounded: at
 * most -d seconds (<= 600) and RB_SAMPLES_MAX samples.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "clock.h"
#include "proto.h"

#define RB_URLS_MAX    8
#define RB_CONNS_MAX   256
#define RB_SAMPLES_MAX (4 * 1024 * 1024)
#define RB_CALL_MS     5000

enum rb_mode { RB_PING, RB_CHECK, RB_SETTLE };

struct rb {
	const char *urls[RB_URLS_MAX];
	int nurls;
	enum rb_mode mode;
	int conns;
	int seconds;
	int subjects;
	int64_t stop_us;
	atomic_uint_fast64_t requests;
	atomic_uint_fast64_t errors;
	atomic_uint_fast64_t refused;
	atomic_size_t nsamples;
	uint32_t *samples; /* latencies, us */
};

struct rb_thread {
	struct rb *b;
	int idx;
	pthread_t th;
};

static void
rb_usage(void)
{
	fprintf(stderr, "usage: aiproxy-rl-bench -u URL [-u URL ...] "
			"[-m ping|check|settle] [-c connections] [-d seconds] "
			"[-n subjects]\n");
	exit(2);
}

static long
rb_num(const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		rb_usage();
	return v;
}

/* One request, one reply of type want into r.  0 or -1. */
static int
rb_call(nng_socket s, enum msg_type t, const void *m, enum msg_type want,
    union proto_msg *r)
{
	nng_msg *msg;
	char *buf;
	size_t len;
	int rv;

	if (proto_msg_encode(t, m, &buf, &len) != 0)
		return -1;
	rv = nng_msg_alloc(&msg, len);
	if (rv == 0) {
		memcpy(nng_msg_body(msg), buf, len);
		if ((rv = nng_sendmsg(s, msg, 0)) != 0)
			nng_msg_free(msg);
	}
	free(buf);
	if (rv != 0 || nng_recvmsg(s, &msg, 0) != 0)
		return -1;
	rv = proto_msg_decode(want, nng_msg_body(msg), nng_msg_len(msg), r);
	nng_msg_free(msg);
	return rv == 0 ? 0 : -1;
}

static void
rb_sample(struct rb *b, int64_t us)
{
	size_t i = atomic_fetch_add(&b->nsamples, 1);

	if (i < RB_SAMPLES_MAX)
		b->samples[i] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static void *
rb_main(void *arg)
{
	struct rb_thread *t = arg;
	struct rb *b = t->b;
	union proto_msg m, r;
	nng_socket s;
	uint64_t n = 0;
	int64_t t0;
	int rv;

	if (nng_req0_open(&s) != 0)
		return NULL;
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, RB_CALL_MS);
	nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, RB_CALL_MS);
	nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	if (nng_dial(s, b->urls[t->idx % b->nurls], NULL, 0) != 0) {
		fprintf(stderr, "cannot dial %s\n", b->urls[t->idx % b->nurls]);
		nng_close(s);
		return NULL;
	}
	while (clock_mono_us() < b->stop_us) {
		memset(&m, 0, sizeof(m));
		t0 = clock_mono_us();
		if (b->mode == RB_PING) {
			m.ping.ts_us = t0;
			rv = rb_call(s, MSG_PING, &m.ping, MSG_PONG, &r);
		} else {
			struct msg_limit_check *c = &m.limit_check;

			snprintf(c->request_id, sizeof(c->request_id),
			    "b%d-%llu", t->idx, (unsigned long long)n);
			snprintf(
			    c->subject_type, sizeof(c->subject_type), "user");
			snprintf(c->subject_id, sizeof(c->subject_id),
			    "bench-%d",
			    (int)((n * 7919 + (uint64_t)t->idx) %
				  (uint64_t)b->subjects));
			snprintf(c->ip, sizeof(c->ip), "10.%d.%d.%d",
			    t->idx % 250, (int)(n / 250 % 250), (int)(n % 250));
			c->reserve_micro_usd = 1000;
			rv = rb_call(
			    s, MSG_LIMIT_CHECK, c, MSG_LIMIT_VERDICT, &r);
			if (rv == 0 && !r.limit_verdict.allow)
				atomic_fetch_add(&b->refused, 1);
			if (rv == 0 && b->mode == RB_SETTLE &&
			    r.limit_verdict.reservation_id[0] != '\0') {
				struct msg_limit_settle st;

				memset(&st, 0, sizeof(st));
				snprintf(st.request_id, sizeof(st.request_id),
				    "%s", c->request_id);
				snprintf(st.subject_type,
				    sizeof(st.subject_type), "user");
				snprintf(st.subject_id, sizeof(st.subject_id),
				    "%s", c->subject_id);
				snprintf(st.reservation_id,
				    sizeof(st.reservation_id), "%s",
				    r.limit_verdict.reservation_id);
				st.reserved_micro_usd = 1000;
				st.actual_micro_usd = 700;
				rv = rb_call(
				    s, MSG_LIMIT_SETTLE, &st, MSG_ACK, &r);
			}
		}
		if (rv != 0)
			atomic_fetch_add(&b->errors, 1);
		else
			rb_sample(b, clock_mono_us() - t0);
		atomic_fetch_add(&b->requests, 1);
		n++;
	}
	nng_close(s);
	return NULL;
}

static int
rb_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static uint32_t
rb_pct(const uint32_t *s, size_t n, double p)
{
	size_t i;

	if (n == 0)
		return 0;
	i = (size_t)(p * (double)(n - 1) + 0.5);
	return s[i < n ? i : n - 1];
}

int
main(int argc, char **argv)
{
	static const char *const modes[] = {"ping", "check", "settle"};
	static struct rb_thread th[RB_CONNS_MAX];
	struct rb b;
	int64_t t0, elapsed;
	size_t n;
	int o, i;

	memset(&b, 0, sizeof(b));
	b.mode = RB_CHECK;
	b.conns = 32;
	b.seconds = 5;
	b.subjects = 10000;
	while ((o = getopt(argc, argv, "u:m:c:d:n:")) != -1) {
		switch (o) {
		case 'u':
			if (b.nurls == RB_URLS_MAX)
				rb_usage();
			b.urls[b.nurls++] = optarg;
			break;
		case 'm':
			for (i = 0; i < 3; i++)
				if (strcmp(optarg, modes[i]) == 0)
					b.mode = (enum rb_mode)i;
			if (strcmp(optarg, modes[b.mode]) != 0)
				rb_usage();
			break;
		case 'c':
			b.conns = (int)rb_num(optarg, 1, RB_CONNS_MAX);
			break;
		case 'd':
			b.seconds = (int)rb_num(optarg, 1, 600);
			break;
		case 'n':
			b.subjects = (int)rb_num(optarg, 1, 10000000);
			break;
		default:
			rb_usage();
		}
	}
	if (b.nurls == 0 || optind != argc)
		rb_usage();
	if ((b.samples = calloc(RB_SAMPLES_MAX, sizeof(*b.samples))) == NULL)
		return 1;
	t0 = clock_mono_us();
	b.stop_us = t0 + (int64_t)b.seconds * 1000000;
	for (i = 0; i < b.conns; i++) {
		th[i].b = &b;
		th[i].idx = i;
		if (pthread_create(&th[i].th, NULL, rb_main, &th[i]) != 0)
			return 1;
	}
	for (i = 0; i < b.conns; i++)
		pthread_join(th[i].th, NULL);
	elapsed = clock_mono_us() - t0;
	n = atomic_load(&b.nsamples);
	if (n > RB_SAMPLES_MAX)
		n = RB_SAMPLES_MAX;
	qsort(b.samples, n, sizeof(*b.samples), rb_cmp);
	printf("mode=%s conns=%d requests=%llu errors=%llu refused=%llu "
	       "decisions_per_s=%.0f p50_us=%u p90_us=%u p99_us=%u max_us=%u\n",
	    modes[b.mode], b.conns,
	    (unsigned long long)atomic_load(&b.requests),
	    (unsigned long long)atomic_load(&b.errors),
	    (unsigned long long)atomic_load(&b.refused),
	    (double)atomic_load(&b.requests) * 1e6 / (double)elapsed,
	    rb_pct(b.samples, n, 0.50), rb_pct(b.samples, n, 0.90),
	    rb_pct(b.samples, n, 0.99), n > 0 ? b.samples[n - 1] : 0);
	free(b.samples);
	nng_fini();
	return atomic_load(&b.errors) == 0 ? 0 : 1;
}
