/*
 * The ratelimiter's message handling: one rep socket LISTENING on
 * AI_PROXY_RATELIMITER_URL; the gateway dials it with req.
 *
 * THIN for now: limit_check always allows (the real token buckets, the
 * cost reservations and the Redis backend come with the rate-limiter
 * issue).  The status payload says "limits":"not enforced yet" so nobody
 * mistakes this for protection.
 */
#ifndef AIPROXY_RL_SERVER_H
#define AIPROXY_RL_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"

#define RL_DAEMON_NAME "ratelimiter"
/* Requests the rep socket holds in flight at once. */
#define RL_REP_CONTEXTS 64

struct rl_server;

/* Copies what it needs from c (c may be freed afterwards).  No socket yet:
 * tests drive rl_server_handle() directly.  Caller frees with
 * rl_server_free(). */
struct rl_server *rl_server_new(const struct cfg *c);
/* Opens the rep socket listening on url. */
int rl_server_listen(struct rl_server *s, const char *url);
/*
 * Answers one request (buf, len) with a reply in *ret_buf (caller frees
 * with free()).  Anything undecodable or of a type the ratelimiter does not
 * serve is answered with an ack ok=false code "bad_request", counted and
 * logged.  Fails (-ENOMEM, -EINVAL) only when no reply can be encoded.
 */
int rl_server_handle(struct rl_server *s, const char *buf, size_t len,
    char **ret_buf, size_t *ret_len);
/* Requests handled so far and how many of them were bad. */
uint64_t rl_server_requests(const struct rl_server *s);
uint64_t rl_server_bad_requests(const struct rl_server *s);
/* Closes the socket (waiting for handlers in progress) and frees s.
 * Accepts NULL. */
void rl_server_free(struct rl_server *s);

#endif
