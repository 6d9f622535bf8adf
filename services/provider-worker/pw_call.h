/*
 * One chat call: the request as the gateway sent it, the upstream transfer
 * (owned by the curl thread) and the result the reply is built from.
 *
 * Lifetime: reference counted.  The engine holds a reference from submit
 * until the call is finished; each stream chunk waiting in a push queue
 * and each queued unpause holds one more.  Everything but the struct itself
 * is released when the call finishes; the struct goes with the last
 * reference.
 */
#ifndef PW_CALL_H
#define PW_CALL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <curl/curl.h>

#include "buf.h"
#include "models.h"
#include "nngx.h"
#include "proto.h"
#include "pw_map.h"
#include "pw_usage.h"

struct pw_push;
struct pw_engine;

enum pw_cmd_kind { PW_CMD_NEW, PW_CMD_UNPAUSE };

struct pw_cmd {
	STAILQ_ENTRY(pw_cmd) link;
	enum pw_cmd_kind kind;
	struct pw_call *call;
};

struct pw_call {
	atomic_int refs;
	struct pw_cmd new_cmd;     /* hands the call to the curl thread */
	struct pw_cmd unpause_cmd; /* resumes a paused stream (curl thread) */
	TAILQ_ENTRY(pw_call) link; /* the engine's active list */

	/* The request.  req.payload is borrowed from the rep context's
	 * buffer, valid until the reply is sent (after the transfer). */
	struct nngx_rep_ctx *ctx; /* NULL in tests that need no reply */
	struct msg_chat_req req;
	enum pw_prov prov;
	const struct model *model; /* borrowed from the model table */
	int64_t t_recv_us;         /* the chat_req arrived */
	int64_t t_upstream_us;     /* the transfer started */

	/* Attempts: retries and failover (curl thread). */
	int target;        /* PW_TARGET() of the current or last attempt */
	bool probe;        /* that attempt is its breaker's probe */
	bool attempt_live; /* admitted: pw_health_done() is owed */
	int attempts;      /* upstream attempts started */
	int tries[2];      /* per slot (primary, fallback) */
	int next_target;   /* the target of the attempt waiting */
	int64_t due_ms;    /* monotonic: when the waiting attempt starts */
	bool fallback;     /* the last attempt went to a fallback */
	/* Cross-provider failover (claude -> openai), prepared on first
	 * use: the translated body (owned) and the mapped model. */
	char *xbody;
	size_t xbody_len;
	const struct model *xmodel;
	bool xfailed; /* cannot be translated: no cross failover */
	int xtries;
	bool client_started; /* a byte went to the client: no retry then */

	/* The transfer (curl thread only). */
	struct pw_engine *engine;
	CURL *easy;
	bool in_multi; /* added to the multi handle, in the active list */
	struct curl_slist *hdrs;
	char errbuf[CURL_ERROR_SIZE];
	long http_status;
	bool got_bytes;
	bool mode_decided;
	bool streaming; /* 200 text/event-stream: bytes go out as chunks */
	char content_type[128];
	char retry_after[64];
	char retry_after_ms[64];
	char upstream_request_id[PROTO_ID_MAX + 1];
	struct buf body; /* a non-streamed body or an error body (bounded) */
	size_t stream_bytes;
	bool su_init;
	struct pw_stream_usage su;
	enum pw_fail fail; /* set when the engine ends the transfer itself */

	/* Stream chunks. */
	struct pw_push *push;        /* borrowed from the push cache */
	int64_t chunks;              /* chunks sent (the next seq) */
	atomic_size_t pending_bytes; /* queued, not yet taken by the socket */
	atomic_bool paused;
	atomic_bool finished;

	/* The result (set before the done callback). */
	struct pw_outcome out;
	char error_message[PROTO_MSG_TEXT_MAX + 1];
	const char *status_word; /* "ok" | "error" | "aborted" */
	struct pw_usage usage;
	int64_t cost_micro_usd;
	int64_t upstream_ms;
	int64_t retry_after_ms_val;
};

/* A new call with one reference.  NULL when out of memory. */
struct pw_call *pw_call_new(void);
void pw_call_ref(struct pw_call *c);
/* Drops a reference; frees the call with the last one. */
void pw_call_unref(struct pw_call *c);
/* Releases the transfer's resources (curl thread, once finished). */
void pw_call_release(struct pw_call *c);

#endif
