/*
 * Two real ratelimiter processes sharing one private Redis, driven over
 * nng with the proto messages (the gateway's side):
 *
 *   minute      the replicas agree; the 61st request of a minute is refused
 *               with Retry-After, then admitted again after it
 *   hour        the hour limit, with its own Retry-After
 *   ip_cap      1,000 requests from one IP, each with a new session id:
 *               admitted <= the IP cap
 *   money       $1.00 left, 200 concurrent $0.10 requests: 10 admitted;
 *               after settling, the day's spend <= the limit
 *   redis_down  Redis killed under load: degraded verdicts, never an
 *               error; restarted: back to Redis by itself
 *   blocks      blocked by threat score, listed and lifted by the admin
 *               messages, from either replica
 *   check_batch a limit_check_batch over Redis: its checks decided in
 *               parallel, exactly the limit admitted, one verdict per check
 *               in order; a batch whose count lies is refused, and the
 *               daemon answers on
 */
#include "harness.h"

#include <check.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "buf.h"
#include "proto.h"

static Suite *ratelimiter_suite(void);

#define T_READY_MS 15000 /* start-up, generous for sanitizer builds */
#define T_CALL_MS  3000
#define T_ENV_MAX  16
#define T_ENV_LEN  256

struct t_rl {
	struct hproc proc;
	char url[64];
	char log[PATH_MAX];
	char env_s[T_ENV_MAX][T_ENV_LEN];
	char *env[T_ENV_MAX + 1];
	int nenv;
	nng_socket sock; /* req, dialed to url */
	bool open;
};

static char *t_dir;
static struct h_redis t_redis;
static struct t_rl t_a, t_b;

static int64_t
t_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
t_nap_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static void __attribute__((format(printf, 2, 3)))
t_env(struct t_rl *d, const char *fmt, ...)
{
	va_list ap;
	int n;

	ck_assert_int_lt(d->nenv, T_ENV_MAX);
	va_start(ap, fmt);
	n = vsnprintf(d->env_s[d->nenv], T_ENV_LEN, fmt, ap);
	va_end(ap);
	ck_assert(n > 0 && n < T_ENV_LEN);
	d->env[d->nenv] = d->env_s[d->nenv];
	d->nenv++;
	d->env[d->nenv] = NULL;
}

/* ---- one request, one reply ---- */

/* Sends m (type t) on d's socket and decodes the reply as want into r.
 * Returns 0, or a negative errno when there was no reply of that type.
 * Caller frees *ret_buf (payloads borrow from it). */
static int
t_try(struct t_rl *d, enum msg_type t, const void *m, enum msg_type want,
    union proto_msg *r, char **ret_buf)
{
	char *req;
	size_t len;
	nng_msg *msg;
	enum msg_type got;
	int rv;

	*ret_buf = NULL;
	if ((rv = proto_msg_encode(t, m, &req, &len)) != 0)
		return rv;
	rv = nng_msg_alloc(&msg, len);
	if (rv == 0) {
		memcpy(nng_msg_body(msg), req, len);
		if ((rv = nng_sendmsg(d->sock, msg, 0)) != 0)
			nng_msg_free(msg);
	}
	free(req);
	if (rv != 0)
		return -EIO;
	if ((rv = nng_recvmsg(d->sock, &msg, 0)) != 0)
		return rv == NNG_ETIMEDOUT ? -ETIMEDOUT : -EIO;
	len = nng_msg_len(msg);
	*ret_buf = malloc(len > 0 ? len : 1);
	ck_assert_ptr_nonnull(*ret_buf);
	memcpy(*ret_buf, nng_msg_body(msg), len);
	nng_msg_free(msg);
	if (proto_peek_type(*ret_buf, len, &got) != 0 || got != want)
		return -EPROTO;
	return proto_msg_decode(want, *ret_buf, len, r);
}

static void
t_call(struct t_rl *d, enum msg_type t, const void *m, enum msg_type want,
    union proto_msg *r)
{
	char *buf;
	int rv = t_try(d, t, m, want, r, &buf);

	ck_assert_msg(
	    rv == 0, "%s -> %s: %d", msg_type_str(t), msg_type_str(want), rv);
	/* Only fixed-size fields are read afterwards. */
	if (want == MSG_STATUS_RESP)
		r->status_resp.payload = NULL;
	free(buf);
}

