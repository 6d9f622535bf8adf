/*
 * The accountant's sockets:
 *   rep LISTENING on AI_PROXY_ACCOUNTANT_URL (the gateway dials with req):
 *       ping -> pong, status_req -> status_resp, analytics_req ->
 *       analytics_resp (501 for now);
 *   sub LISTENING on AI_PROXY_USAGE_URL (workers dial with pub), topic
 *       PROTO_TOPIC_USAGE: every usage_event goes to the ledger.
 *
 * THIN for now: the ledger is a JSON-lines file (acct_ledger.h) and there
 * are no analytics yet; both come with the accountant issue.
 */
#ifndef AIPROXY_ACCT_SERVER_H
#define AIPROXY_ACCT_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"

#define ACCT_DAEMON_NAME "accountant"
/* Requests the rep socket holds in flight at once. */
#define ACCT_REP_CONTEXTS 16

struct acct_server;

/* Opens the ledger in c->state_dir.  No socket yet: tests drive
 * acct_server_handle() and acct_server_usage() directly.  Caller frees with
 * acct_server_free(). */
int acct_server_new(const struct cfg *c, struct acct_server **ret);
/* Opens the rep socket on rep_url and the sub socket on usage_url, both
 * listening. */
int acct_server_listen(
    struct acct_server *s, const char *rep_url, const char *usage_url);
/*
 * Answers one request with a reply in *ret_buf (caller frees with free()).
 * Anything undecodable or not served is answered with an ack ok=false code
 * "bad_request", counted and logged.  Fails only when no reply can be
 * encoded.
 */
int acct_server_handle(struct acct_server *s, const char *buf, size_t len,
    char **ret_buf, size_t *ret_len);
/* One body received on the usage socket (topic included): decoded,
 * counted, logged at debug and appended to the ledger.  Returns 0 or the
 * decode / ledger error (already counted and logged). */
int acct_server_usage(struct acct_server *s, const char *body, size_t len);
/* Counters. */
uint64_t acct_server_events(const struct acct_server *s);
uint64_t acct_server_events_rejected(const struct acct_server *s);
uint64_t acct_server_bad_requests(const struct acct_server *s);
/* Stops both sockets (waiting for callbacks in progress), closes the
 * ledger and frees s.  Accepts NULL. */
void acct_server_free(struct acct_server *s);

#endif
