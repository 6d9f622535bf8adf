/*
 * The redis store against a private redis-server:
 *
 *   conformance  the Lua script and the memory store answer alike: one
 *                pseudo-random run of 2,000 operations (checks with and
 *                without reservations and threat points, settles, late
 *                and duplicate settles, quota, threat reports, block lists,
 *                unblocks) over many subjects, IPs and rotating sessions,
 *                on one fake clock that crosses a UTC midnight; every
 *                answer compared field by field.
 *   noscript     SCRIPT FLUSH (as after a Redis restart): loaded again.
 *   timeout      Redis paused (CLIENT PAUSE): -ETIMEDOUT after about
 *                AI_PROXY_REDIS_TIMEOUT_MS, then fine again.
 *   concurrency  $1.00 left, 200 threads reserving $0.10 over a pool of
 *                10 connections: exactly 10 admitted.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <check.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "rl_limits.h"
#include "rl_store.h"

static Suite *rl_store_suite(void);

#define S_US     RL_US_PER_S
#define MIDNIGHT (1795737600LL * S_US)

static struct h_redis t_redis;
static _Atomic int64_t fake_now;

static int64_t
fake_clock(void *arg)
{
	(void)arg;
	return atomic_load(&fake_now);
}

static void
t_setup(void)
{
	int rv = h_redis_start(&t_redis);

	ck_assert_msg(rv == 0, "redis: %s", strerror(-rv));
}

static void
t_teardown(void)
{
	h_redis_stop(&t_redis);
}

/* A command on a separate connection (test control). */
static void
t_redis_cmd(const char *fmt, ...)
{
	redisContext *c;
	redisReply *r;
	va_list ap;

	c = redisConnect("127.0.0.1", t_redis.port);
	ck_assert(c != NULL && c->err == 0);
	va_start(ap, fmt);
	r = redisvCommand(c, fmt, ap);
	va_end(ap);
	ck_assert_ptr_nonnull(r);
	ck_assert_msg(r->type != REDIS_REPLY_ERROR, "%s", r->str);
	freeReplyObject(r);
	redisFree(c);
}

/* ---- conformance ---- */

static uint64_t rng_state;

static uint64_t
rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static int
rng_below(int n)
{
	return (int)(rng() % (uint64_t)n);
}

#define NTOKENS 512

struct cf {
	struct rl_store *mem;
	struct rl_store *redis;
	struct rl_limits lim;
	/* reservations made so far: subject and token */
	char subj[NTOKENS][RL_SUBJECT_MAX + 1];
	char tok[NTOKENS][RL_TOKEN_MAX + 1];
	int ntok;
	int step;
	int counts[RL_CODE_MAX + 3];
};

static void
cf_subject(char *out, size_t len)
{
	int k = rng_below(10);

	if (k < 4)
		snprintf(out, len, "user:u%d", rng_below(3));
	else
		snprintf(out, len, "session:s%02d", rng_below(30));
}

static void
cf_ip(char *out, size_t len, const char *subject)
{
	/* Sessions come mostly from two addresses: churn happens there. */
	if (strncmp(subject, "session:", 8) == 0 && rng_below(4) != 0)
		snprintf(out, len, "10.0.0.%d", 1 + rng_below(2));
	else
		snprintf(out, len, "10.0.1.%d", 1 + rng_below(4));
}

