#include "pw_breaker.h"

#include <stdio.h>
#include <string.h>

const int64_t pw_lat_bounds[PW_LAT_BUCKETS - 1] = {5, 10, 25, 50, 100, 250, 500,
    1000, 2000, 4000, 8000, 15000, 30000, 60000, 120000};

static const char *const state_names[PW_BREAKER_STATE_MAX] = {
    "closed", "open", "half_open"};

const char *
pw_breaker_state_str(enum pw_breaker_state s)
{
	return s < PW_BREAKER_STATE_MAX ? state_names[s] : "unknown";
}

enum pw_breaker_state
pw_breaker_state_from_str(const char *s)
{
	for (int i = 0; i < PW_BREAKER_STATE_MAX; i++)
		if (s != NULL && strcmp(s, state_names[i]) == 0)
			return (enum pw_breaker_state)i;
	return PW_BREAKER_STATE_MAX;
}

int
pw_lat_bucket(int64_t ms)
{
	for (int i = 0; i < PW_LAT_BUCKETS - 1; i++)
		if (ms <= pw_lat_bounds[i])
			return i;
	return PW_LAT_BUCKETS - 1;
}

void
pw_breaker_init(struct pw_breaker *b, const struct pw_breaker_cfg *cfg)
{
	memset(b, 0, sizeof(*b));
	b->cfg = *cfg;
	if (b->cfg.failure_threshold < 1)
		b->cfg.failure_threshold = 1;
	if (b->cfg.recovery_ms < 1)
		b->cfg.recovery_ms = 1;
	if (b->cfg.min_volume < 1)
		b->cfg.min_volume = 1;
	b->state = PW_BREAKER_CLOSED;
}

/* The bucket of now, emptied when it held an older second. */
static struct pw_breaker_bucket *
bucket_at(struct pw_breaker *b, int64_t now_ms)
{
	int64_t sec = now_ms / 1000;
	struct pw_breaker_bucket *k = &b->win[sec % PW_BREAKER_WINDOW_S];

	if (k->sec != sec) {
		memset(k, 0, sizeof(*k));
		k->sec = sec;
	}
	return k;
}

void
pw_breaker_window(
    const struct pw_breaker *b, int64_t now_ms, struct pw_breaker_window *ret)
{
	int64_t sec = now_ms / 1000;

	memset(ret, 0, sizeof(*ret));
	for (int i = 0; i < PW_BREAKER_WINDOW_S; i++) {
		const struct pw_breaker_bucket *k = &b->win[i];

		if (k->sec <= sec - PW_BREAKER_WINDOW_S || k->sec > sec)
			continue;
		ret->total += k->total;
		ret->failures += k->failures;
		ret->requests += k->requests;
		for (int j = 0; j < PW_LAT_BUCKETS; j++)
			ret->lat[j] += k->lat[j];
	}
}

/* When an open breaker turns half-open. */
static int64_t
half_open_at(const struct pw_breaker *b)
{
	return b->open_until_ms + (b->peer_held ? b->cfg.recovery_ms : 0);
}

enum pw_breaker_state
pw_breaker_state(struct pw_breaker *b, int64_t now_ms)
{
	if (b->state == PW_BREAKER_OPEN && now_ms >= half_open_at(b)) {
		b->state = PW_BREAKER_HALF_OPEN;
		b->peer_held = false;
		b->probing = false;
	}
	return b->state;
}

static void
open_until(struct pw_breaker *b, int64_t now_ms, int64_t until_ms, bool peer,
    const char *reason)
{
	b->state = PW_BREAKER_OPEN;
	b->peer_held = peer;
	b->probing = false;
	b->opened_at_ms = now_ms;
	b->open_until_ms = until_ms;
	snprintf(b->reason, sizeof(b->reason), "%s", reason);
}

static int64_t
retry_ms(const struct pw_breaker *b, int64_t now_ms)
{
	int64_t left =
	    b->state == PW_BREAKER_OPEN ? b->open_until_ms - now_ms : 0;

	/* Whole seconds (Retry-After), at least one. */
	if (left < 1000)
		return 1000;
	return (left + 999) / 1000 * 1000;
}

