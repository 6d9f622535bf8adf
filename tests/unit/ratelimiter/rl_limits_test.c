/*
 * The rate-limit rules on a fake clock: the GCRA arithmetic, then the
 * memory store (the same rules the Lua script follows): exact refill, no
 * burst at a window edge, minute and hour together, the per-IP cap under
 * session rotation, reservation / settle / release / expiry arithmetic,
 * the UTC day, 200 concurrent reservations, threat steps, blocks, decay,
 * and a refusal consuming nothing.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "rl_limits.h"
#include "rl_store.h"

static Suite *rl_limits_suite(void);

#define S_US RL_US_PER_S
/* 2026-11-26T12:00:00Z, and its day's last second. */
#define T0       (1795694400LL * S_US)
#define MIDNIGHT (1795737600LL * S_US)

static _Atomic int64_t fake_now;

static int64_t
fake_clock(void *arg)
{
	(void)arg;
	return atomic_load(&fake_now);
}

static void
at(int64_t us)
{
	atomic_store(&fake_now, us);
}

static struct rl_limits
limits(void)
{
	struct rl_limits l = {
	    .per_minute = 60,
	    .per_hour = 500,
	    .per_ip_minute = 180,
	    .cost_micro_usd = 1000000,
	    .block_s = 900,
	    .reserve_ttl_s = 120,
	};

	return l;
}

static struct rl_store *
store(void)
{
	struct rl_store *st = rl_store_mem_new(fake_clock, NULL, 0);

	ck_assert_ptr_nonnull(st);
	return st;
}

/* One check of subject ("user:x" / "session:x") from ip. */
static struct rl_verdict
check(struct rl_store *st, const struct rl_limits *l, const char *subject,
    const char *ip, int64_t reserve, int64_t threat, const char *token)
{
	struct rl_verdict v;
	struct rl_check in;

	memset(&in, 0, sizeof(in));
	snprintf(in.subject, sizeof(in.subject), "%s", subject);
	in.session = strncmp(subject, "session:", 8) == 0;
	snprintf(in.ip, sizeof(in.ip), "%s", ip);
	in.reserve_micro_usd = reserve;
	in.threat = threat;
	snprintf(in.token, sizeof(in.token), "%s", token ? token : "t");
	ck_assert_int_eq(st->ops->check(st->impl, l, &in, &v), 0);
	return v;
}

static struct rl_verdict
check1(struct rl_store *st, const struct rl_limits *l, const char *subject)
{
	return check(st, l, subject, "192.0.2.1", 0, 0, NULL);
}

static struct rl_quota
quota(struct rl_store *st, const struct rl_limits *l, const char *subject)
{
	struct rl_quota q;

	ck_assert_int_eq(st->ops->quota(st->impl, l, subject, &q), 0);
	return q;
}

static enum rl_settle_state
settle(
    struct rl_store *st, const char *subject, const char *token, int64_t actual)
{
	enum rl_settle_state s;

	ck_assert_int_eq(
	    st->ops->settle(st->impl, subject, token, actual, &s), 0);
	return s;
}

/* ---- arithmetic ---- */

START_TEST(test_gcra_step)
{
	struct rl_gcra g;

	/* Empty bucket of 60/min: admitted, 59 left, full again in 1 s. */
	rl_gcra_step(0, 60, RL_MINUTE_US, T0, &g);
	ck_assert(g.allow);
	ck_assert_int_eq(g.tat_us, T0 + S_US);
	ck_assert_int_eq(g.remaining, 59);
	ck_assert_int_eq(g.reset_us, S_US);
	/* Full: refused, retry exactly when one has dripped out. */
	rl_gcra_step(T0 + 60 * S_US, 60, RL_MINUTE_US, T0, &g);
	ck_assert(!g.allow);
	ck_assert_int_eq(g.tat_us, T0 + 60 * S_US);
	ck_assert_int_eq(g.retry_us, S_US);
	ck_assert_int_eq(g.remaining, 0);
	rl_gcra_step(T0 + 60 * S_US, 60, RL_MINUTE_US, T0 + S_US - 1, &g);
	ck_assert(!g.allow);
	ck_assert_int_eq(g.retry_us, 1);
	rl_gcra_step(T0 + 60 * S_US, 60, RL_MINUTE_US, T0 + S_US, &g);
	ck_assert(g.allow);
	ck_assert_int_eq(g.remaining, 0);
	/* 7 an hour: T = floor(3600 s / 7). */
	rl_gcra_step(0, 7, RL_HOUR_US, T0, &g);
	ck_assert_int_eq(g.tat_us, T0 + 514285714LL);
	ck_assert_int_eq(rl_gcra_remaining(g.tat_us, 7, RL_HOUR_US, T0), 6);
	ck_assert_int_eq(rl_gcra_remaining(0, 7, RL_HOUR_US, T0), 7);
	ck_assert_int_eq(
	    rl_gcra_remaining(T0 + 2 * RL_HOUR_US, 7, RL_HOUR_US, T0), 0);
}
END_TEST