static void
cf_op_check(struct cf *c)
{
	struct rl_verdict vm, vr;
	struct rl_check in;

	memset(&in, 0, sizeof(in));
	cf_subject(in.subject, sizeof(in.subject));
	in.session = strncmp(in.subject, "session:", 8) == 0;
	cf_ip(in.ip, sizeof(in.ip), in.subject);
	in.reserve_micro_usd = rng_below(3) == 0 ? 0 : rng_below(300000);
	in.threat = rng_below(12) == 0 ? 5 + rng_below(40) : 0;
	snprintf(in.token, sizeof(in.token), "k%d", c->step);
	ck_assert_int_eq(
	    c->mem->ops->check(c->mem->impl, &c->lim, &in, &vm), 0);
	ck_assert_int_eq(
	    c->redis->ops->check(c->redis->impl, &c->lim, &in, &vr), 0);
	ck_assert_msg(vm.code == vr.code && vm.limit == vr.limit &&
			  vm.remaining == vr.remaining &&
			  vm.reset_s == vr.reset_s &&
			  vm.retry_after_s == vr.retry_after_s &&
			  vm.reserved == vr.reserved,
	    "step %d check %s %s reserve %lld threat %lld: memory %s "
	    "%lld/%lld reset %lld retry %lld; redis %s %lld/%lld reset %lld "
	    "retry %lld",
	    c->step, in.subject, in.ip, (long long)in.reserve_micro_usd,
	    (long long)in.threat, rl_code_str(vm.code), (long long)vm.remaining,
	    (long long)vm.limit, (long long)vm.reset_s,
	    (long long)vm.retry_after_s, rl_code_str(vr.code),
	    (long long)vr.remaining, (long long)vr.limit, (long long)vr.reset_s,
	    (long long)vr.retry_after_s);
	c->counts[vm.code]++;
	if (vm.reserved && c->ntok < NTOKENS) {
		snprintf(
		    c->subj[c->ntok], sizeof(c->subj[0]), "%s", in.subject);
		snprintf(c->tok[c->ntok], sizeof(c->tok[0]), "%s", in.token);
		c->ntok++;
	}
}

static void
cf_op_settle(struct cf *c)
{
	enum rl_settle_state sm, sr;
	char subject[RL_SUBJECT_MAX + 1], token[RL_TOKEN_MAX + 1];
	int64_t actual = rng_below(4) == 0 ? 0 : rng_below(350000);

	if (c->ntok > 0 && rng_below(8) != 0) {
		/* A recent one mostly, sometimes an old (or settled) one. */
		int i =
		    rng_below(3) == 0
			? rng_below(c->ntok)
			: c->ntok - 1 - rng_below(c->ntok < 4 ? c->ntok : 4);

		snprintf(subject, sizeof(subject), "%s", c->subj[i]);
		snprintf(token, sizeof(token), "%s", c->tok[i]);
	} else {
		cf_subject(subject, sizeof(subject));
		snprintf(token, sizeof(token), "ghost%d", c->step);
	}
	ck_assert_int_eq(
	    c->mem->ops->settle(c->mem->impl, subject, token, actual, &sm), 0);
	ck_assert_int_eq(
	    c->redis->ops->settle(c->redis->impl, subject, token, actual, &sr),
	    0);
	ck_assert_msg(sm == sr, "step %d settle %s %s: memory %d redis %d",
	    c->step, subject, token, sm, sr);
	c->counts[RL_CODE_MAX + sm]++;
}

static void
cf_op_quota(struct cf *c)
{
	char subject[RL_SUBJECT_MAX + 1];
	struct rl_quota qm, qr;

	cf_subject(subject, sizeof(subject));
	ck_assert_int_eq(
	    c->mem->ops->quota(c->mem->impl, &c->lim, subject, &qm), 0);
	ck_assert_int_eq(
	    c->redis->ops->quota(c->redis->impl, &c->lim, subject, &qr), 0);
	ck_assert_msg(memcmp(&qm, &qr, sizeof(qm)) == 0,
	    "step %d quota %s: memory %lld/%lld %lld/%lld cost %lld+%lld "
	    "blocked %lld; redis %lld/%lld %lld/%lld cost %lld+%lld blocked "
	    "%lld",
	    c->step, subject, (long long)qm.minute_used,
	    (long long)qm.minute_limit, (long long)qm.hour_used,
	    (long long)qm.hour_limit, (long long)qm.cost_used_micro_usd,
	    (long long)qm.cost_reserved_micro_usd, (long long)qm.blocked_s,
	    (long long)qr.minute_used, (long long)qr.minute_limit,
	    (long long)qr.hour_used, (long long)qr.hour_limit,
	    (long long)qr.cost_used_micro_usd,
	    (long long)qr.cost_reserved_micro_usd, (long long)qr.blocked_s);
}

