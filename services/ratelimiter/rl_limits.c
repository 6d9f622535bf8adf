/*
 * The arithmetic of rl_limits.h.  rl_script.lua repeats it line for line:
 * change both together.
 */
#include "rl_limits.h"

#include <math.h>
#include <string.h>

static const char *const rl_code_names[RL_CODE_MAX] = {
    [RL_OK] = "ok",
    [RL_BLOCKED] = "blocked",
    [RL_MINUTE] = "rate_limit_minute",
    [RL_HOUR] = "rate_limit_hour",
    [RL_IP] = "ip_rate_limit",
    [RL_COST] = "daily_cost_limit",
};

const char *
rl_code_str(enum rl_code c)
{
	if ((unsigned)c >= RL_CODE_MAX)
		return NULL;
	return rl_code_names[c];
}

enum rl_code
rl_code_from_str(const char *s)
{
	int c;

	if (s == NULL)
		return RL_CODE_MAX;
	for (c = 0; c < RL_CODE_MAX; c++)
		if (strcmp(s, rl_code_names[c]) == 0)
			return (enum rl_code)c;
	return RL_CODE_MAX;
}

void
rl_gcra_step(int64_t tat_us, int64_t limit, int64_t period_us, int64_t now_us,
    struct rl_gcra *ret)
{
	int64_t t = period_us / limit;
	int64_t tat = tat_us > now_us ? tat_us : now_us;
	int64_t diff = tat + t - now_us;

	if (diff > period_us) {
		ret->allow = false;
		ret->tat_us = tat_us;
		ret->remaining = 0;
		ret->reset_us = tat - now_us;
		ret->retry_us = diff - period_us;
		return;
	}
	ret->allow = true;
	ret->tat_us = tat + t;
	ret->remaining = (period_us - diff) / t;
	ret->reset_us = diff;
	ret->retry_us = 0;
}

int64_t
rl_gcra_remaining(
    int64_t tat_us, int64_t limit, int64_t period_us, int64_t now_us)
{
	int64_t t = period_us / limit;
	int64_t tat = tat_us > now_us ? tat_us : now_us;
	int64_t left = period_us - (tat - now_us);

	if (left <= 0)
		return 0;
	left /= t;
	return left > limit ? limit : left;
}

int64_t
rl_threat_decay(int64_t ts_milli, int64_t tt_us, int64_t now_us)
{
	double f;

	if (ts_milli <= 0)
		return 0;
	if (now_us <= tt_us)
		return ts_milli;
	/* pow(), not exp2(): Lua's ^ is pow(), and both must agree. */
	f = pow(2.0, -(double)(now_us - tt_us) /
			 (double)(RL_THREAT_HALF_LIFE_S * RL_US_PER_S));
	return (int64_t)floor((double)ts_milli * f);
}

int64_t
rl_threat_pct(int64_t ts_milli)
{
	if (ts_milli >= RL_THREAT_STEP2 * 1000)
		return RL_THREAT_STEP2_PCT;
	if (ts_milli >= RL_THREAT_STEP1 * 1000)
		return RL_THREAT_STEP1_PCT;
	return 100;
}

int64_t
rl_scaled(int64_t limit, int64_t pct)
{
	int64_t v = limit * pct / 100;

	return v < 1 ? 1 : v;
}

int64_t
rl_ceil_s(int64_t us)
{
	int64_t s;

	if (us <= 0)
		return 0;
	s = (us + RL_US_PER_S - 1) / RL_US_PER_S;
	return s > PROTO_SECONDS_MAX ? PROTO_SECONDS_MAX : s;
}

int64_t
rl_until_midnight_us(int64_t now_us)
{
	return (now_us / RL_DAY_US + 1) * RL_DAY_US - now_us;
}