START_TEST(test_threat_math)
{
	int64_t hl = RL_THREAT_HALF_LIFE_S * S_US;

	ck_assert_int_eq(rl_threat_decay(100000, T0, T0), 100000);
	ck_assert_int_eq(rl_threat_decay(100000, T0, T0 - 5), 100000);
	ck_assert_int_eq(rl_threat_decay(100000, T0, T0 + hl), 50000);
	ck_assert_int_eq(rl_threat_decay(100000, T0, T0 + 2 * hl), 25000);
	ck_assert_int_eq(rl_threat_decay(0, T0, T0 + 2 * hl), 0);
	ck_assert_int_eq(rl_threat_decay(-5, T0, T0), 0);
	ck_assert_int_eq(rl_threat_decay(1, T0, T0 + hl), 0);
	ck_assert_int_eq(rl_threat_pct(0), 100);
	ck_assert_int_eq(rl_threat_pct(24999), 100);
	ck_assert_int_eq(rl_threat_pct(25000), 50);
	ck_assert_int_eq(rl_threat_pct(49999), 50);
	ck_assert_int_eq(rl_threat_pct(50000), 25);
	ck_assert_int_eq(rl_threat_pct(10000000), 25);
	ck_assert_int_eq(rl_scaled(60, 50), 30);
	ck_assert_int_eq(rl_scaled(60, 25), 15);
	ck_assert_int_eq(rl_scaled(3, 25), 1);
	ck_assert_int_eq(rl_scaled(1, 50), 1);
}
END_TEST

START_TEST(test_misc_math)
{
	ck_assert_int_eq(rl_ceil_s(0), 0);
	ck_assert_int_eq(rl_ceil_s(-3), 0);
	ck_assert_int_eq(rl_ceil_s(1), 1);
	ck_assert_int_eq(rl_ceil_s(S_US), 1);
	ck_assert_int_eq(rl_ceil_s(S_US + 1), 2);
	ck_assert_int_eq(
	    rl_ceil_s(10 * PROTO_SECONDS_MAX * S_US), PROTO_SECONDS_MAX);
	ck_assert_int_eq(rl_until_midnight_us(T0), 12 * 3600 * S_US);
	ck_assert_int_eq(rl_until_midnight_us(MIDNIGHT - 1), 1);
	ck_assert_int_eq(rl_until_midnight_us(MIDNIGHT), RL_DAY_US);
	for (int c = 0; c < RL_CODE_MAX; c++)
		ck_assert_int_eq(rl_code_from_str(rl_code_str(c)), c);
	ck_assert_str_eq(rl_code_str(RL_MINUTE), "rate_limit_minute");
	ck_assert_str_eq(rl_code_str(RL_HOUR), "rate_limit_hour");
	ck_assert_str_eq(rl_code_str(RL_IP), "ip_rate_limit");
	ck_assert_str_eq(rl_code_str(RL_COST), "daily_cost_limit");
	ck_assert_str_eq(rl_code_str(RL_BLOCKED), "blocked");
	ck_assert_ptr_null(rl_code_str(RL_CODE_MAX));
	ck_assert_int_eq(rl_code_from_str("nope"), RL_CODE_MAX);
	ck_assert_int_eq(rl_code_from_str(NULL), RL_CODE_MAX);
}
END_TEST

/* ---- request limits ---- */

/* 60 admitted at once, the 61st refused until exactly one second later. */
START_TEST(test_exact_refill)
{
	struct rl_limits l = limits();
	struct rl_store *st = store();
	struct rl_verdict v;
	int i;

	at(T0);
	for (i = 0; i < 60; i++) {
		v = check1(st, &l, "user:alice");
		ck_assert_int_eq(v.code, RL_OK);
		ck_assert_int_eq(v.limit, 60);
		ck_assert_int_eq(v.remaining, 59 - i);
		ck_assert_int_eq(v.retry_after_s, 0);
	}
	v = check1(st, &l, "user:alice");
	ck_assert_int_eq(v.code, RL_MINUTE);
	ck_assert_int_eq(v.retry_after_s, 1);
	ck_assert_int_eq(v.remaining, 0);
	ck_assert_int_eq(v.limit, 60);
	ck_assert_int_eq(v.reset_s, 60);
	at(T0 + S_US - 1);
	ck_assert_int_eq(check1(st, &l, "user:alice").code, RL_MINUTE);
	at(T0 + S_US);
	v = check1(st, &l, "user:alice");
	ck_assert_int_eq(v.code, RL_OK);
	ck_assert_int_eq(v.remaining, 0);
	ck_assert_int_eq(check1(st, &l, "user:alice").code, RL_MINUTE);
	/* Another subject is untouched. */
	ck_assert_int_eq(check1(st, &l, "user:bob").remaining, 59);
	/* After a full minute of silence, a full burst again. */
	at(T0 + 61 * S_US);
	for (i = 0; i < 60; i++)
		ck_assert_int_eq(check1(st, &l, "user:alice").code, RL_OK);
	ck_assert_int_eq(check1(st, &l, "user:alice").code, RL_MINUTE);
	rl_store_free(st);
}
END_TEST

