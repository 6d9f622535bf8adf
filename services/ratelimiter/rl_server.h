/*
 * The ratelimiter's message handling: one rep socket LISTENING on
 * AI_PROXY_RATELIMITER_URL; the gateway dials it with req.
 *
 * Messages served (proto.h) and their replies:
 *   limit_check     -> limit_verdict: one decision over every limit (see
 *                      rl_limits.h); reservation_id names the money held
 *   limit_check_batch -> limit_verdict_batch: one verdict per check, in
 *                      order, each decided as if alone (a batch that does
 *                      not decode whole: ack bad_request)
 *   limit_settle    -> ack ok (message: settled | unknown | duplicate)
 *   limit_settle_batch -> ack ok unless a line was refused
 *   quota_req       -> quota_resp: the subject's limits, used, cost today
 *   threat_report   -> ack ok, code "ok" or "blocked"
 *   block_list      -> block_list_resp (JSON payload)
 *   unblock         -> ack ok "ok", or ok=false "not_found"
 *   status_req      -> status_resp: "up", or "degraded" while Redis is
 *                      configured but not answering
 *   ping            -> pong
 * Anything else: ack ok=false "bad_request" (counted and logged).
 *
 * Backend: REDIS_ENABLED=false keeps every limit in process (the memory
 * store, full limits).  With Redis, a failure or a reply slower than
 * AI_PROXY_REDIS_TIMEOUT_MS switches to the memory store with 1/N of each
 * limit (N = AI_PROXY_RATELIMITER_REPLICAS) and verdict.degraded = true;
 * a probe PINGs Redis every second and switches back when it answers,
 * first replaying the settles recorded meanwhile (idempotent).  A Redis
 * failure never turns into an error reply.
 *
 * Threads: without Redis the nng callback decides and replies itself
 * (nothing blocks).  With Redis it only queues the request (a batch's
 * checks one by one); REDIS_MAX_CONNECTIONS worker threads (one pooled
 * connection each, so a worker never waits for one) decide and reply, the
 * one deciding a batch's last check answering it.  nng's own threads never
 * wait on Redis.
 */
#ifndef AIPROXY_RL_SERVER_H
#define AIPROXY_RL_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"

#define RL_DAEMON_NAME "ratelimiter"
/* Requests the rep socket holds in flight at once. */
#define RL_REP_CONTEXTS 128
/* Worker threads without Redis. */
#define RL_WORKERS_MEMORY 2
/* Settles kept for Redis while it is down (oldest dropped beyond). */
#define RL_PENDING_MAX 4096
/* How often the probe tries Redis while it is down. */
#define RL_PROBE_MS 1000

struct rl_server;

/* Copies what it needs from c (c may be freed afterwards); with Redis,
 * tries it once (bounded by the timeout).  No socket, no thread yet: tests
 * drive rl_server_handle() directly.  NULL when out of memory or REDIS_URL
 * is not a redis:// URL.  Caller frees with rl_server_free(). */
struct rl_server *rl_server_new(const struct cfg *c);
/* Starts the workers and the Redis probe, then listens on url. */
int rl_server_listen(struct rl_server *s, const char *url);
/*
 * Answers one request (buf, len) with a reply in *ret_buf (caller frees
 * with free()).  Anything undecodable or of a type the ratelimiter does not
 * serve is answered with an ack ok=false code "bad_request", counted and
 * logged.  Fails (-ENOMEM, -EINVAL) only when no reply can be encoded.
 * Thread-safe.
 */
int rl_server_handle(struct rl_server *s, const char *buf, size_t len,
    char **ret_buf, size_t *ret_len);
/* Requests handled so far and how many of them were bad. */
uint64_t rl_server_requests(const struct rl_server *s);
uint64_t rl_server_bad_requests(const struct rl_server *s);
/* Whether decisions come from the in-process fallback right now. */
bool rl_server_degraded(const struct rl_server *s);
/* Stops the probe and the workers, closes the socket (waiting for handlers
 * in progress) and frees s.  Accepts NULL. */
void rl_server_free(struct rl_server *s);

#endif