static void
t_open(struct t_rl *d)
{
	ck_assert_int_eq(nng_req0_open(&d->sock), 0);
	ck_assert_int_eq(
	    nng_socket_set_ms(d->sock, NNG_OPT_RECVTIMEO, T_CALL_MS), 0);
	ck_assert_int_eq(
	    nng_socket_set_ms(d->sock, NNG_OPT_SENDTIMEO, T_CALL_MS), 0);
	/* No automatic resend: one request, one decision. */
	ck_assert_int_eq(nng_socket_set_ms(d->sock, NNG_OPT_REQ_RESENDTIME,
			     NNG_DURATION_INFINITE),
	    0);
	ck_assert_int_eq(nng_dial(d->sock, d->url, NULL, NNG_FLAG_NONBLOCK), 0);
	d->open = true;
}

/* ---- processes ---- */

/* A ratelimiter on a fresh port with the common environment plus extra
 * ("NAME=value", NULL-terminated); waits until it answers a ping. */
static void
t_rl_start(struct t_rl *d, const char *name, const char *const *extra)
{
	struct msg_ping ping = {.request_id = "", .ts_us = 1};
	char *argv[3], *bin, state[PATH_MAX];
	union proto_msg r;
	int64_t until;
	char *buf;
	int rv;

	memset(d, 0, sizeof(*d));
	snprintf(d->url, sizeof(d->url), "tcp://127.0.0.1:%d", h_free_port());
	snprintf(d->log, sizeof(d->log), "%s/%s.log", t_dir, name);
	snprintf(state, sizeof(state), "%s/%s-state", t_dir, name);
	t_env(d, "AI_PROXY_RATELIMITER_URL=%s", d->url);
	t_env(d, "AI_PROXY_STATE_DIR=%s", state);
	t_env(d, "REDIS_ENABLED=true");
	t_env(d, "REDIS_URL=%s", t_redis.url);
	t_env(d, "REDIS_MAX_CONNECTIONS=4");
	t_env(d, "AI_PROXY_RATELIMITER_REPLICAS=2");
	t_env(d, "LOG_LEVEL=info");
	for (int i = 0; extra != NULL && extra[i] != NULL; i++)
		t_env(d, "%s", extra[i]);
	bin = h_bin_path("aiproxy-ratelimiter");
	ck_assert_msg(bin != NULL, "aiproxy-ratelimiter is not built");
	argv[0] = bin;
	argv[1] = "-d";
	argv[2] = NULL;
	rv = h_proc_start(&d->proc, name, argv, d->env, d->log, NULL);
	free(bin);
	ck_assert_msg(rv == 0, "start: %s", strerror(-rv));
	t_open(d);
	until = t_ms() + T_READY_MS;
	for (;;) {
		rv = t_try(d, MSG_PING, &ping, MSG_PONG, &r, &buf);
		free(buf);
		if (rv == 0)
			break;
		ck_assert_msg(h_proc_alive(&d->proc), "%s exited", name);
		ck_assert_msg(t_ms() < until, "%s never answered", name);
		t_nap_ms(20);
	}
}

static void
t_rl_stop(struct t_rl *d)
{
	if (d->open)
		nng_close(d->sock);
	d->open = false;
	if (d->proc.pid > 0) {
		int st = h_proc_stop(&d->proc, SIGTERM, 10000);

		ck_assert_msg(st == 0, "ratelimiter exit status %d", st);
	}
	d->proc.pid = 0;
}

/* Both replicas with the same extra environment. */
static void
t_start_pair(const char *const *extra)
{
	t_rl_start(&t_a, "rl-a", extra);
	t_rl_start(&t_b, "rl-b", extra);
}

static void
t_setup(void)
{
	int rv;

	t_dir = h_tmpdir("rl-it");
	ck_assert_ptr_nonnull(t_dir);
	rv = h_redis_start(&t_redis);
	ck_assert_msg(rv == 0, "redis: %s", strerror(-rv));
	memset(&t_a, 0, sizeof(t_a));
	memset(&t_b, 0, sizeof(t_b));
}

static void
t_teardown(void)
{
	t_rl_stop(&t_a);
	t_rl_stop(&t_b);
	h_redis_stop(&t_redis);
	h_rmtree(t_dir);
	free(t_dir);
	t_dir = NULL;
}

/* ---- messages ---- */