/*
 * A client that asks every 10 ms: 60 at the start, then one per second,
 * never a second burst.  A fixed-window counter would admit 60 more right
 * after the minute's edge; here, across any edge, a 2-second span admits
 * at most 3, and each minute after the first admits exactly 60.
 */
START_TEST(test_no_edge_burst)
{
	struct rl_limits l = limits();
	struct rl_store *st = store();
	int64_t t, start = MIDNIGHT - 500000; /* 0.5 s before an edge */
	int per_minute[4] = {0}, around_edge = 0;
	int admitted = 0;

	for (t = start; t < start + 4 * RL_MINUTE_US; t += 10000) {
		at(t);
		if (check1(st, &l, "user:greedy").code != RL_OK)
			continue;
		admitted++;
		per_minute[(t - start) / RL_MINUTE_US]++;
		/* The edges of the minutes starting at 'start'. */
		if ((t - start) % RL_MINUTE_US >= RL_MINUTE_US - S_US ||
		    ((t - start) % RL_MINUTE_US < S_US && t - start >= S_US))
			around_edge++;
	}
	ck_assert_int_eq(per_minute[0], 60 + 59);
	ck_assert_int_eq(per_minute[1], 60);
	ck_assert_int_eq(per_minute[2], 60);
	ck_assert_int_eq(per_minute[3], 60);
	/* 3 edges x (1 s before + 1 s after), about 2 each. */
	ck_assert_int_le(around_edge, 3 * 3);
	ck_assert_int_eq(admitted, 60 + 4 * 60 - 1);
	rl_store_free(st);
}
END_TEST

/*
 * The burst right before the midnight edge; right after it, nothing more
 * than the refill (one per second), not a fresh 60.
 */
START_TEST(test_burst_before_edge)
{
	struct rl_limits l = limits();
	struct rl_store *st = store();
	int i, after = 0;

	at(MIDNIGHT - 100000);
	for (i = 0; i < 60; i++)
		ck_assert_int_eq(check1(st, &l, "user:edge").code, RL_OK);
	for (int64_t t = MIDNIGHT; t < MIDNIGHT + 2 * S_US; t += 1000) {
		at(t);
		if (check1(st, &l, "user:edge").code == RL_OK)
			after++;
	}
	ck_assert_int_eq(after, 2);
	rl_store_free(st);
}
END_TEST

/* 10 a minute and 15 an hour: the minute refuses first, then the hour,
 * each with its own retry; a refusal by one consumes nothing of the other. */
START_TEST(test_minute_and_hour)
{
	struct rl_limits l = limits();
	struct rl_store *st = store();
	struct rl_verdict v;
	struct rl_quota q;
	int i;

	l.per_minute = 10;
	l.per_hour = 15;
	at(T0);
	for (i = 0; i < 10; i++) {
		v = check1(st, &l, "session:0123456789abcdef");
		ck_assert_int_eq(v.code, RL_OK);
	}
	/* The tightest after 10: the minute (0 left) over the hour (5). */
	ck_assert_int_eq(v.limit, 10);
	ck_assert_int_eq(v.remaining, 0);
	v = check1(st, &l, "session:0123456789abcdef");
	ck_assert_int_eq(v.code, RL_MINUTE);
	ck_assert_int_eq(v.retry_after_s, 6);
	q = quota(st, &l, "session:0123456789abcdef");
	ck_assert_int_eq(q.minute_used, 10);
	ck_assert_int_eq(q.hour_used, 10);
	/* One every 6 s: requests 11..15 pass both. */
	for (i = 1; i <= 5; i++) {
		at(T0 + i * 6 * S_US);
		v = check1(st, &l, "session:0123456789abcdef");
		ck_assert_int_eq(v.code, RL_OK);
	}
	/* Both at 0 left: the minute is reported (the first of a tie). */
	ck_assert_int_eq(v.limit, 10);
	ck_assert_int_eq(v.remaining, 0);
	/* The 16th: the minute would admit it, the hour refuses until its
	 * bucket has a slot: tat (T0 + 15 x 240 s) + 240 s - 3600 s. */
	at(T0 + 36 * S_US);
	v = check1(st, &l, "session:0123456789abcdef");
	ck_assert_int_eq(v.code, RL_HOUR);
	ck_assert_int_eq(v.limit, 15);
	ck_assert_int_eq(v.retry_after_s, 240 - 36);
	/* ...and took nothing from the minute. */
	q = quota(st, &l, "session:0123456789abcdef");
	ck_assert_int_eq(q.minute_used, 9);
	at(T0 + 240 * S_US - 1);
	ck_assert_int_eq(
	    check1(st, &l, "session:0123456789abcdef").code, RL_HOUR);
	at(T0 + 240 * S_US);
	ck_assert_int_eq(
	    check1(st, &l, "session:0123456789abcdef").code, RL_OK);
	rl_store_free(st);
}
END_TEST

