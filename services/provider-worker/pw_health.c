#include "pw_health.h"

#include <string.h>

static const char *const slot_names[PW_SLOT_MAX] = {"primary", "fallback"};

const char *
pw_slot_str(enum pw_slot s)
{
	return s < PW_SLOT_MAX ? slot_names[s] : "unknown";
}

enum pw_slot
pw_slot_from_str(const char *s)
{
	for (int i = 0; i < PW_SLOT_MAX; i++)
		if (s != NULL && strcmp(s, slot_names[i]) == 0)
			return (enum pw_slot)i;
	return PW_SLOT_MAX;
}

void
pw_health_init(struct pw_health *h, const struct pw_breaker_cfg *cfg,
    const bool configured[PW_TARGETS], pw_health_change_fn change, void *arg)
{
	pthread_mutex_init(&h->mu, NULL);
	for (int t = 0; t < PW_TARGETS; t++) {
		pw_breaker_init(&h->br[t], cfg);
		h->configured[t] = configured[t];
	}
	h->change = change;
	h->arg = arg;
}

void
pw_health_destroy(struct pw_health *h)
{
	pthread_mutex_destroy(&h->mu);
}

bool
pw_health_configured(struct pw_health *h, int target)
{
	return target >= 0 && target < PW_TARGETS && h->configured[target];
}

/* Reports a change noticed under the lock, after it. */
struct change {
	bool changed;
	enum pw_breaker_state st;
	int64_t until;
	char reason[65];
};

static void
change_take(struct pw_breaker *b, int64_t now_ms, struct change *c)
{
	c->changed = true;
	c->st = pw_breaker_state(b, now_ms);
	c->until = c->st == PW_BREAKER_OPEN ? b->open_until_ms : 0;
	memcpy(c->reason, b->reason, sizeof(c->reason));
	if (c->st == PW_BREAKER_CLOSED)
		memcpy(c->reason, "closed", sizeof("closed"));
}

static void
change_emit(struct pw_health *h, int target, const struct change *c)
{
	if (c->changed && h->change != NULL)
		h->change(h->arg, target, c->st, c->until, c->reason);
}

enum pw_breaker_verdict
pw_health_admit(
    struct pw_health *h, int target, int64_t now_ms, int64_t *ret_retry_ms)
{
	enum pw_breaker_verdict v;

	pthread_mutex_lock(&h->mu);
	v = pw_breaker_admit(&h->br[target], now_ms, ret_retry_ms);
	if (v != PW_BREAKER_REJECT)
		h->br[target].in_flight++;
	pthread_mutex_unlock(&h->mu);
	return v;
}

bool
pw_health_refuses(
    struct pw_health *h, int target, int64_t now_ms, int64_t *ret_retry_ms)
{
	struct pw_breaker *b = &h->br[target];
	enum pw_breaker_state st;
	bool r;

	pthread_mutex_lock(&h->mu);
	st = pw_breaker_state(b, now_ms);
	r = st == PW_BREAKER_OPEN || (st == PW_BREAKER_HALF_OPEN && b->probing);
	if (r && ret_retry_ms != NULL) {
		int64_t left =
		    st == PW_BREAKER_OPEN ? b->open_until_ms - now_ms : 0;

		*ret_retry_ms = left < 1000 ? 1000 : (left + 999) / 1000 * 1000;
	}
	pthread_mutex_unlock(&h->mu);
	return r;
}

void
pw_health_done(struct pw_health *h, int target, int64_t now_ms, bool probe,
    bool verdict, bool failure, int64_t latency_ms, int64_t status,
    const char *code, const char *message)
{
	struct pw_breaker *b = &h->br[target];
	struct change c = {.changed = false};

	pthread_mutex_lock(&h->mu);
	if (b->in_flight > 0)
		b->in_flight--;
	if (!verdict) {
		if (probe)
			pw_breaker_release(b);
	} else if (pw_breaker_record(b, now_ms, probe, failure, latency_ms)) {
		change_take(b, now_ms, &c);
	}
	if (code != NULL && code[0] != '\0')
		pw_breaker_note_error(b, now_ms, status, code, message);
	pthread_mutex_unlock(&h->mu);
	change_emit(h, target, &c);
}