static struct msg_limit_verdict
t_check(struct t_rl *d, const char *type, const char *id, const char *ip,
    int64_t reserve, int64_t threat)
{
	struct msg_limit_check m;
	union proto_msg r;

	memset(&m, 0, sizeof(m));
	snprintf(m.request_id, sizeof(m.request_id), "req-%ld", random());
	snprintf(m.subject_type, sizeof(m.subject_type), "%s", type);
	snprintf(m.subject_id, sizeof(m.subject_id), "%s", id);
	snprintf(m.ip, sizeof(m.ip), "%s", ip);
	snprintf(m.provider, sizeof(m.provider), "claude");
	snprintf(m.model, sizeof(m.model), "claude-3-5-haiku-20241022");
	m.reserve_micro_usd = reserve;
	m.threat = threat;
	t_call(d, MSG_LIMIT_CHECK, &m, MSG_LIMIT_VERDICT, &r);
	ck_assert_str_eq(r.limit_verdict.request_id, m.request_id);
	return r.limit_verdict;
}

static struct msg_ack
t_settle(struct t_rl *d, const char *type, const char *id, const char *rsv,
    int64_t actual)
{
	struct msg_limit_settle m;
	union proto_msg r;

	memset(&m, 0, sizeof(m));
	snprintf(m.request_id, sizeof(m.request_id), "settle-1");
	snprintf(m.subject_type, sizeof(m.subject_type), "%s", type);
	snprintf(m.subject_id, sizeof(m.subject_id), "%s", id);
	snprintf(m.reservation_id, sizeof(m.reservation_id), "%s", rsv);
	m.reserved_micro_usd = 100000;
	m.actual_micro_usd = actual;
	t_call(d, MSG_LIMIT_SETTLE, &m, MSG_ACK, &r);
	return r.ack;
}

static struct msg_quota_resp
t_quota(struct t_rl *d, const char *type, const char *id)
{
	struct msg_quota_req m;
	union proto_msg r;

	memset(&m, 0, sizeof(m));
	snprintf(m.subject_type, sizeof(m.subject_type), "%s", type);
	snprintf(m.subject_id, sizeof(m.subject_id), "%s", id);
	t_call(d, MSG_QUOTA_REQ, &m, MSG_QUOTA_RESP, &r);
	return r.quota_resp;
}

/* The status state ("up", "degraded"). */
static void
t_state(struct t_rl *d, char *out, size_t len)
{
	struct msg_status_req m = {.request_id = "", .what = "health"};
	union proto_msg r;

	t_call(d, MSG_STATUS_REQ, &m, MSG_STATUS_RESP, &r);
	snprintf(out, len, "%s", r.status_resp.state);
}

static void
t_wait_state(struct t_rl *d, const char *want, int timeout_ms)
{
	int64_t until = t_ms() + timeout_ms;
	char state[32];

	for (;;) {
		t_state(d, state, sizeof(state));
		if (strcmp(state, want) == 0)
			return;
		ck_assert_msg(
		    t_ms() < until, "state %s, never %s", state, want);
		t_nap_ms(50);
	}
}

/* ---- tests ---- */

/* The replicas share every count: 60 alternating requests use one
 * bucket; the 61st is refused by both with Retry-After, and admitted
 * again once that has passed. */
START_TEST(test_minute)
{
	static const char *const env[] = {"AI_PROXY_RATE_LIMIT_PER_MINUTE=60",
	    "AI_PROXY_RATE_LIMIT_PER_HOUR=1000", NULL};
	struct msg_limit_verdict v;
	struct msg_quota_resp q;
	int64_t refused_at, waited;
	int i, refusals = 0;

	t_start_pair(env);
	for (i = 0; i < 60; i++) {
		v = t_check(
		    i % 2 ? &t_b : &t_a, "user", "alice", "127.0.0.1", 0, 0);
		ck_assert_msg(v.allow, "request %d refused: %s", i + 1, v.code);
		ck_assert(!v.degraded);
		ck_assert_int_eq(v.limit, 60);
		ck_assert_int_eq(v.remaining, 59 - i);
	}
	v = t_check(&t_a, "user", "alice", "127.0.0.1", 0, 0);
	refused_at = t_ms();
	ck_assert(!v.allow);
	ck_assert_str_eq(v.code, "rate_limit_minute");
	ck_assert_int_eq(v.retry_after_s, 1);
	ck_assert_int_eq(v.limit, 60);
	ck_assert_int_eq(v.remaining, 0);
	v = t_check(&t_b, "user", "alice", "127.0.0.1", 0, 0);
	ck_assert(!v.allow);
	ck_assert_str_eq(v.code, "rate_limit_minute");
	q = t_quota(&t_b, "user", "alice");
	ck_assert_int_eq(q.minute_limit, 60);
	ck_assert_int_eq(q.minute_used, 60);
	ck_assert_int_eq(q.hour_used, 60);
	/* Poll (refusals consume nothing) until admitted. */
	for (;;) {
		v = t_check(refusals % 2 ? &t_a : &t_b, "user", "alice",
		    "127.0.0.1", 0, 0);
		if (v.allow)
			break;
		refusals++;
		ck_assert_str_eq(v.code, "rate_limit_minute");
		ck_assert_int_lt(t_ms() - refused_at, 3000);
		t_nap_ms(25);
	}
	waited = t_ms() - refused_at;
	ck_assert_int_ge(refusals, 1);
	ck_assert_int_le(waited, 1000 + 250);
	ck_assert_int_eq(v.remaining, 0);
	/* And one only. */
	ck_assert(!t_check(&t_a, "user", "alice", "127.0.0.1", 0, 0).allow);
}
END_TEST

