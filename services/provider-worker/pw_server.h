/*
 * The provider-worker's sockets and bookkeeping (the worker side of
 * /work/notes/request-path.md):
 *   - rep, DIALING the gateway's worker URL, with one context per call the
 *     worker may hold: chat_req (answered later, from the curl thread),
 *     ping, status_req; anything else gets ack ok=false "bad_request";
 *   - sub, DIALING the control URL ("ctl " topic): cancel ends a call;
 *   - the usage sender (common/usage_sender.h): one usage_event per call,
 *     ok | error | aborted, journaled, then published to the usage URL,
 *     with catch-up through the accountant URL;
 *   - the curl engine (pw_engine.h) and its push sockets for streams.
 */
#ifndef PW_SERVER_H
#define PW_SERVER_H

#include <stdint.h>

#include "models.h"
#include "pw_breaker.h"
#include "pw_usage.h"

struct pw_server_opts {
	const char *worker_url;
	const char *control_url;
	const char *usage_url;
	const char *accountant_url; /* journal catch-up (usage_sender.h) */
	const char *state_dir;      /* the journal lives here */
	const char *worker_id;
	int concurrency; /* calls held at once (rep contexts) */
	const char *base_url[PW_PROV_MAX];
	const char *key[PW_PROV_MAX]; /* NULL or "": provider not set up */
	/* The fallback upstream of a provider: another base URL and/or key
	 * (either NULL/"": the primary's); both unset: none. */
	const char *fallback_base_url[PW_PROV_MAX];
	const char *fallback_key[PW_PROV_MAX];
	const struct model_table *models;
	/* Breakers and retries. */
	struct pw_breaker_cfg breaker;
	int max_retries;
	const char *fallback_model_map; /* see pw_engine_opts.xmap */
	/* The gateway's pull socket (AI_PROXY_STREAM_URL): breaker_state and
	 * worker_stats go there.  NULL: not sent. */
	const char *report_url;
	int stats_interval_ms; /* 0: 1000 */
};

struct pw_server_stats {
	uint64_t calls; /* chat_req decoded */
	uint64_t ok;
	uint64_t errors;
	uint64_t aborted;
	uint64_t bad_messages; /* undecodable or unexpected messages */
	uint64_t in_flight;
};

struct pw_server;

/* Strings of o must outlive the server (keys included). */
int pw_server_start(const struct pw_server_opts *o, struct pw_server **ret);
/*
 * Graceful stop: new chat_req get 503 "worker_stopping"; calls in flight
 * may finish for up to grace_ms, the rest are aborted (usage "aborted");
 * queued stream chunks get a moment to leave.  Returns when no call is
 * left.
 */
void pw_server_stop(struct pw_server *s, int grace_ms);
void pw_server_stats(struct pw_server *s, struct pw_server_stats *ret);
/* Stops (at once) if not stopped, closes the sockets, frees everything. */
void pw_server_free(struct pw_server *s);

#endif