void
pw_health_count_request(struct pw_health *h, int target, int64_t now_ms)
{
	pthread_mutex_lock(&h->mu);
	pw_breaker_count_request(&h->br[target], now_ms);
	pthread_mutex_unlock(&h->mu);
}

void
pw_health_peer(struct pw_health *h, int target, enum pw_breaker_state st,
    int64_t open_until_ms, int64_t now_ms)
{
	struct pw_breaker *b = &h->br[target];
	bool changed = false;

	pthread_mutex_lock(&h->mu);
	if (st == PW_BREAKER_OPEN)
		changed = pw_breaker_peer_open(b, now_ms, open_until_ms);
	else if (st == PW_BREAKER_CLOSED)
		changed = pw_breaker_peer_closed(b, now_ms);
	pthread_mutex_unlock(&h->mu);
	/* A peer's news is not ours to relay again. */
	(void)changed;
}

void
pw_health_reset(struct pw_health *h, enum pw_prov prov, int64_t now_ms)
{
	(void)now_ms;
	pthread_mutex_lock(&h->mu);
	for (int s = 0; s < PW_SLOT_MAX; s++)
		pw_breaker_reset(&h->br[PW_TARGET(prov, s)]);
	pthread_mutex_unlock(&h->mu);
}

/* Under h->mu. */
static json_t *
target_json(struct pw_breaker *b, int64_t now_ms)
{
	struct pw_breaker_window w;
	enum pw_breaker_state st = pw_breaker_state(b, now_ms);
	json_t *o, *lat, *err = json_null();

	pw_breaker_window(b, now_ms, &w);
	if ((lat = json_array()) == NULL)
		return NULL;
	for (int i = 0; i < PW_LAT_BUCKETS; i++)
		json_array_append_new(lat, json_integer(w.lat[i]));
	if (b->last_error_ms > 0)
		err = json_pack("{s:s, s:s, s:I, s:I}", "code",
		    b->last_error_code, "message", b->last_error_message,
		    "status", (json_int_t)b->last_error_status, "at_ms",
		    (json_int_t)b->last_error_ms);
	o = json_pack("{s:s, s:I, s:s, s:I, s:I, s:I, s:I, s:o, s:I, s:I, "
		      "s:o}",
	    "state", pw_breaker_state_str(st), "open_until_ms",
	    (json_int_t)(st == PW_BREAKER_OPEN ? b->open_until_ms : 0),
	    "reason", st == PW_BREAKER_CLOSED ? "" : b->reason,
	    "consecutive_failures", (json_int_t)b->consecutive, "window_total",
	    (json_int_t)w.total, "window_failures", (json_int_t)w.failures,
	    "requests_last_minute", (json_int_t)w.requests, "last_error", err,
	    "last_success_ms", (json_int_t)b->last_success_ms, "in_flight",
	    (json_int_t)b->in_flight, "latency_buckets", lat);
	return o;
}

json_t *
pw_health_snapshot(struct pw_health *h, int64_t now_ms)
{
	json_t *root = json_object(), *provs = json_object();

	if (root == NULL || provs == NULL) {
		json_decref(root);
		json_decref(provs);
		return NULL;
	}
	json_object_set_new(root, "providers", provs);
	pthread_mutex_lock(&h->mu);
	for (int p = 0; p < PW_PROV_MAX; p++) {
		int pt = PW_TARGET(p, PW_SLOT_PRIMARY);
		int ft = PW_TARGET(p, PW_SLOT_FALLBACK);
		json_t *o;

		if (!h->configured[pt])
			continue;
		if ((o = target_json(&h->br[pt], now_ms)) == NULL)
			continue;
		json_object_set_new(o, "fallback",
		    h->configured[ft] ? target_json(&h->br[ft], now_ms)
				      : json_null());
		json_object_set_new(provs, pw_prov_str((enum pw_prov)p), o);
	}
	pthread_mutex_unlock(&h->mu);
	return root;
}