/* Many users behind one address: the IP cap, exactly. */
START_TEST(test_ip_cap_users)
{
	struct rl_limits l = limits();
	struct rl_store *st = store();
	struct rl_verdict v;
	char subject[32];
	int i, ok = 0;

	l.per_ip_minute = 30;
	at(T0);
	for (i = 0; i < 100; i++) {
		snprintf(subject, sizeof(subject), "user:u%d", i);
		v = check(st, &l, subject, "198.51.100.7", 0, 0, NULL);
		if (v.code == RL_OK)
			ok++;
		else
			ck_assert_int_eq(v.code, RL_IP);
	}
	ck_assert_int_eq(ok, 30);
	/* Another address is not affected. */
	ck_assert_int_eq(
	    check(st, &l, "user:u0", "198.51.100.8", 0, 0, NULL).code, RL_OK);
	rl_store_free(st);
}
END_TEST

/*
 * 1,000 requests from one IP, each with a new session id: admitted <= the
 * IP cap; session churn raises the IP's threat until it is blocked.
 */
START_TEST(test_ip_cap_session_rotation)
{
	struct rl_limits l = limits();
	struct rl_store *st = store();
	struct rl_verdict v;
	char subject[64];
	int i, ok = 0, capped = 0, blocked = 0, first_block = -1;
	size_t n, total;
	struct rl_block b[4];

	at(T0);
	for (i = 0; i < 1000; i++) {
		snprintf(subject, sizeof(subject), "session:rotating-%08d", i);
		v = check(st, &l, subject, "203.0.113.50", 0, 0, NULL);
		at(T0 + i * 1000); /* one per millisecond */
		switch (v.code) {
		case RL_OK:
			ok++;
			break;
		case RL_IP:
			capped++;
			break;
		case RL_BLOCKED:
			if (first_block < 0)
				first_block = i;
			blocked++;
			break;
		default:
			ck_abort_msg(
			    "request %d: code %s", i, rl_code_str(v.code));
		}
	}
	ck_assert_int_le(ok, l.per_ip_minute);
	ck_assert_int_eq(ok + capped + blocked, 1000);
	/* 20 free sessions, then 2 points each: 100 points at the 70th, or
	 * the 71st as the score decays a little over the 70 ms. */
	ck_assert_int_ge(first_block, RL_CHURN_FREE + 50 - 1);
	ck_assert_int_le(first_block, RL_CHURN_FREE + 50);
	ck_assert_int_gt(blocked, 900);
	ck_assert_int_eq(st->ops->blocks(st->impl, b, 4, &n, &total), 0);
	ck_assert_int_eq(total, 1);
	ck_assert_str_eq(b[0].kind, "ip");
	ck_assert_str_eq(b[0].id, "203.0.113.50");
	ck_assert_str_eq(b[0].reason, "session_churn");
	/* A user from the blocked address is blocked too. */
	ck_assert_int_eq(
	    check(st, &l, "user:bystander", "203.0.113.50", 0, 0, NULL).code,
	    RL_BLOCKED);
	rl_store_free(st);
}
END_TEST

/* The same session again and again is not churn. */
START_TEST(test_same_session_no_churn)
{
	struct rl_limits l = limits();
	struct rl_store *st = store();
	int i;

	l.per_minute = 100000;
	l.per_hour = 100000;
	l.per_ip_minute = 100000;
	at(T0);
	for (i = 0; i < 500; i++)
		ck_assert_int_eq(check(st, &l, "session:steady-session-id",
				     "10.1.1.1", 0, 0, NULL)
				     .code,
		    RL_OK);
	rl_store_free(st);
}
END_TEST

/* ---- money ---- */