START_TEST(test_hour)
{
	static const char *const env[] = {"AI_PROXY_RATE_LIMIT_PER_MINUTE=100",
	    "AI_PROXY_RATE_LIMIT_PER_HOUR=5", NULL};
	struct msg_limit_verdict v;
	int i;

	t_start_pair(env);
	for (i = 0; i < 5; i++) {
		v = t_check(i % 2 ? &t_b : &t_a, "session",
		    "sess-hour-0123456789", "127.0.0.1", 0, 0);
		ck_assert(v.allow);
		/* The hour is the tightest limit. */
		ck_assert_int_eq(v.limit, 5);
		ck_assert_int_eq(v.remaining, 4 - i);
	}
	v = t_check(&t_b, "session", "sess-hour-0123456789", "127.0.0.1", 0, 0);
	ck_assert(!v.allow);
	ck_assert_str_eq(v.code, "rate_limit_hour");
	ck_assert_int_eq(v.limit, 5);
	/* One slot every 720 s. */
	ck_assert_int_ge(v.retry_after_s, 715);
	ck_assert_int_le(v.retry_after_s, 720);
	/* Another subject is not affected. */
	ck_assert(
	    t_check(&t_a, "session", "sess-other-0123456789", "127.0.0.1", 0, 0)
		.allow);
}
END_TEST

START_TEST(test_ip_cap)
{
	static const char *const env[] = {
	    "AI_PROXY_RATE_LIMIT_PER_IP_MINUTE=30", NULL};
	struct msg_limit_verdict v;
	int ok = 0, capped = 0, blocked = 0, i;
	int64_t t0, elapsed;
	char sid[64];

	t_start_pair(env);
	t0 = t_ms();
	for (i = 0; i < 1000; i++) {
		snprintf(sid, sizeof(sid), "rotating-session-%06d", i);
		v = t_check(
		    i % 2 ? &t_b : &t_a, "session", sid, "198.51.100.20", 0, 0);
		if (v.allow)
			ok++;
		else if (strcmp(v.code, "ip_rate_limit") == 0)
			capped++;
		else if (strcmp(v.code, "blocked") == 0)
			blocked++;
		else
			ck_abort_msg("request %d: %s", i, v.code);
	}
	elapsed = t_ms() - t0;
	printf("ip_cap: %d admitted, %d capped, %d blocked in %lld ms\n", ok,
	    capped, blocked, (long long)elapsed);
	/* The cap, plus what refilled meanwhile (one per 2 s). */
	ck_assert_int_le(ok, 30 + (int)(elapsed / 2000) + 1);
	ck_assert_int_ge(ok, 30);
	ck_assert_int_gt(capped, 0);
	/* Session churn from one address blocks it. */
	ck_assert_int_gt(blocked, 800);
}
END_TEST

struct t_racer {
	const char *url;
	pthread_barrier_t *go;
	struct msg_limit_verdict v;
	int rv;
};

static void *
t_race_main(void *arg)
{
	struct t_racer *r = arg;
	struct msg_limit_check m;
	union proto_msg rep;
	struct t_rl d;
	char *buf;

	memset(&d, 0, sizeof(d));
	snprintf(d.url, sizeof(d.url), "%s", r->url);
	memset(&m, 0, sizeof(m));
	snprintf(m.request_id, sizeof(m.request_id), "race-%p", (void *)r);
	snprintf(m.subject_type, sizeof(m.subject_type), "user");
	snprintf(m.subject_id, sizeof(m.subject_id), "rich");
	snprintf(m.ip, sizeof(m.ip), "127.0.0.1");
	m.reserve_micro_usd = 100000;
	t_open(&d);
	pthread_barrier_wait(r->go);
	r->rv = t_try(&d, MSG_LIMIT_CHECK, &m, MSG_LIMIT_VERDICT, &rep, &buf);
	if (r->rv == 0)
		r->v = rep.limit_verdict;
	free(buf);
	nng_close(d.sock);
	return NULL;
}

