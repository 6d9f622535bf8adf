/*
 * The worker's breakers, one per upstream target (a provider's primary
 * base URL + key, and its optional fallback), behind one mutex, and the
 * numbers the status endpoint aggregates.  Any thread may call these; no
 * lock is held across I/O: state changes are reported through the
 * callback after the lock is dropped.
 */
#ifndef PW_HEALTH_H
#define PW_HEALTH_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "pw_breaker.h"
#include "pw_usage.h"

enum pw_slot { PW_SLOT_PRIMARY, PW_SLOT_FALLBACK, PW_SLOT_MAX };
#define PW_TARGETS            (PW_PROV_MAX * PW_SLOT_MAX)
#define PW_TARGET(prov, slot) ((int)(prov)*PW_SLOT_MAX + (int)(slot))
#define PW_TARGET_PROV(t)     ((enum pw_prov)((t) / PW_SLOT_MAX))
#define PW_TARGET_SLOT(t)     ((enum pw_slot)((t) % PW_SLOT_MAX))

const char *pw_slot_str(enum pw_slot s);
/* The slot named s ("primary"/"fallback"), or PW_SLOT_MAX. */
enum pw_slot pw_slot_from_str(const char *s);

/* A breaker changed state: target, the new state, until when it is open
 * (wall-clock ms, 0 when closed) and why. */
typedef void (*pw_health_change_fn)(void *arg, int target,
    enum pw_breaker_state st, int64_t open_until_ms, const char *reason);

struct pw_health {
	pthread_mutex_t mu;
	bool configured[PW_TARGETS];
	struct pw_breaker br[PW_TARGETS];
	pw_health_change_fn change;
	void *arg;
};

void pw_health_init(struct pw_health *h, const struct pw_breaker_cfg *cfg,
    const bool configured[PW_TARGETS], pw_health_change_fn change, void *arg);
void pw_health_destroy(struct pw_health *h);
bool pw_health_configured(struct pw_health *h, int target);

/* See pw_breaker_admit(); a call admitted is counted in flight until
 * pw_health_done(). */
enum pw_breaker_verdict pw_health_admit(
    struct pw_health *h, int target, int64_t now_ms, int64_t *ret_retry_ms);
/* Whether admit would refuse now (open, or half-open with its probe out);
 * no side effect but the time's.  *ret_retry_ms (may be NULL) as from
 * pw_breaker_admit() when it would. */
bool pw_health_refuses(
    struct pw_health *h, int target, int64_t now_ms, int64_t *ret_retry_ms);
/*
 * An admitted attempt ended.  verdict: false when it says nothing about
 * the provider (cancelled, stopping, internal): a probe is released.
 * failure: see pw_breaker.h.  status/code/message: the error to show as
 * "last error" (code NULL: none).
 */
void pw_health_done(struct pw_health *h, int target, int64_t now_ms, bool probe,
    bool verdict, bool failure, int64_t latency_ms, int64_t status,
    const char *code, const char *message);
/* One client request for the provider (requests per minute). */
void pw_health_count_request(struct pw_health *h, int target, int64_t now_ms);

/* A peer's breaker changed (from the control channel). */
void pw_health_peer(struct pw_health *h, int target, enum pw_breaker_state st,
    int64_t open_until_ms, int64_t now_ms);
/* Admin reset of every target of prov. */
void pw_health_reset(struct pw_health *h, enum pw_prov prov, int64_t now_ms);

/*
 * The stats payload of msg_worker_stats (see proto.h):
 *   {"providers":{"claude":{<target>,"fallback":<target>|null},...}}
 * Caller decrefs.
 */
json_t *pw_health_snapshot(struct pw_health *h, int64_t now_ms);

#endif