START_TEST(test_reserve_settle_release)
{
	struct rl_limits l = limits();
	struct rl_store *st = store();
	struct rl_verdict v;
	struct rl_quota q;
	char tok[16];
	int i;

	at(T0);
	for (i = 0; i < 10; i++) {
		snprintf(tok, sizeof(tok), "tok%d", i);
		v = check(st, &l, "user:payer", "10.0.0.1", 100000, 0, tok);
		ck_assert_int_eq(v.code, RL_OK);
		ck_assert(v.reserved);
	}
	/* $1.00 all reserved: refused, retry soon (calls are in flight). */
	v = check(st, &l, "user:payer", "10.0.0.1", 100000, 0, "tok10");
	ck_assert_int_eq(v.code, RL_COST);
	ck_assert(!v.reserved);
	ck_assert_int_eq(v.limit, 1000000);
	ck_assert_int_eq(v.remaining, 0);
	ck_assert_int_eq(v.retry_after_s, RL_COST_RETRY_S);
	q = quota(st, &l, "user:payer");
	ck_assert_int_eq(q.cost_used_micro_usd, 0);
	ck_assert_int_eq(q.cost_reserved_micro_usd, 1000000);
	ck_assert_int_eq(q.cost_limit_micro_usd, 1000000);

	/* Settle one at $0.08: 0.92 held, 0.02 free. */
	ck_assert_int_eq(settle(st, "user:payer", "tok0", 80000), RL_SETTLED);
	q = quota(st, &l, "user:payer");
	ck_assert_int_eq(q.cost_used_micro_usd, 80000);
	ck_assert_int_eq(q.cost_reserved_micro_usd, 900000);
	v = check(st, &l, "user:payer", "10.0.0.1", 100000, 0, "tok11");
	ck_assert_int_eq(v.code, RL_COST);
	ck_assert_int_eq(v.remaining, 20000);
	/* A request that fits the $0.02 is admitted. */
	v = check(st, &l, "user:payer", "10.0.0.1", 20000, 0, "small");
	ck_assert_int_eq(v.code, RL_OK);
	ck_assert_int_eq(settle(st, "user:payer", "small", 20000), RL_SETTLED);
	/* Release one (the call failed): 0.10 free again. */
	ck_assert_int_eq(settle(st, "user:payer", "tok1", 0), RL_SETTLED);
	q = quota(st, &l, "user:payer");
	ck_assert_int_eq(q.cost_used_micro_usd, 100000);
	ck_assert_int_eq(q.cost_reserved_micro_usd, 800000);
	ck_assert_int_eq(
	    check(st, &l, "user:payer", "10.0.0.1", 100000, 0, "tok12").code,
	    RL_OK);
	/* A second settle of the same reservation changes nothing. */
	ck_assert_int_eq(settle(st, "user:payer", "tok1", 50000), RL_DUPLICATE);
	ck_assert_int_eq(settle(st, "user:payer", "tok0", 80000), RL_DUPLICATE);
	q = quota(st, &l, "user:payer");
	ck_assert_int_eq(q.cost_used_micro_usd, 100000);
	ck_assert_int_eq(q.cost_reserved_micro_usd, 900000);
	/* An unknown reservation's actual cost still counts. */
	ck_assert_int_eq(settle(st, "user:payer", "ghost", 3000), RL_UNKNOWN);
	q = quota(st, &l, "user:payer");
	ck_assert_int_eq(q.cost_used_micro_usd, 103000);
	/* Settle the rest above their reservation: spent passes the limit,
	 * and then even a tiny request waits for tomorrow. */
	for (i = 2; i < 10; i++) {
		snprintf(tok, sizeof(tok), "tok%d", i);
		ck_assert_int_eq(
		    settle(st, "user:payer", tok, 110000), RL_SETTLED);
	}
	ck_assert_int_eq(settle(st, "user:payer", "tok12", 100000), RL_SETTLED);
	q = quota(st, &l, "user:payer");
	ck_assert_int_eq(q.cost_used_micro_usd, 103000 + 8 * 110000 + 100000);
	ck_assert_int_eq(q.cost_reserved_micro_usd, 0);
	v = check(st, &l, "user:payer", "10.0.0.1", 1, 0, "late");
	ck_assert_int_eq(v.code, RL_COST);
	ck_assert_int_eq(v.retry_after_s, 12 * 3600);
	/* Another subject has its own budget. */
	ck_assert_int_eq(
	    check(st, &l, "user:other", "10.0.0.1", 100000, 0, "o1").code,
	    RL_OK);
	rl_store_free(st);
}
END_TEST

/* Reservations nobody settles expire; a late settle still counts. */
START_TEST(test_reservation_expiry)
{
	struct rl_limits l = limits();
	struct rl_store *st = store();
	struct rl_quota q;

	at(T0);
	ck_assert_int_eq(
	    check(st, &l, "user:crash", "10.0.0.1", 400000, 0, "a").code,
	    RL_OK);
	at(T0 + 10 * S_US);
	ck_assert_int_eq(
	    check(st, &l, "user:crash", "10.0.0.1", 400000, 0, "b").code,
	    RL_OK);
	at(T0 + 120 * S_US - 1);
	q = quota(st, &l, "user:crash");
	ck_assert_int_eq(q.cost_reserved_micro_usd, 800000);
	at(T0 + 120 * S_US);
	q = quota(st, &l, "user:crash");
	ck_assert_int_eq(q.cost_reserved_micro_usd, 400000);
	at(T0 + 130 * S_US);
	q = quota(st, &l, "user:crash");
	ck_assert_int_eq(q.cost_reserved_micro_usd, 0);
	ck_assert_int_eq(q.cost_used_micro_usd, 0);
	ck_assert_int_eq(settle(st, "user:crash", "a", 250000), RL_UNKNOWN);
	q = quota(st, &l, "user:crash");
	ck_assert_int_eq(q.cost_used_micro_usd, 250000);
	rl_store_free(st);
}
END_TEST

