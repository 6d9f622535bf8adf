/*
 * The accountant's sockets:
 *   rep LISTENING on AI_PROXY_ACCOUNTANT_URL:
 *       ping -> pong, status_req -> status_resp (any peer);
 *       analytics_req -> analytics_resp (gateway): 200 with the document
 *           of acct_analytics.h, 400 for a bad request, 503 while the
 *           database is unavailable;
 *       cost_today_req -> cost_today_resp (ratelimiter): the settled
 *           cost of a subject on the current UTC day;
 *       usage_sync -> usage_ack (workers): the committed seq of a journal;
 *       usage_batch -> usage_ack (workers): answered once the events are
 *           committed ("ok"), or at once "busy" (queue full) or
 *           "unavailable" (database down);
 *   sub LISTENING on AI_PROXY_USAGE_URL (workers dial with pub), topic
 *       PROTO_TOPIC_USAGE: every usage_event goes to the ledger's queue
 *       (dropped when it is full: the journals hold it).
 *
 * Database queries never run on an nng thread: requests that need one go
 * to a query thread; batches are answered by the ledger's writer.
 */
#ifndef AIPROXY_ACCT_SERVER_H
#define AIPROXY_ACCT_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "acct_ledger.h"

#define ACCT_DAEMON_NAME "accountant"
/* Requests the rep socket holds in flight at once. */
#define ACCT_REP_CONTEXTS 32
/* Requests waiting for the query thread. */
#define ACCT_JOBS_MAX 64

struct acct_server_opts {
	const char *database_url; /* DATABASE_URL, may be NULL */
	const char *state_dir;    /* AI_PROXY_STATE_DIR */
	size_t queue_max;         /* 0: ACCT_QUEUE_MAX */
	size_t batch_max;         /* 0: ACCT_BATCH_MAX */
};

struct acct_server;

/*
 * Opens the ledger (migrating the database) and starts the query thread.
 * No socket yet: tests drive acct_server_request() and acct_server_usage()
 * directly.  On failure err says why.  Caller frees with
 * acct_server_free().
 */
int acct_server_new(const struct acct_server_opts *o, struct acct_server **ret,
    char *err, size_t errlen);
/* Opens the rep socket on rep_url and the sub socket on usage_url, both
 * listening. */
int acct_server_listen(
    struct acct_server *s, const char *rep_url, const char *usage_url);

/* Receives the encoded reply (buf borrowed for the call).  buf NULL: no
 * reply can be made (the requester times out). */
typedef void (*acct_reply_fn)(void *arg, const char *buf, size_t len);
/*
 * Handles one request; fn is called exactly once, now or later from
 * another thread.  Anything undecodable or not served is answered with an
 * ack ok=false code "bad_request", counted and logged.
 */
void acct_server_request(struct acct_server *s, const char *buf, size_t len,
    acct_reply_fn fn, void *arg);
/* One body received on the usage socket (topic included): decoded and
 * queued.  Returns 0, the decode error, or the queue's (all counted). */
int acct_server_usage(struct acct_server *s, const char *body, size_t len);

/* Counters. */
uint64_t acct_server_events(const struct acct_server *s);
uint64_t acct_server_events_rejected(const struct acct_server *s);
uint64_t acct_server_bad_requests(const struct acct_server *s);
struct acct_ledger *acct_server_ledger(struct acct_server *s);

/* Stops the sockets, the query thread and the ledger (one last commit of
 * what is queued), then frees s.  Accepts NULL. */
void acct_server_free(struct acct_server *s);

#endif
