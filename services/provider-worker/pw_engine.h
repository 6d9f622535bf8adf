/*
 * The curl thread: one curl multi handle driven by one thread carries every
 * upstream call of the worker.  Other threads hand calls, cancels and
 * stream resumptions over through a mutex-protected queue and
 * curl_multi_wakeup(); nothing else touches curl.
 *
 * A streamed answer (200 text/event-stream) goes out chunk by chunk, as
 * curl hands it over, on the push socket of the request's stream_url; a
 * call whose chunks pile up unsent (a slow gateway) is paused, not
 * buffered without bound, and resumed when they drain.
 */
#ifndef PW_ENGINE_H
#define PW_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "pw_call.h"
#include "pw_health.h"

/* The endpoints, built from a base URL: base + "/v1/messages" or
 * "/v1/chat/completions" (a base already ending in "/v1" gets no second
 * one).  Caller frees *ret. */
int pw_endpoint_url(const char *base, enum pw_prov p, char **ret);

struct pw_engine_opts {
	const char *url[PW_PROV_MAX]; /* endpoints; borrowed */
	const char *key[PW_PROV_MAX]; /* NULL: the provider is not set up */
	/* A second upstream per provider (another base URL and/or key):
	 * NULL url or key: none. */
	const char *url_fb[PW_PROV_MAX];
	const char *key_fb[PW_PROV_MAX];
	/* Breakers (NULL: none, every call goes); retries of a failed
	 * attempt (AI_PROXY_MAX_RETRIES). */
	struct pw_health *health;
	int max_retries;
	/* Cross-provider failover of non-streamed claude calls to openai's
	 * primary upstream: "<claude model id>=<openai model id>,...",
	 * "*=<id>" for any (NULL: none); models resolves the ids. */
	const char *xmap;
	const struct model_table *models;
	size_t max_stream_urls; /* push sockets cached (gateways) */
	/* Tuning, 0 for the defaults: messages a push socket buffers, and
	 * the unsent chunk bytes per call that pause / resume it. */
	int push_sendbuf;
	size_t pause_high;
	size_t pause_low;
};

/* Called on the curl thread exactly once per submitted call, when its
 * result is set (c->out, usage, cost...).  c->body is the payload.  The
 * engine drops its reference after the callback returns. */
typedef void (*pw_engine_done_fn)(void *arg, struct pw_call *c);

struct pw_engine;

struct pw_engine_stats {
	uint64_t chunks;         /* stream chunks queued */
	uint64_t chunks_dropped; /* not taken by a gateway */
	uint64_t cancels;        /* cancels that ended a call */
	uint64_t pauses;         /* streams paused for a slow gateway */
	uint64_t active;         /* transfers in curl now */
};

/* opts strings must outlive the engine. */
int pw_engine_new(const struct pw_engine_opts *o, pw_engine_done_fn done,
    void *arg, struct pw_engine **ret);
/* Hands c to the curl thread; takes the caller's reference.  c->req,
 * c->prov and c->model are set.  The curl thread asks the breakers
 * (fails fast with 503 provider_unavailable when they refuse), retries
 * a retryable failure (429, 5xx, connection errors, timeouts) with
 * backoff while nothing went to the client and the deadline allows, and
 * moves to the fallback upstream when the primary fails or is open. */
void pw_engine_submit(struct pw_engine *e, struct pw_call *c);
/* Ends every call with this request id (usage "aborted"); a cancel that
 * arrives just before its call is remembered for a moment. */
void pw_engine_cancel(struct pw_engine *e, const char *request_id);
/* Ends every call in flight as "stopping", and every later one at once. */
void pw_engine_abort_all(struct pw_engine *e);
/* Waits up to timeout_ms for queued stream chunks to leave. */
int pw_engine_flush(struct pw_engine *e, int timeout_ms);
void pw_engine_stats(struct pw_engine *e, struct pw_engine_stats *ret);
/* Aborts what is left, stops the thread, frees everything. */
void pw_engine_free(struct pw_engine *e);

#endif