START_TEST(test_money)
{
	static const char *const env[] = {"AI_PROXY_COST_LIMIT_DAILY=1.00",
	    "AI_PROXY_RATE_LIMIT_PER_MINUTE=1000",
	    "AI_PROXY_RATE_LIMIT_PER_HOUR=10000",
	    "AI_PROXY_RATE_LIMIT_PER_IP_MINUTE=10000", NULL};
	static struct t_racer r[200];
	pthread_barrier_t go;
	pthread_t th[200];
	struct msg_quota_resp q;
	struct msg_ack a;
	int i, ok = 0, settled = 0;

	t_start_pair(env);
	ck_assert_int_eq(pthread_barrier_init(&go, NULL, 200), 0);
	for (i = 0; i < 200; i++) {
		memset(&r[i], 0, sizeof(r[i]));
		r[i].url = i % 2 ? t_b.url : t_a.url;
		r[i].go = &go;
		ck_assert_int_eq(
		    pthread_create(&th[i], NULL, t_race_main, &r[i]), 0);
	}
	for (i = 0; i < 200; i++) {
		pthread_join(th[i], NULL);
		ck_assert_msg(
		    r[i].rv == 0, "request %d: no verdict (%d)", i, r[i].rv);
		ck_assert(!r[i].v.degraded);
		if (r[i].v.allow) {
			ok++;
			ck_assert_int_eq(r[i].v.reservation_id[0], 'r');
		} else {
			ck_assert_str_eq(r[i].v.code, "daily_cost_limit");
		}
	}
	pthread_barrier_destroy(&go);
	ck_assert_int_eq(ok, 10);
	q = t_quota(&t_a, "user", "rich");
	ck_assert_int_eq(q.cost_reserved_micro_usd, 1000000);
	/* The calls cost $0.08 each: settle on either replica. */
	for (i = 0; i < 200; i++) {
		if (!r[i].v.allow)
			continue;
		a = t_settle(settled % 2 ? &t_a : &t_b, "user", "rich",
		    r[i].v.reservation_id, 80000);
		ck_assert(a.ok);
		ck_assert_str_eq(a.message, "settled");
		settled++;
	}
	q = t_quota(&t_b, "user", "rich");
	ck_assert_int_eq(q.cost_used_micro_usd, 800000);
	ck_assert_int_eq(q.cost_reserved_micro_usd, 0);
	ck_assert_int_le(q.cost_used_micro_usd + q.cost_reserved_micro_usd,
	    q.cost_limit_micro_usd);
	ck_assert_int_eq(q.cost_limit_micro_usd, 1000000);
	/* $0.20 left: two more $0.10 requests, not a third. */
	ck_assert(t_check(&t_a, "user", "rich", "127.0.0.1", 100000, 0).allow);
	ck_assert(t_check(&t_b, "user", "rich", "127.0.0.1", 100000, 0).allow);
	ck_assert(!t_check(&t_a, "user", "rich", "127.0.0.1", 100000, 0).allow);
}
END_TEST

struct t_load {
	atomic_bool stop;
	atomic_int verdicts;
	atomic_int degraded;
	atomic_int errors;
	atomic_int refused;
	atomic_int after_restart; /* non-degraded verdicts after flag */
	atomic_bool restarted;
};