static void
cf_op_threat(struct cf *c)
{
	char subject[RL_SUBJECT_MAX + 1], ip[PROTO_IP_MAX + 1];
	bool bm, br, with = rng_below(2) == 0;
	int64_t points = 5 + rng_below(30);

	cf_subject(subject, sizeof(subject));
	cf_ip(ip, sizeof(ip), subject);
	ck_assert_int_eq(
	    c->mem->ops->threat(c->mem->impl, &c->lim, with ? subject : NULL,
		ip, points, "auth_failure", &bm),
	    0);
	ck_assert_int_eq(
	    c->redis->ops->threat(c->redis->impl, &c->lim,
		with ? subject : NULL, ip, points, "auth_failure", &br),
	    0);
	ck_assert_msg(bm == br, "step %d threat", c->step);
}

static void
cf_op_blocks(struct cf *c)
{
	struct rl_block bm[6], br[6];
	size_t nm, nr, tm, tr, i;

	ck_assert_int_eq(c->mem->ops->blocks(c->mem->impl, bm, 6, &nm, &tm), 0);
	ck_assert_int_eq(
	    c->redis->ops->blocks(c->redis->impl, br, 6, &nr, &tr), 0);
	ck_assert_msg(nm == nr && tm == tr,
	    "step %d blocks: memory %zu of %zu, redis %zu of %zu", c->step, nm,
	    tm, nr, tr);
	for (i = 0; i < nm; i++) {
		ck_assert_msg(strcmp(bm[i].kind, br[i].kind) == 0 &&
				  strcmp(bm[i].id, br[i].id) == 0 &&
				  bm[i].until_us == br[i].until_us &&
				  bm[i].retry_after_s == br[i].retry_after_s &&
				  strcmp(bm[i].reason, br[i].reason) == 0,
		    "step %d block %zu: memory %s:%s %s, redis %s:%s %s",
		    c->step, i, bm[i].kind, bm[i].id, bm[i].reason, br[i].kind,
		    br[i].id, br[i].reason);
	}
}

static void
cf_op_unblock(struct cf *c)
{
	char member[RL_SUBJECT_MAX + 8];
	bool fm, fr;

	if (rng_below(2) == 0)
		cf_subject(member, sizeof(member));
	else
		snprintf(member, sizeof(member), "ip:10.0.%d.%d", rng_below(2),
		    1 + rng_below(4));
	ck_assert_int_eq(c->mem->ops->unblock(c->mem->impl, member, &fm), 0);
	ck_assert_int_eq(
	    c->redis->ops->unblock(c->redis->impl, member, &fr), 0);
	ck_assert_msg(fm == fr, "step %d unblock %s: memory %d redis %d",
	    c->step, member, fm, fr);
}

