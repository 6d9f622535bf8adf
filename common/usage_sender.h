/*
 * usage_sender: the provider-worker's side of "nothing lost, nothing
 * twice" for usage events.
 *
 *   usage_sender_emit()  journals the event (durable, group commit), then
 *                        publishes it on the pub socket (topic "usage ")
 *                        to the accountant's sub: the fast, lossy path.
 *   a sync thread        every sync_interval_ms, and right after the req
 *                        socket (re)connects, sends usage_sync {journal,
 *                        last durable seq} to the accountant (req/rep),
 *                        trims the journal up to the committed_seq it
 *                        answers, and re-sends the events after it in
 *                        usage_batch messages (acked after the commit):
 *                        the slow, exact path.
 * The accountant inserts idempotently by event_id, so an event that takes
 * both paths is counted once.
 *
 * The journal lives in <state_dir>/journal/<worker_id>/.  Its events carry
 * worker_id = "<worker_id>:<journal epoch>" (usage_sender_stream()), so a
 * journal folder made anew never reuses the sequence numbers of an old
 * one.  An event whose journaling failed is still published, with seq 0
 * (best effort, outside catch-up).
 *
 * Billing fails closed: while usage_sender_ready() is false (a journal
 * write or sync failed, or the journal is full because the accountant has
 * committed nothing for too long), the worker must refuse billable
 * requests (503 journal_unavailable).  The sync thread re-checks the
 * journal every interval and clears the state when it is writable again.
 */
#ifndef AIPROXY_USAGE_SENDER_H
#define AIPROXY_USAGE_SENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

#define USAGE_SENDER_SYNC_MS_DEFAULT 1000
#define USAGE_SENDER_BATCH_DEFAULT   500
#define USAGE_SENDER_CALL_MS_DEFAULT 5000

struct usage_sender_cfg {
	const char *state_dir;      /* AI_PROXY_STATE_DIR */
	const char *worker_id;      /* AI_PROXY_WORKER_ID, 1..32 chars */
	const char *usage_url;      /* AI_PROXY_USAGE_URL: pub, dials */
	const char *accountant_url; /* AI_PROXY_ACCOUNTANT_URL: req, dials */
	int sync_interval_ms;       /* 0: USAGE_SENDER_SYNC_MS_DEFAULT */
	int batch_max;              /* 0: default; 1..PROTO_USAGE_BATCH_MAX */
	int call_timeout_ms;        /* 0: USAGE_SENDER_CALL_MS_DEFAULT */
	uint64_t journal_max_bytes; /* 0: JOURNAL_MAX_BYTES_DEFAULT */
	size_t segment_bytes;       /* 0: JOURNAL_SEGMENT_BYTES_DEFAULT */
};

struct usage_sender_stats {
	int64_t last_seq;      /* highest seq journaled (durable) */
	int64_t committed_seq; /* as last answered by the accountant */
	int64_t first_seq;     /* oldest seq still in the journal */
	uint64_t journal_bytes;
	uint64_t emitted;        /* events journaled */
	uint64_t journal_errors; /* emits whose journaling failed */
	uint64_t published;      /* live publishes handed to nng */
	uint64_t resent;         /* events re-sent in batches */
	uint64_t syncs;          /* usage_sync answered */
	uint64_t sync_failures;  /* no answer (timeout, no accountant) */
	bool ready;
};

struct usage_sender;

/*
 * Opens (or recovers) the journal, dials both sockets (nng keeps retrying
 * in the background: the accountant need not be up) and starts the sync
 * thread.  Caller frees with usage_sender_close().
 */
int usage_sender_open(
    const struct usage_sender_cfg *cfg, struct usage_sender **ret);
/*
 * Records one usage event: copies *ev, fills event_id when empty, sets
 * worker_id to the stream and seq to the next journal number, makes it
 * durable, then publishes it.  Safe from any thread; blocks for the group
 * commit (one fdatasync, shared).  0 once durable; -EIO (write or sync
 * failed), -ENOSPC (journal full) or -EINVAL (ev does not encode): the
 * event was published with seq 0 only, and the sender is not ready.
 */
int usage_sender_emit(struct usage_sender *s, const struct msg_usage_event *ev);
/*
 * The same for n events at once: all written, then one fdatasync for them
 * all, then published.  An event that does not encode is logged and left
 * out; a write or sync failure makes every event of the call go out with
 * seq 0 only and the sender not ready.  0, or the first error.
 */
int usage_sender_emit_many(struct usage_sender *s,
    const struct msg_usage_event *const evs[], size_t n);
/* Whether billable requests may be accepted (see above). */
bool usage_sender_ready(struct usage_sender *s);
/* "<worker_id>:<epoch>", borrowed from s. */
const char *usage_sender_stream(const struct usage_sender *s);
void usage_sender_stats(struct usage_sender *s, struct usage_sender_stats *ret);
/* Asks the sync thread to run a round now. */
void usage_sender_kick(struct usage_sender *s);
/* Stops the thread, closes the sockets and the journal (whatever is not
 * committed yet stays journaled for the next start).  Accepts NULL. */
void usage_sender_close(struct usage_sender *s);

#endif