static void *
t_load_main(void *arg)
{
	struct t_load *l = arg;
	struct msg_limit_check m;
	struct t_rl d[2];
	union proto_msg rep;
	char *buf;
	int i = 0, rv;

	memset(d, 0, sizeof(d));
	snprintf(d[0].url, sizeof(d[0].url), "%s", t_a.url);
	snprintf(d[1].url, sizeof(d[1].url), "%s", t_b.url);
	t_open(&d[0]);
	t_open(&d[1]);
	while (!atomic_load(&l->stop)) {
		memset(&m, 0, sizeof(m));
		snprintf(m.request_id, sizeof(m.request_id), "load-%d", i);
		snprintf(m.subject_type, sizeof(m.subject_type), "user");
		snprintf(m.subject_id, sizeof(m.subject_id), "load-%d", i % 50);
		snprintf(m.ip, sizeof(m.ip), "10.20.%d.%d", i % 7, i % 11);
		rv = t_try(&d[i % 2], MSG_LIMIT_CHECK, &m, MSG_LIMIT_VERDICT,
		    &rep, &buf);
		free(buf);
		if (rv != 0) {
			atomic_fetch_add(&l->errors, 1);
		} else {
			atomic_fetch_add(&l->verdicts, 1);
			if (rep.limit_verdict.degraded)
				atomic_fetch_add(&l->degraded, 1);
			else if (atomic_load(&l->restarted))
				atomic_fetch_add(&l->after_restart, 1);
			if (!rep.limit_verdict.allow)
				atomic_fetch_add(&l->refused, 1);
		}
		i++;
		t_nap_ms(2);
	}
	nng_close(d[0].sock);
	nng_close(d[1].sock);
	return NULL;
}

START_TEST(test_redis_down)
{
	static const char *const env[] = {
	    "AI_PROXY_RATE_LIMIT_PER_MINUTE=100000",
	    "AI_PROXY_RATE_LIMIT_PER_HOUR=1000000",
	    "AI_PROXY_RATE_LIMIT_PER_IP_MINUTE=1000000", NULL};
	static struct t_load load;
	struct msg_limit_verdict v, before;
	struct msg_quota_resp q;
	struct msg_ack a;
	pthread_t th;
	int64_t t0;
	int n;

	t_start_pair(env);
	/* Money held in Redis before the outage. */
	before = t_check(&t_a, "user", "payer", "127.0.0.1", 100000, 0);
	ck_assert(before.allow);
	ck_assert_int_eq(before.reservation_id[0], 'r');
	memset(&load, 0, sizeof(load));
	ck_assert_int_eq(pthread_create(&th, NULL, t_load_main, &load), 0);
	while (atomic_load(&load.verdicts) < 50)
		t_nap_ms(10);

	/* Killed mid-load. */
	ck_assert_int_ge(h_proc_stop(&t_redis.proc, SIGKILL, 5000), 0);
	t_redis.proc.pid = 0;
	t0 = t_ms();
	t_wait_state(&t_a, "degraded", 5000);
	t_wait_state(&t_b, "degraded", 5000);
	v = t_check(&t_a, "user", "someone", "127.0.0.1", 0, 0);
	ck_assert(v.allow);
	ck_assert(v.degraded);
	n = atomic_load(&load.degraded);
	while (atomic_load(&load.degraded) < n + 50)
		t_nap_ms(10);
	printf(
	    "redis_down: degraded within %lld ms\n", (long long)(t_ms() - t0));
	/* Money during the outage: a settle of the Redis reservation, and
	 * an in-process reservation settled too.  Both reach Redis later. */
	a = t_settle(&t_a, "user", "payer", before.reservation_id, 70000);
	ck_assert(a.ok);
	v = t_check(&t_a, "user", "payer", "127.0.0.1", 50000, 0);
	ck_assert(v.allow);
	ck_assert(v.degraded);
	ck_assert_int_eq(v.reservation_id[0], 'm');
	a = t_settle(&t_a, "user", "payer", v.reservation_id, 40000);
	ck_assert(a.ok);
	ck_assert_str_eq(a.message, "settled");
	q = t_quota(&t_a, "user", "payer");
	ck_assert(q.degraded);
	ck_assert_int_eq(q.cost_used_micro_usd, 110000);

	/* Back, empty, on the same port: both return to it by themselves. */
	ck_assert_int_eq(h_redis_restart(&t_redis), 0);
	t0 = t_ms();
	t_wait_state(&t_a, "up", 5000);
	t_wait_state(&t_b, "up", 5000);
	printf("redis_down: back within %lld ms\n", (long long)(t_ms() - t0));
	/* The settles kept while Redis was down were replayed into it. */
	q = t_quota(&t_b, "user", "payer");
	ck_assert(!q.degraded);
	ck_assert_int_eq(q.cost_used_micro_usd, 110000);
	ck_assert_int_eq(q.cost_reserved_micro_usd, 0);
	atomic_store(&load.restarted, true);
	while (atomic_load(&load.after_restart) < 50)
		t_nap_ms(10);
	atomic_store(&load.stop, true);
	pthread_join(th, NULL);
	v = t_check(&t_b, "user", "someone", "127.0.0.1", 0, 0);
	ck_assert(v.allow);
	ck_assert(!v.degraded);
	printf("redis_down: %d verdicts, %d degraded, %d errors\n",
	    atomic_load(&load.verdicts), atomic_load(&load.degraded),
	    atomic_load(&load.errors));
	/* Never an error, never a refusal (the limits are far away). */
	ck_assert_int_eq(atomic_load(&load.errors), 0);
	ck_assert_int_eq(atomic_load(&load.refused), 0);
}
END_TEST