START_TEST(test_conformance)
{
	static struct cf c;
	int64_t t = MIDNIGHT - 20 * 60 * S_US;
	int k;

	memset(&c, 0, sizeof(c));
	rng_state = 0x9e3779b97f4a7c15ULL;
	c.lim = (struct rl_limits){
	    .per_minute = 4,
	    .per_hour = 12,
	    .per_ip_minute = 20,
	    .cost_micro_usd = 1000000,
	    .block_s = 300,
	    .reserve_ttl_s = 90,
	};
	c.mem = rl_store_mem_new(fake_clock, NULL, 0);
	c.redis = rl_store_redis_new(t_redis.url, 2, 1000, fake_clock, NULL);
	ck_assert_ptr_nonnull(c.mem);
	ck_assert_ptr_nonnull(c.redis);
	ck_assert_int_eq(c.redis->ops->ping(c.redis->impl), 0);
	for (c.step = 0; c.step < 2000; c.step++) {
		/* Mostly small steps, sometimes minutes, in microseconds. */
		t += rng_below(20) == 0 ? rng_below(400) * S_US
					: rng_below(600000) + 1;
		atomic_store(&fake_now, t);
		k = rng_below(100);
		if (k < 60)
			cf_op_check(&c);
		else if (k < 78)
			cf_op_settle(&c);
		else if (k < 88)
			cf_op_quota(&c);
		else if (k < 93)
			cf_op_threat(&c);
		else if (k < 97)
			cf_op_blocks(&c);
		else
			cf_op_unblock(&c);
	}
	/* The run crossed midnight and met every kind of answer. */
	ck_assert_int_gt(t, MIDNIGHT);
	printf("conformance: ok %d blocked %d minute %d hour %d ip %d cost %d "
	       "settled %d unknown %d duplicate %d\n",
	    c.counts[RL_OK], c.counts[RL_BLOCKED], c.counts[RL_MINUTE],
	    c.counts[RL_HOUR], c.counts[RL_IP], c.counts[RL_COST],
	    c.counts[RL_CODE_MAX + RL_SETTLED],
	    c.counts[RL_CODE_MAX + RL_UNKNOWN],
	    c.counts[RL_CODE_MAX + RL_DUPLICATE]);
	fflush(stdout);
	ck_assert_int_gt(c.counts[RL_OK], 100);
	ck_assert_int_gt(c.counts[RL_BLOCKED], 0);
	ck_assert_int_gt(c.counts[RL_MINUTE], 0);
	ck_assert_int_gt(c.counts[RL_HOUR], 0);
	ck_assert_int_gt(c.counts[RL_IP], 0);
	ck_assert_int_gt(c.counts[RL_COST], 0);
	ck_assert_int_gt(c.counts[RL_CODE_MAX + RL_SETTLED], 0);
	ck_assert_int_gt(c.counts[RL_CODE_MAX + RL_UNKNOWN], 0);
	ck_assert_int_gt(c.counts[RL_CODE_MAX + RL_DUPLICATE], 0);
	rl_store_free(c.redis);
	rl_store_free(c.mem);
}
END_TEST

/* ---- failures ---- */

static struct rl_limits
limits(void)
{
	return (struct rl_limits){
	    .per_minute = 1000,
	    .per_hour = 10000,
	    .per_ip_minute = 1000,
	    .cost_micro_usd = 1000000,
	    .block_s = 900,
	    .reserve_ttl_s = 120,
	};
}

static int
t_check(struct rl_store *st, const char *subject, int64_t reserve,
    const char *token, struct rl_verdict *v)
{
	struct rl_limits l = limits();
	struct rl_check in;

	memset(&in, 0, sizeof(in));
	snprintf(in.subject, sizeof(in.subject), "%s", subject);
	snprintf(in.ip, sizeof(in.ip), "127.0.0.1");
	in.reserve_micro_usd = reserve;
	snprintf(in.token, sizeof(in.token), "%s", token);
	return st->ops->check(st->impl, &l, &in, v);
}

START_TEST(test_noscript)
{
	struct rl_store *st;
	struct rl_verdict v;

	st = rl_store_redis_new(t_redis.url, 1, 1000, NULL, NULL);
	ck_assert_ptr_nonnull(st);
	/* First use: NOSCRIPT, loaded, run. */
	ck_assert_int_eq(t_check(st, "user:ns", 0, "a", &v), 0);
	ck_assert_int_eq(v.code, RL_OK);
	ck_assert_int_eq(v.remaining, 999);
	t_redis_cmd("SCRIPT FLUSH");
	ck_assert_int_eq(t_check(st, "user:ns", 0, "b", &v), 0);
	ck_assert_int_eq(v.remaining, 998);
	rl_store_free(st);
}
END_TEST

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