/* At the UTC day's change spent starts again; reservations carry over. */
START_TEST(test_day_rollover)
{
	struct rl_limits l = limits();
	struct rl_store *st = store();
	struct rl_verdict v;
	struct rl_quota q;

	at(MIDNIGHT - 30 * S_US);
	ck_assert_int_eq(
	    check(st, &l, "user:night", "10.0.0.1", 500000, 0, "x").code,
	    RL_OK);
	ck_assert_int_eq(settle(st, "user:night", "x", 500000), RL_SETTLED);
	ck_assert_int_eq(
	    check(st, &l, "user:night", "10.0.0.1", 300000, 0, "y").code,
	    RL_OK);
	/* Held money only: retry soon.  Spent money: after midnight. */
	v = check(st, &l, "user:night", "10.0.0.1", 300000, 0, "z");
	ck_assert_int_eq(v.code, RL_COST);
	ck_assert_int_eq(v.retry_after_s, RL_COST_RETRY_S);
	v = check(st, &l, "user:night", "10.0.0.1", 600000, 0, "z");
	ck_assert_int_eq(v.code, RL_COST);
	ck_assert_int_eq(v.retry_after_s, 30);
	at(MIDNIGHT);
	q = quota(st, &l, "user:night");
	ck_assert_int_eq(q.cost_used_micro_usd, 0);
	ck_assert_int_eq(q.cost_reserved_micro_usd, 300000);
	ck_assert_int_eq(
	    check(st, &l, "user:night", "10.0.0.1", 700000, 0, "w").code,
	    RL_OK);
	ck_assert_int_eq(
	    check(st, &l, "user:night", "10.0.0.1", 1, 0, "v").code, RL_COST);
	rl_store_free(st);
}
END_TEST

struct race {
	struct rl_store *st;
	const struct rl_limits *l;
	int idx;
	_Atomic int *admitted;
	char token[16];
	bool ok;
};

static void *
race_main(void *arg)
{
	struct race *r = arg;
	struct rl_verdict v;
	struct rl_check in;

	memset(&in, 0, sizeof(in));
	snprintf(in.subject, sizeof(in.subject), "user:rich");
	snprintf(
	    in.ip, sizeof(in.ip), "10.9.%d.%d", r->idx / 250, r->idx % 250);
	in.reserve_micro_usd = 100000;
	snprintf(in.token, sizeof(in.token), "%s", r->token);
	if (r->st->ops->check(r->st->impl, r->l, &in, &v) == 0 &&
	    v.code == RL_OK) {
		r->ok = true;
		atomic_fetch_add(r->admitted, 1);
	}
	return NULL;
}

/* $1.00 left, 200 concurrent requests of $0.10: exactly 10 go through,
 * and settling them at their worst case spends exactly $1.00. */
START_TEST(test_concurrent_reservations)
{
	struct rl_limits l = limits();
	struct rl_store *st = store();
	static struct race r[200];
	pthread_t th[200];
	_Atomic int admitted = 0;
	struct rl_quota q;
	int i;

	l.per_minute = 1000;
	l.per_hour = 1000;
	at(T0);
	for (i = 0; i < 200; i++) {
		r[i] = (struct race){st, &l, i, &admitted, "", false};
		snprintf(r[i].token, sizeof(r[i].token), "race%d", i);
		ck_assert_int_eq(
		    pthread_create(&th[i], NULL, race_main, &r[i]), 0);
	}
	for (i = 0; i < 200; i++)
		pthread_join(th[i], NULL);
	ck_assert_int_eq(atomic_load(&admitted), 10);
	for (i = 0; i < 200; i++)
		if (r[i].ok)
			ck_assert_int_eq(
			    settle(st, "user:rich", r[i].token, 100000),
			    RL_SETTLED);
	q = quota(st, &l, "user:rich");
	ck_assert_int_eq(q.cost_used_micro_usd, 1000000);
	ck_assert_int_eq(q.cost_reserved_micro_usd, 0);
	rl_store_free(st);
}
END_TEST

/* A refusal for one limit consumes none of the others. */
START_TEST(test_refusal_consumes_nothing)
{
	struct rl_limits l = limits();
	struct rl_store *st = store();
	struct rl_quota q;
	int i;

	l.cost_micro_usd = 0;
	at(T0);
	for (i = 0; i < 100; i++)
		ck_assert_int_eq(
		    check(st, &l, "user:broke", "10.0.0.2", 10, 0, NULL).code,
		    RL_COST);
	q = quota(st, &l, "user:broke");
	ck_assert_int_eq(q.minute_used, 0);
	ck_assert_int_eq(q.hour_used, 0);
	ck_assert_int_eq(q.cost_reserved_micro_usd, 0);
	/* Nor of the IP's cap: another user there still gets 180. */
	for (i = 0; i < 180; i++) {
		char s[32];

		snprintf(s, sizeof(s), "user:n%d", i);
		ck_assert_int_eq(
		    check(st, &l, s, "10.0.0.2", 0, 0, NULL).code, RL_OK);
	}
	/* A request with nothing to reserve still passes a zero budget. */
	l.cost_micro_usd = 0;
	ck_assert_int_eq(
	    check(st, &l, "user:free", "10.0.0.3", 0, 0, NULL).code, RL_OK);
	rl_store_free(st);
}
END_TEST