START_TEST(test_blocks)
{
	struct msg_threat_report tr;
	struct msg_block_list bl = {.request_id = "admin-1", .max = 100};
	struct msg_unblock ub;
	struct msg_limit_verdict v;
	union proto_msg r;
	json_t *doc;
	char *buf;
	int i;

	t_start_pair(NULL);
	/* Prompt-injection points with the checks: the 5th blocks. */
	for (i = 0; i < 4; i++)
		ck_assert(t_check(
		    i % 2 ? &t_b : &t_a, "user", "mallory", "192.0.2.10", 0, 20)
			      .allow);
	v = t_check(&t_b, "user", "mallory", "192.0.2.11", 0, 21);
	ck_assert(!v.allow);
	ck_assert_str_eq(v.code, "blocked");
	ck_assert_int_ge(v.retry_after_s, 899);
	ck_assert_int_le(v.retry_after_s, 900);
	/* Auth failures reported for an address. */
	memset(&tr, 0, sizeof(tr));
	snprintf(tr.request_id, sizeof(tr.request_id), "gw-1");
	snprintf(tr.ip, sizeof(tr.ip), "192.0.2.99");
	snprintf(tr.reason, sizeof(tr.reason), "auth_failure");
	tr.points = 101;
	t_call(&t_a, MSG_THREAT_REPORT, &tr, MSG_ACK, &r);
	ck_assert(r.ack.ok);
	ck_assert_str_eq(r.ack.code, "blocked");
	ck_assert_str_eq(
	    t_check(&t_b, "session", "sess-innocent-0123", "192.0.2.99", 0, 0)
		.code,
	    "blocked");

	/* Listed by the other replica. */
	ck_assert_int_eq(
	    t_try(&t_b, MSG_BLOCK_LIST, &bl, MSG_BLOCK_LIST_RESP, &r, &buf), 0);
	ck_assert_int_eq(r.block_list_resp.total, 2);
	doc = json_loadb(
	    r.block_list_resp.payload, r.block_list_resp.payload_len, 0, NULL);
	ck_assert_ptr_nonnull(doc);
	ck_assert_int_eq(json_array_size(doc), 2);
	ck_assert_str_eq(
	    json_string_value(json_object_get(json_array_get(doc, 0), "id")),
	    "mallory");
	ck_assert_str_eq(json_string_value(
			     json_object_get(json_array_get(doc, 1), "reason")),
	    "auth_failure");
	json_decref(doc);
	free(buf);

	/* Lifted on one replica, for both. */
	memset(&ub, 0, sizeof(ub));
	snprintf(ub.request_id, sizeof(ub.request_id), "admin-2");
	snprintf(ub.kind, sizeof(ub.kind), "user");
	snprintf(ub.id, sizeof(ub.id), "mallory");
	t_call(&t_a, MSG_UNBLOCK, &ub, MSG_ACK, &r);
	ck_assert(r.ack.ok);
	v = t_check(&t_b, "user", "mallory", "192.0.2.12", 0, 0);
	ck_assert_msg(v.allow, "%s", v.code);
	t_call(&t_b, MSG_UNBLOCK, &ub, MSG_ACK, &r);
	ck_assert(!r.ack.ok);
	ck_assert_str_eq(r.ack.code, "not_found");
	snprintf(ub.kind, sizeof(ub.kind), "ip");
	snprintf(ub.id, sizeof(ub.id), "192.0.2.99");
	t_call(&t_b, MSG_UNBLOCK, &ub, MSG_ACK, &r);
	ck_assert(r.ack.ok);
	ck_assert(
	    t_check(&t_a, "session", "sess-innocent-0123", "192.0.2.99", 0, 0)
		.allow);
}
END_TEST

#define T_BATCH 8

/* The gateway's group commit as the ratelimiter sees it: 8 checks of one
 * user in one limit_check_batch against a minute limit of 5 (decided in
 * parallel over the Redis pool): 5 admitted, 3 refused, the verdicts in
 * the checks' order; then one check more is refused alone. */
