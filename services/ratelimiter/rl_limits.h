/*
 * The ratelimiter's rules, in one place: the limits, the GCRA arithmetic,
 * the threat score and its steps, the cost reservations.  The memory store
 * (rl_store_mem.c) and the Lua script (rl_script.lua) both implement
 * exactly these; tests/integration/ratelimiter_store_test.c runs one
 * scenario through both on the same clock and requires equal answers.
 *
 * Request limits: GCRA ("generic cell rate algorithm", a token bucket kept
 * as one timestamp).  A limit of L per period P admits a burst of L, then
 * one request every T = floor(P / L) microseconds: the bucket refills
 * continuously, so there is no window edge at which a second burst fits
 * (a fixed-window counter admits 2L around each edge).  Per user or
 * session: L per minute and L' per hour, both must admit; per client IP:
 * its own per-minute cap, whatever the session.
 *
 *   tat  = max(stored tat, now)          (theoretical arrival time)
 *   new  = tat + T
 *   admit iff new - now <= P; then stored tat = new
 *   remaining = floor((P - (new - now)) / T)
 *   reset     = new - now (the bucket is full again then)
 *   retry     = new - P - now (when refused)
 *
 * Money: the daily cost budget (AI_PROXY_COST_LIMIT_DAILY) per user or
 * session per UTC day (the store's clock: Redis TIME).  A check reserves
 * the request's worst case; it is admitted iff spent + reserved + reserve
 * <= limit.  limit_settle replaces the reservation by the actual cost (0
 * releases it); a reservation nobody settles expires after
 * AI_PROXY_TIMEOUT_SECONDS + RL_RESERVE_MARGIN_S.  A settle is applied once
 * (a marker per reservation, kept RL_SETTLE_DEDUP_S); a settle of an
 * unknown or expired reservation still adds its actual cost to spent.  At
 * the UTC day change spent starts at 0 (reservations in flight carry over).
 *
 * Threat: a score per subject and per client IP, in milli-points, halving
 * every RL_THREAT_HALF_LIFE_S.  Points come with limit_check ("threat",
 * e.g. prompt-injection patterns, counted for the subject and its IP), with
 * threat_report (invalid requests, auth failures) and from session churn:
 * each new session id seen from one IP beyond RL_CHURN_FREE within
 * RL_CHURN_WINDOW_S adds RL_CHURN_POINTS to the IP.  Steps:
 *
 *   score >= RL_THREAT_STEP1 (25)   limits x 1/2
 *   score >= RL_THREAT_STEP2 (50)   limits x 1/4
 *   score >= RL_THREAT_BLOCK (100)  blocked for AI_PROXY_BLOCK_SECONDS
 *                                   (403 "blocked"), when points arrive
 *
 * The subject's score scales its minute and hour limits, the IP's score the
 * IP cap; a blocked IP blocks every subject behind it.  Blocks are listed
 * and lifted (which also zeroes the score) by the admin messages.
 *
 * A refusal consumes nothing: every limit is checked first, then all are
 * applied.  Threat points and the session seen are recorded either way.
 */
#ifndef AIPROXY_RL_LIMITS_H
#define AIPROXY_RL_LIMITS_H

#include <stdbool.h>
#include <stdint.h>

#include "proto.h"

#define RL_US_PER_S  1000000LL
#define RL_MINUTE_US (60 * RL_US_PER_S)
#define RL_HOUR_US   (3600 * RL_US_PER_S)
#define RL_DAY_US    (86400 * RL_US_PER_S)

/* Threat score, in points (stored as milli-points). */
#define RL_THREAT_HALF_LIFE_S 600
#define RL_THREAT_STEP1       25
#define RL_THREAT_STEP1_PCT   50
#define RL_THREAT_STEP2       50
#define RL_THREAT_STEP2_PCT   25
#define RL_THREAT_BLOCK       100
/* Session churn from one IP. */
#define RL_CHURN_FREE      20
#define RL_CHURN_POINTS    2
#define RL_CHURN_WINDOW_S  600
#define RL_CHURN_TRACK_MAX 1000 /* distinct session ids kept per IP */

/* Reservations outlive the request deadline by this much. */
#define RL_RESERVE_MARGIN_S 60
/* How long a settled reservation id is remembered (duplicate settles). */
#define RL_SETTLE_DEDUP_S 3600
/* A cost refusal while money is only reserved: retry after this. */
#define RL_COST_RETRY_S 5
/* State of an idle subject or IP is kept this long (Redis TTL). */
#define RL_STATE_TTL_S 7200
/* Blocked subjects one block list answer carries at most. */
#define RL_BLOCK_LIST_MAX 1000

/* The limits a store applies (already divided by the replica share when
 * the memory store stands in for Redis). */
struct rl_limits {
	int64_t per_minute;     /* per user or session, >= 1 */
	int64_t per_hour;       /* per user or session, >= 1 */
	int64_t per_ip_minute;  /* per client IP, >= 1 */
	int64_t cost_micro_usd; /* per user or session per UTC day, >= 0 */
	int64_t block_s;        /* AI_PROXY_BLOCK_SECONDS */
	int64_t reserve_ttl_s;  /* deadline + RL_RESERVE_MARGIN_S */
};

/* Why a request was refused; RL_OK when it was not. */
enum rl_code {
	RL_OK,
	RL_BLOCKED,
	RL_MINUTE,
	RL_HOUR,
	RL_IP,
	RL_COST,
	RL_CODE_MAX
};

/* "ok", "blocked", "rate_limit_minute", "rate_limit_hour", "ip_rate_limit",
 * "daily_cost_limit"; NULL for an unknown code. */
const char *rl_code_str(enum rl_code c);
enum rl_code rl_code_from_str(const char *s);

/* One GCRA step for a limit of limit per period_us at now_us. */
struct rl_gcra {
	bool allow;
	int64_t tat_us;    /* the tat to store when allowed (else unchanged) */
	int64_t remaining; /* requests left after this one */
	int64_t reset_us;  /* until the bucket is full again */
	int64_t retry_us;  /* until this request would be admitted, 0 if so */
};
void rl_gcra_step(int64_t tat_us, int64_t limit, int64_t period_us,
    int64_t now_us, struct rl_gcra *ret);
/* Requests left in the bucket at now_us, without taking one (0..limit). */
int64_t rl_gcra_remaining(
    int64_t tat_us, int64_t limit, int64_t period_us, int64_t now_us);

/* Score (milli-points) ts stored at tt_us, decayed to now_us. */
int64_t rl_threat_decay(int64_t ts_milli, int64_t tt_us, int64_t now_us);
/* Percent of the configured limits a score allows (100, 50 or 25). */
int64_t rl_threat_pct(int64_t ts_milli);
/* max(1, limit * pct / 100). */
int64_t rl_scaled(int64_t limit, int64_t pct);

/* Seconds, rounded up, of a duration in microseconds, within the protocol's
 * range (0..PROTO_SECONDS_MAX). */
int64_t rl_ceil_s(int64_t us);
/* Microseconds from now_us to the next UTC midnight. */
int64_t rl_until_midnight_us(int64_t now_us);

#endif