START_TEST(test_timeout)
{
	struct rl_store *st;
	struct rl_verdict v;
	int64_t t0, dt;
	int rv;

	st = rl_store_redis_new(t_redis.url, 1, 50, NULL, NULL);
	ck_assert_ptr_nonnull(st);
	ck_assert_int_eq(t_check(st, "user:slow", 0, "a", &v), 0);
	t_redis_cmd("CLIENT PAUSE 600 ALL");
	t0 = mono_ms();
	rv = t_check(st, "user:slow", 0, "b", &v);
	dt = mono_ms() - t0;
	ck_assert_int_eq(rv, -ETIMEDOUT);
	ck_assert_int_ge(dt, 40);
	ck_assert_int_lt(dt, 400);
	/* The probe's PING is answered only when the pause ends. */
	while (st->ops->ping(st->impl) != 0)
		ck_assert_int_lt(mono_ms() - t0, 5000);
	ck_assert_int_eq(t_check(st, "user:slow", 0, "c", &v), 0);
	ck_assert_int_eq(v.code, RL_OK);
	rl_store_free(st);
}
END_TEST

START_TEST(test_connection_refused)
{
	struct rl_store *st;
	struct rl_verdict v;
	char url[64];

	snprintf(url, sizeof(url), "redis://127.0.0.1:%d", h_free_port());
	st = rl_store_redis_new(url, 2, 50, NULL, NULL);
	ck_assert_ptr_nonnull(st);
	ck_assert_int_eq(t_check(st, "user:x", 0, "a", &v), -ECONNREFUSED);
	ck_assert_int_eq(st->ops->ping(st->impl), -ECONNREFUSED);
	rl_store_free(st);
}
END_TEST

struct race {
	struct rl_store *st;
	char token[16];
	bool ok;
	int rv;
};

static void *
race_main(void *arg)
{
	struct race *r = arg;
	struct rl_verdict v;

	r->rv = t_check(r->st, "user:rich", 100000, r->token, &v);
	r->ok = r->rv == 0 && v.code == RL_OK;
	return NULL;
}

START_TEST(test_concurrency)
{
	static struct race r[200];
	pthread_t th[200];
	struct rl_limits l = limits();
	struct rl_store *st;
	struct rl_quota q;
	enum rl_settle_state s;
	int i, ok = 0;

	st = rl_store_redis_new(t_redis.url, 10, 2000, NULL, NULL);
	ck_assert_ptr_nonnull(st);
	for (i = 0; i < 200; i++) {
		r[i] = (struct race){st, "", false, 0};
		snprintf(r[i].token, sizeof(r[i].token), "race%d", i);
		ck_assert_int_eq(
		    pthread_create(&th[i], NULL, race_main, &r[i]), 0);
	}
	for (i = 0; i < 200; i++) {
		pthread_join(th[i], NULL);
		ck_assert_msg(
		    r[i].rv == 0, "thread %d: %s", i, strerror(-r[i].rv));
		if (r[i].ok)
			ok++;
	}
	ck_assert_int_eq(ok, 10);
	for (i = 0; i < 200; i++) {
		if (!r[i].ok)
			continue;
		ck_assert_int_eq(st->ops->settle(st->impl, "user:rich",
				     r[i].token, 90000, &s),
		    0);
		ck_assert_int_eq(s, RL_SETTLED);
	}
	ck_assert_int_eq(st->ops->quota(st->impl, &l, "user:rich", &q), 0);
	ck_assert_int_eq(q.cost_used_micro_usd, 900000);
	ck_assert_int_eq(q.cost_reserved_micro_usd, 0);
	rl_store_free(st);
}
END_TEST

static Suite *
rl_store_suite(void)
{
	Suite *s = suite_create("ratelimiter_store");
	TCase *tc;

	tc = tcase_create("conformance");
	tcase_add_checked_fixture(tc, t_setup, t_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_conformance);
	suite_add_tcase(s, tc);

	tc = tcase_create("redis");
	tcase_add_checked_fixture(tc, t_setup, t_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_noscript);
	tcase_add_test(tc, test_timeout);
	tcase_add_test(tc, test_connection_refused);
	tcase_add_test(tc, test_concurrency);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(rl_store_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