START_TEST(test_check_batch)
{
	static const char *const env[] = {"AI_PROXY_RATE_LIMIT_PER_MINUTE=5",
	    "AI_PROXY_RATE_LIMIT_PER_HOUR=1000", NULL};
	struct msg_limit_check c[T_BATCH];
	struct msg_limit_check_batch b;
	struct buf payload;
	union proto_msg r;
	const char *p, *end, *nl;
	char *enc, *reply = NULL;
	size_t len;
	int allowed = 0, refused = 0, i;

	t_start_pair(env);
	buf_init(&payload, 1 << 20);
	for (i = 0; i < T_BATCH; i++) {
		memset(&c[i], 0, sizeof(c[i]));
		snprintf(c[i].request_id, sizeof(c[i].request_id),
		    "batch-req-%d", i);
		snprintf(c[i].subject_type, sizeof(c[i].subject_type), "user");
		snprintf(c[i].subject_id, sizeof(c[i].subject_id), "batcher");
		snprintf(c[i].ip, sizeof(c[i].ip), "127.0.0.1");
		snprintf(c[i].provider, sizeof(c[i].provider), "claude");
		snprintf(c[i].model, sizeof(c[i].model),
		    "claude-3-5-haiku-20241022");
		c[i].reserve_micro_usd = 1000;
		ck_assert_int_eq(msg_limit_check_encode(&c[i], &enc, &len), 0);
		ck_assert_int_eq(buf_append(&payload, enc, len), 0);
		free(enc);
	}
	memset(&b, 0, sizeof(b));
	b.count = T_BATCH;
	b.payload = payload.data;
	b.payload_len = payload.len;
	ck_assert_int_eq(t_try(&t_a, MSG_LIMIT_CHECK_BATCH, &b,
			     MSG_LIMIT_VERDICT_BATCH, &r, &reply),
	    0);
	ck_assert_int_eq(r.limit_verdict_batch.count, T_BATCH);
	p = r.limit_verdict_batch.payload;
	end = p + r.limit_verdict_batch.payload_len;
	for (i = 0; p < end; i++, p = nl + 1) {
		struct msg_limit_verdict v;

		ck_assert_int_lt(i, T_BATCH);
		ck_assert_ptr_nonnull(nl = memchr(p, '\n', (size_t)(end - p)));
		ck_assert_int_eq(
		    msg_limit_verdict_decode(p, (size_t)(nl - p) + 1, &v), 0);
		ck_assert_str_eq(v.request_id, c[i].request_id);
		ck_assert(!v.degraded);
		if (v.allow) {
			allowed++;
			ck_assert_str_eq(v.code, "ok");
			ck_assert_str_ne(v.reservation_id, "");
		} else {
			refused++;
			ck_assert_str_eq(v.code, "rate_limit_minute");
			ck_assert_int_ge(v.retry_after_s, 1);
		}
	}
	ck_assert_int_eq(i, T_BATCH);
	ck_assert_int_eq(allowed, 5);
	ck_assert_int_eq(refused, T_BATCH - 5);
	free(reply);
	ck_assert_int_eq(t_quota(&t_b, "user", "batcher").minute_used, 5);
	ck_assert(!t_check(&t_b, "user", "batcher", "127.0.0.1", 0, 0).allow);

	/* A count the payload does not hold: refused whole, nothing
	 * decided, and the daemon answers the next request. */
	b.count = T_BATCH + 1;
	ck_assert_int_eq(
	    t_try(&t_a, MSG_LIMIT_CHECK_BATCH, &b, MSG_ACK, &r, &reply), 0);
	ck_assert(!r.ack.ok);
	ck_assert_str_eq(r.ack.code, "bad_request");
	free(reply);
	buf_free(&payload);
	ck_assert_int_eq(t_quota(&t_a, "user", "batcher").minute_used, 5);
}
END_TEST

static Suite *
ratelimiter_suite(void)
{
	Suite *s = suite_create("ratelimiter");
	TCase *tc = tcase_create("two_replicas");

	tcase_add_checked_fixture(tc, t_setup, t_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_minute);
	tcase_add_test(tc, test_hour);
	tcase_add_test(tc, test_ip_cap);
	tcase_add_test(tc, test_money);
	tcase_add_test(tc, test_redis_down);
	tcase_add_test(tc, test_blocks);
	tcase_add_test(tc, test_check_batch);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(ratelimiter_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