/* ---- threat ---- */

START_TEST(test_threat_steps)
{
	struct rl_limits l = limits();
	struct rl_store *st = store();
	struct rl_verdict v;
	struct rl_quota q;

	at(T0);
	/* 24 points: full limits. */
	ck_assert_int_eq(
	    check(st, &l, "user:t", "10.2.0.1", 0, 24, NULL).code, RL_OK);
	q = quota(st, &l, "user:t");
	ck_assert_int_eq(q.minute_limit, 60);
	ck_assert_int_eq(q.hour_limit, 500);
	/* 25: halved. */
	v = check(st, &l, "user:t", "10.2.0.2", 0, 1, NULL);
	ck_assert_int_eq(v.code, RL_OK);
	ck_assert_int_eq(v.limit, 30);
	q = quota(st, &l, "user:t");
	ck_assert_int_eq(q.minute_limit, 30);
	ck_assert_int_eq(q.hour_limit, 250);
	/* 50: a quarter. */
	v = check(st, &l, "user:t", "10.2.0.3", 0, 25, NULL);
	ck_assert_int_eq(v.limit, 15);
	/* Decay: 10 minutes later 25 left, so halved; 20 minutes, full. */
	at(T0 + 600 * S_US);
	q = quota(st, &l, "user:t");
	ck_assert_int_eq(q.minute_limit, 30);
	at(T0 + 1200 * S_US + S_US);
	q = quota(st, &l, "user:t");
	ck_assert_int_eq(q.minute_limit, 60);
	rl_store_free(st);
}
END_TEST

START_TEST(test_block_and_unblock)
{
	struct rl_limits l = limits();
	struct rl_store *st = store();
	struct rl_block b[8];
	struct rl_verdict v;
	size_t n, total;
	bool found, blocked;

	at(T0);
	/* 5 prompt-injection hits (20 points each): the 5th blocks. */
	for (int i = 0; i < 4; i++)
		ck_assert_int_ne(
		    check(st, &l, "user:mallory", "10.3.0.1", 0, 20, NULL).code,
		    RL_BLOCKED);
	v = check(st, &l, "user:mallory", "10.3.0.2", 0, 20, NULL);
	ck_assert_int_eq(v.code, RL_BLOCKED);
	ck_assert_int_eq(v.retry_after_s, 900);
	/* A block outlasts the score: still blocked with no new points. */
	at(T0 + 899 * S_US);
	v = check(st, &l, "user:mallory", "10.3.0.9", 0, 0, NULL);
	ck_assert_int_eq(v.code, RL_BLOCKED);
	ck_assert_int_eq(v.retry_after_s, 1);
	/* Listed, with its reason; the IPs (80 and 20 points) are not. */
	ck_assert_int_eq(st->ops->blocks(st->impl, b, 8, &n, &total), 0);
	ck_assert_int_eq(total, 1);
	ck_assert_int_eq(n, 1);
	ck_assert_str_eq(b[0].kind, "user");
	ck_assert_str_eq(b[0].id, "mallory");
	ck_assert_str_eq(b[0].reason, "request");
	ck_assert_int_eq(b[0].until_us, T0 + 900 * S_US);
	ck_assert_int_eq(b[0].retry_after_s, 1);
	/* Lifted by the admin: admitted again, score zeroed. */
	ck_assert_int_eq(st->ops->unblock(st->impl, "user:mallory", &found), 0);
	ck_assert(found);
	v = check(st, &l, "user:mallory", "10.3.0.9", 0, 0, NULL);
	ck_assert_int_eq(v.code, RL_OK);
	ck_assert_int_eq(v.limit, 60);
	ck_assert_int_eq(st->ops->unblock(st->impl, "user:mallory", &found), 0);
	ck_assert(!found);
	ck_assert_int_eq(st->ops->blocks(st->impl, b, 8, &n, &total), 0);
	ck_assert_int_eq(total, 0);
	/* Expiry: blocked again, then free at T + block_s. */
	at(T0 + 1000 * S_US);
	ck_assert_int_eq(
	    check(st, &l, "user:mallory", "10.3.0.3", 0, 100, NULL).code,
	    RL_BLOCKED);
	at(T0 + 1900 * S_US);
	v = check(st, &l, "user:mallory", "10.3.0.4", 0, 0, NULL);
	ck_assert_int_eq(v.code, RL_OK);
	/* ...at a reduced limit while the score decays. */
	ck_assert_int_lt(v.limit, 60);
	/* threat_report: auth failures from an IP, no subject. */
	for (int i = 0; i < 9; i++) {
		ck_assert_int_eq(st->ops->threat(st->impl, &l, NULL, "10.3.9.9",
				     10, "auth_failure", &blocked),
		    0);
		ck_assert(!blocked);
	}
	ck_assert_int_eq(st->ops->threat(st->impl, &l, NULL, "10.3.9.9", 10,
			     "auth_failure", &blocked),
	    0);
	ck_assert(blocked);
	ck_assert_int_eq(
	    check(st, &l, "user:innocent", "10.3.9.9", 0, 0, NULL).code,
	    RL_BLOCKED);
	ck_assert_int_eq(st->ops->blocks(st->impl, b, 8, &n, &total), 0);
	ck_assert_int_eq(total, 1);
	ck_assert_str_eq(b[0].kind, "ip");
	ck_assert_str_eq(b[0].reason, "auth_failure");
	ck_assert_int_eq(st->ops->unblock(st->impl, "ip:10.3.9.9", &found), 0);
	ck_assert(found);
	ck_assert_int_eq(
	    check(st, &l, "user:innocent", "10.3.9.9", 0, 0, NULL).code, RL_OK);
	rl_store_free(st);
}
END_TEST