enum pw_breaker_verdict
pw_breaker_admit(struct pw_breaker *b, int64_t now_ms, int64_t *ret_retry_ms)
{
	switch (pw_breaker_state(b, now_ms)) {
	case PW_BREAKER_CLOSED:
		return PW_BREAKER_ALLOW;
	case PW_BREAKER_HALF_OPEN:
		if (!b->probing) {
			b->probing = true;
			return PW_BREAKER_PROBE;
		}
		break;
	case PW_BREAKER_OPEN:
	case PW_BREAKER_STATE_MAX:
		break;
	}
	if (ret_retry_ms != NULL)
		*ret_retry_ms = retry_ms(b, now_ms);
	return PW_BREAKER_REJECT;
}

static void
clear_counters(struct pw_breaker *b)
{
	b->consecutive = 0;
	/* A fresh window: old failures must not trip the closed breaker
	 * again at once.  Requests and latencies stay (status). */
	for (int i = 0; i < PW_BREAKER_WINDOW_S; i++) {
		b->win[i].total = 0;
		b->win[i].failures = 0;
	}
}

bool
pw_breaker_record(struct pw_breaker *b, int64_t now_ms, bool probe,
    bool failure, int64_t latency_ms)
{
	struct pw_breaker_bucket *k = bucket_at(b, now_ms);
	enum pw_breaker_state st = pw_breaker_state(b, now_ms);

	k->total++;
	if (latency_ms >= 0)
		k->lat[pw_lat_bucket(latency_ms)]++;
	if (failure) {
		k->failures++;
		b->consecutive++;
	} else {
		b->consecutive = 0;
		b->last_success_ms = now_ms;
	}
	if (probe && st == PW_BREAKER_HALF_OPEN && b->probing) {
		b->probing = false;
		if (failure) {
			open_until(b, now_ms, now_ms + b->cfg.recovery_ms,
			    false, "probe_failed");
		} else {
			b->state = PW_BREAKER_CLOSED;
			clear_counters(b);
		}
		return true;
	}
	if (st != PW_BREAKER_CLOSED || !failure)
		return false;
	if (b->consecutive >= b->cfg.failure_threshold) {
		open_until(b, now_ms, now_ms + b->cfg.recovery_ms, false,
		    "consecutive_failures");
		return true;
	} else {
		struct pw_breaker_window w;

		pw_breaker_window(b, now_ms, &w);
		if (w.total >= b->cfg.min_volume &&
		    (double)w.failures > b->cfg.rate * (double)w.total) {
			open_until(b, now_ms, now_ms + b->cfg.recovery_ms,
			    false, "failure_rate");
			return true;
		}
	}
	return false;
}

void
pw_breaker_release(struct pw_breaker *b)
{
	if (b->state == PW_BREAKER_HALF_OPEN)
		b->probing = false;
}

void
pw_breaker_count_request(struct pw_breaker *b, int64_t now_ms)
{
	bucket_at(b, now_ms)->requests++;
}

void
pw_breaker_note_error(struct pw_breaker *b, int64_t now_ms, int64_t status,
    const char *code, const char *message)
{
	b->last_error_ms = now_ms;
	b->last_error_status = status;
	snprintf(b->last_error_code, sizeof(b->last_error_code), "%s",
	    code != NULL ? code : "");
	snprintf(b->last_error_message, sizeof(b->last_error_message), "%s",
	    message != NULL ? message : "");
}

bool
pw_breaker_peer_open(struct pw_breaker *b, int64_t now_ms, int64_t until_ms)
{
	enum pw_breaker_state st = pw_breaker_state(b, now_ms);

	if (until_ms <= now_ms)
		return false;
	if (st == PW_BREAKER_OPEN && b->open_until_ms >= until_ms)
		return false;
	if (st == PW_BREAKER_OPEN && !b->peer_held) {
		/* Our own trip, shorter: keep probing ourselves, later. */
		b->open_until_ms = until_ms;
		return false;
	}
	open_until(b, now_ms, until_ms, true, "peer");
	return true;
}

bool
pw_breaker_peer_closed(struct pw_breaker *b, int64_t now_ms)
{
	enum pw_breaker_state st = pw_breaker_state(b, now_ms);

	if (st != PW_BREAKER_OPEN || !b->peer_held)
		return false;
	b->state = PW_BREAKER_CLOSED;
	b->peer_held = false;
	clear_counters(b);
	return true;
}

void
pw_breaker_reset(struct pw_breaker *b)
{
	b->state = PW_BREAKER_CLOSED;
	b->peer_held = false;
	b->probing = false;
	b->open_until_ms = 0;
	clear_counters(b);
}