START_TEST(test_block_list_order_and_max)
{
	struct rl_limits l = limits();
	struct rl_store *st = store();
	struct rl_block b[3];
	char subject[32];
	size_t n, total;
	bool blocked;
	int i;

	for (i = 0; i < 5; i++) {
		at(T0 + (5 - i) * S_US); /* later ones block earlier */
		snprintf(subject, sizeof(subject), "session:s%d", i);
		ck_assert_int_eq(
		    st->ops->threat(st->impl, &l, subject, "10.4.0.1", 100,
			"prompt_injection", &blocked),
		    0);
		ck_assert(blocked);
	}
	ck_assert_int_eq(st->ops->blocks(st->impl, b, 3, &n, &total), 0);
	/* 5 sessions and the IP (it got every point too). */
	ck_assert_int_eq(total, 6);
	ck_assert_int_eq(n, 3);
	ck_assert_str_eq(b[0].id, "s4");
	ck_assert_str_eq(b[1].id, "s3");
	ck_assert_str_eq(b[2].id, "s2");
	ck_assert_str_eq(b[0].kind, "session");
	rl_store_free(st);
}
END_TEST

/* The table is bounded; entries nobody needs go, and room comes back. */
START_TEST(test_table_bounded)
{
	struct rl_limits l = limits();
	struct rl_store *st = rl_store_mem_new(fake_clock, NULL, 4);
	struct rl_verdict v;
	struct rl_check in;

	ck_assert_ptr_nonnull(st);
	at(T0);
	ck_assert_int_eq(check1(st, &l, "user:a").code, RL_OK);
	ck_assert_int_eq(check1(st, &l, "user:b").code, RL_OK);
	ck_assert_int_eq(check1(st, &l, "user:c").code, RL_OK);
	memset(&in, 0, sizeof(in));
	snprintf(in.subject, sizeof(in.subject), "user:d");
	snprintf(in.ip, sizeof(in.ip), "192.0.2.1");
	ck_assert_int_eq(st->ops->check(st->impl, &l, &in, &v), -ENOSPC);
	/* An hour later every bucket is full again: all collectable. */
	at(T0 + RL_HOUR_US);
	ck_assert_int_eq(st->ops->check(st->impl, &l, &in, &v), 0);
	ck_assert_int_eq(v.code, RL_OK);
	rl_store_free(st);
}
END_TEST

static Suite *
rl_limits_suite(void)
{
	Suite *s = suite_create("rl_limits");
	TCase *tc;

	tc = tcase_create("arithmetic");
	tcase_add_test(tc, test_gcra_step);
	tcase_add_test(tc, test_threat_math);
	tcase_add_test(tc, test_misc_math);
	suite_add_tcase(s, tc);

	tc = tcase_create("requests");
	tcase_add_test(tc, test_exact_refill);
	tcase_add_test(tc, test_no_edge_burst);
	tcase_add_test(tc, test_burst_before_edge);
	tcase_add_test(tc, test_minute_and_hour);
	tcase_add_test(tc, test_ip_cap_users);
	tcase_add_test(tc, test_ip_cap_session_rotation);
	tcase_add_test(tc, test_same_session_no_churn);
	tcase_add_test(tc, test_refusal_consumes_nothing);
	tcase_add_test(tc, test_table_bounded);
	suite_add_tcase(s, tc);

	tc = tcase_create("money");
	tcase_add_test(tc, test_reserve_settle_release);
	tcase_add_test(tc, test_reservation_expiry);
	tcase_add_test(tc, test_day_rollover);
	tcase_add_test(tc, test_concurrent_reservations);
	suite_add_tcase(s, tc);

	tc = tcase_create("threat");
	tcase_add_test(tc, test_threat_steps);
	tcase_add_test(tc, test_block_and_unblock);
	tcase_add_test(tc, test_block_list_order_and_max);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(rl_limits_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
