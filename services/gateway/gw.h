/*
 * The gateway daemon: libmicrohttpd in front, nng behind.
 *
 * Threads: MHD's pool (2) runs the access handler, the stream reader and
 * the completion callback; nng's threads run the worker-call callbacks,
 * the stream-chunk receivers and the rep server; one sweeper thread ends
 * streams whose chunks never come.  No thread ever waits for a worker: an
 * HTTP request waiting for one is suspended and resumed from the nng
 * callback that completes it.
 *
 * Lifetime of a request (struct gw_req): created by the first access
 * handler call, reference counted: MHD holds one reference until the
 * completion callback, an outstanding worker call one, a queued stream
 * response one.  r->mtx guards everything that changes after dispatch.
 */
#ifndef AIPROXY_GW_H
#define AIPROXY_GW_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <microhttpd.h>
#include <nng/nng.h>

#include "buf.h"
#include "cfg.h"
#include "gw_cors.h"
#include "gw_route.h"
#include "gw_validate.h"
#include "ids.h"
#include "models.h"
#include "proto.h"

#define GW_STREAM_MAX_BUFFERED (8u << 20)  /* per stream, then abort */
#define GW_RESP_MAX            (34u << 20) /* a response body we build */
#define GW_PULL_AIOS           4
#define GW_STAB_SIZE           4096 /* stream table buckets */
#define GW_HEALTH_TIMEOUT_MS   500
#define GW_STREAM_GRACE_MS     5000 /* chat_resp seen, chunks missing */
#define GW_NNG_MAX_MSG         (32u << 20)
#define GW_CODE_LEN            72 /* >= PROTO_NAME_MAX + 1 */
#define GW_THREAT_INFLIGHT_MAX 256

struct gw_req;
struct limit_call;

/* One chunk of a stream, kept in seq order. */
struct gw_chunk {
	struct gw_chunk *next;
	int64_t seq;
	size_t len, off;
	char data[];
};

enum gw_req_state {
	GW_RS_READING, /* receiving the body */
	GW_RS_WAITING, /* suspended: a worker call or health probe runs */
	GW_RS_READY,   /* a result is ready: queue it on the next call */
	GW_RS_QUEUED,  /* a response was queued (buffer or stream) */
};

struct gw_req {
	struct gw *gw;
	struct MHD_Connection *conn;
	pthread_mutex_t mtx;
	atomic_int refs;
	enum gw_req_state state;
	bool suspended; /* we called MHD_suspend_connection */
	bool closed;    /* MHD completed the request: never resume again */

	/* request */
	const struct gw_route *route;
	unsigned method;
	char path[256];
	bool path_ok; /* the URL fit in path */
	bool begun;   /* routed (req_begin ran) */
	char param[64];
	char request_id[ID_MAX + 1];
	char ip[64];
	char session[ID_MAX + 1];
	char beta[513];
	char origin[520];
	enum gw_cors_verdict cors;
	int64_t start_us;
	struct buf body;
	bool too_large;
	size_t discarded;

	/* result */
	int status;
	const char *ctype;
	struct buf out;
	char allow[64];
	int64_t retry_after_ms;
	bool no_retry;          /* x-should-retry: false */
	bool fallback;          /* a fallback upstream served the call */
	bool www_auth;          /* WWW-Authenticate: Bearer */
	char code[GW_CODE_LEN]; /* error code, for the access log */
	uint64_t bytes_out;     /* body bytes sent */

	/* chat */
	const char *provider; /* static strings */
	char model[MODEL_ID_MAX + 1];
	int64_t cost_micro_usd;
	bool is_stream;
	bool in_stab; /* in the stream table */
	struct gw_req *hnext;

	/* stream */
	bool stream_started; /* first chunk (or a 200 reply) arrived */
	bool resp_done;      /* chat_resp arrived */
	bool aborted;        /* end the stream now, with tail */
	bool cancel_sent;
	int64_t resp_done_us;
	int64_t chunks_expected;
	int64_t next_seq;
	size_t buffered;
	struct gw_chunk *chunks; /* sorted by seq */
	struct buf tail;         /* written after the last chunk */
	size_t tail_off;
	bool tail_built;
	const char *abort_reason; /* why the gateway ended the stream */
	bool finished;            /* END_OF_STREAM returned */

	char *call_buf; /* the encoded chat_req until it is sent */
	size_t call_len;

	/* limits (gw_limit.c) */
	char subj_type[16]; /* "user" or "session" */
	char subj_id[PROTO_SUBJECT_MAX +
		     1];  /* JWT sub, session id, "anon:<ip>" */
	bool token_bad;   /* a bearer token failed verification */
	bool session_bad; /* X-Session-ID present but malformed */
	char reservation[PROTO_ID_MAX + 1]; /* the ratelimiter's reservation */
	int64_t reserved_micro_usd;
	bool rl_hdrs; /* X-RateLimit-* known */
	int64_t rl_limit, rl_remaining, rl_reset;

	/* health probes */
	int probes_left;
	struct gw_probe {
		int64_t start_us;
		int64_t ms;
		int rv; /* 0 or -errno */
		/* The ratelimiter's status_resp: state "up"|"degraded",
		 * its backend ("redis"|"memory") and Redis ("up"|"down"|
		 * "disabled"); "" when unknown. */
		char state[PROTO_ENUM_MAX + 1];
		char backend[16];
		char redis[16];
	} probes[3];

	/* the live list (shutdown) */
	struct gw_req *prev, *next;
};

struct gw {
	const struct cfg *cfg; /* borrowed */
	struct model_table *models;
	/* Per model (models_index): the model a non-streamed call of it may
	 * fail over to under AI_PROXY_FALLBACK_MODEL_MAP, or NULL; NULL when
	 * the map is empty.  Built at start. */
	const struct model **fallback;
	struct gw_cors *cors;
	struct gw_vcfg vcfg;
	struct MHD_Daemon *mhd;
	uint16_t port;

	nng_socket worker_sock; /* req, listens on worker_url */
	nng_socket pull_sock;   /* pull, listens on stream_url */
	nng_socket pub_sock;    /* pub, listens on control_url */
	nng_socket rl_sock;     /* req, dials ratelimiter_url */
	nng_socket acct_sock;   /* req, dials accountant_url */
	bool worker_open, pull_open, pub_open, rl_open, acct_open;
	struct gw_pull {
		struct gw *gw;
		nng_aio *aio;
	} pulls[GW_PULL_AIOS];
	struct nngx_rep *rep; /* rep, listens on gateway_url */
	atomic_int worker_pipes;
	atomic_int calls;        /* outstanding nng calls */
	atomic_int threat_calls; /* threat_reports in flight (bounded) */
	atomic_llong n_threat_dropped;

	/* Settles gathered into one limit_settle_batch (gw_limit.c): sent
	 * when the batch before is acknowledged, or at
	 * PROTO_SETTLE_BATCH_MAX; one at a time once settle_direct (shutting
	 * down). */
	pthread_mutex_t settle_mtx;
	struct buf settle_buf; /* encoded limit_settle messages */
	int settle_n;
	bool settle_inflight, settle_direct;
	atomic_llong n_settles, n_settle_batches;

	/* Limit checks gathered into one limit_check_batch (gw_limit.c):
	 * with none in flight a check goes at once; otherwise it waits for
	 * the answer in flight and leaves with the others (or at
	 * PROTO_CHECK_BATCH_MAX). */
	pthread_mutex_t check_mtx;
	struct buf check_buf; /* encoded limit_check messages */
	struct limit_call *check_q[PROTO_CHECK_BATCH_MAX];
	int check_n;
	int check_inflight;
	atomic_bool check_single; /* the ratelimiter refused a batch */
	atomic_llong n_checks, n_check_batches;

	pthread_mutex_t mtx; /* the live list and the stream table */
	pthread_cond_t cond; /* signalled when a request ends */
	struct gw_req *live;
	size_t nlive;
	struct gw_req *stab[GW_STAB_SIZE];
	bool stopping;

	pthread_t sweeper;
	bool sweeper_started;
	bool sweeper_stop;
	pthread_cond_t sweeper_cond;

	atomic_llong n_requests;
	atomic_llong n_chat;
	atomic_llong n_streams;

	struct gw_providers *providers; /* gw_providers.c */
};

/* ---- gw.c: life cycle ---- */

/* Loads the model table, opens the sockets, starts MHD.  cfg must
 * outlive the gateway.  Caller frees with gw_free() after gw_stop(). */
int gw_start(const struct cfg *cfg, struct gw **ret);
/* Quiesces MHD, lets in-flight requests finish (up to drain_ms), fails
 * the rest, stops everything.  Idempotent. */
void gw_stop(struct gw *gw, int drain_ms);
void gw_free(struct gw *gw);

/* ---- gw_http.c: MHD glue ---- */

int gw_http_start(struct gw *gw);
enum MHD_Result gw_http_access(void *cls, struct MHD_Connection *conn,
    const char *url, const char *method, const char *version,
    const char *upload_data, size_t *upload_data_size, void **con_cls);
void gw_http_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
    enum MHD_RequestTerminationCode toe);
void gw_req_ref(struct gw_req *r);
void gw_req_unref(struct gw_req *r);
/* Under r->mtx: resumes the connection when we suspended it. */
void gw_req_wake_locked(struct gw_req *r);
/* Suspends r (an MHD thread, in the access handler) and marks it
 * waiting; the caller then starts the operation whose completion sets a
 * result (READY) and wakes it. */
void gw_req_wait(struct gw_req *r);
/* Under r->mtx: sets an error result in the route's shape (READY). */
void gw_req_set_error_locked(
    struct gw_req *r, int status, const char *code, const char *message);
int64_t gw_req_elapsed_ms(const struct gw_req *r);
/* MHD thread, access handler: answers an error in the route's shape. */
enum MHD_Result gw_req_error(struct gw_req *r, int status, const char *code,
    const char *message, const char *param);
/* MHD thread, access handler: answers r->out as JSON. */
enum MHD_Result gw_req_json(struct gw_req *r, int status);

/* ---- gw_nng.c: sockets, calls, chunks, control ---- */

int gw_nng_start(struct gw *gw);
/* Closes the sockets that complete calls (worker, rl, acct) and the pull
 * socket; waits for outstanding callbacks. */
void gw_nng_close_calls(struct gw *gw);
void gw_nng_stop(struct gw *gw);

/* Completion of an asynchronous request: err 0 and the reply (borrowed
 * for the call), or a negative errno (-ECONNRESET: the peer was lost;
 * -ETIMEDOUT; -EBADF: closed).  sent tells whether the request left. */
typedef void (*gw_call_fn)(
    void *arg, int err, bool sent, const char *buf, size_t len);
/* Sends buf (copied) on a req socket through a new context; fn runs once
 * on an nng thread.  0 or -errno (then fn never runs). */
/* gw_limit.c: the subject from the credentials (at req_begin); the
 * limit check before a worker call: on allow, fn(arg) runs the call, on
 * deny the request is answered (429/403) and fn is not run; settle after
 * the call (actual cost, 0 releases). */
void gw_limit_subject(struct gw_req *r, const char *bearer);
void gw_limit_check(struct gw_req *r, const char *text, size_t text_len,
    int64_t max_tokens, const struct model *m, void (*fn)(struct gw_req *));
void gw_limit_settle(struct gw_req *r, int64_t actual_micro_usd);
/* The cost reserved for a call of model m: its worst case, or that of fb,
 * the model it may fail over to (non-streamed calls only), the dearer. */
int64_t gw_limit_worst_case(const struct model *m, const struct model *fb,
    bool stream, int64_t input_tokens, int64_t max_tokens);
/* Fills gw->fallback from AI_PROXY_FALLBACK_MODEL_MAP.  0 or -ENOMEM. */
int gw_limit_fallbacks(struct gw *gw);
/* The settle batcher: init at start; flush sends what is gathered and
 * makes every later settle go at once (before the ratelimiter socket
 * closes); fini frees it. */
void gw_limit_init(struct gw *gw);
void gw_limit_flush(struct gw *gw);
void gw_limit_fini(struct gw *gw);
/* A threat signal for a request the gateway refuses itself (reason
 * "invalid_request", "auth_failure"; points from subject.h): one
 * threat_report for the client IP, and the request's subject too when
 * with_subject.  Fire and forget: never waits, never fails the request;
 * dropped (counted) past GW_THREAT_INFLIGHT_MAX reports in flight. */
void gw_limit_threat(
    struct gw_req *r, const char *reason, int points, bool with_subject);
/* gw_usage.c: the caller's own quota and analytics. */
enum MHD_Result gw_usage_quota(struct gw_req *r);
enum MHD_Result gw_usage_analytics(struct gw_req *r, bool admin);
/* gw_admin.c: the ratelimiter's blocks, listed and lifted (admin). */
enum MHD_Result gw_admin_blocked(struct gw_req *r);
enum MHD_Result gw_admin_unblock(struct gw_req *r);

int gw_call(struct gw *gw, nng_socket s, const void *buf, size_t len,
    int timeout_ms, gw_call_fn fn, void *arg);
/* Publishes an encoded control message on the pub socket ("ctl "). */
int gw_publish(struct gw *gw, const char *buf, size_t len);
/* Sends msg_cancel for a request (best effort). */
void gw_publish_cancel(struct gw *gw, const char *request_id);

/* ---- gw_chat.c: one chat call ---- */

/* Full body received on a chat route: validate, send.  Queues or
 * suspends; returns the MHD result. */
enum MHD_Result gw_chat_dispatch(struct gw_req *r);
/* A stream chunk arrived (pull thread). */
void gw_chat_chunk(struct gw *gw, const char *request_id, int64_t seq,
    const char *data, size_t len);
/* The stream table. */
void gw_stab_remove(struct gw *gw, struct gw_req *r);
/* MHD content reader of a stream response. */
ssize_t gw_stream_read(void *cls, uint64_t pos, char *buf, size_t max);
void gw_stream_free(void *cls);
/* Sweeper: ends streams whose chunks never came. */
void gw_chat_sweep(struct gw *gw);

/* ---- gw_providers.c: the workers' breakers and stats ---- */

int gw_providers_init(struct gw *gw);
void gw_providers_free(struct gw *gw);
/* Pull thread: a worker_stats / breaker_state message (encoded). */
void gw_providers_on_stats(struct gw *gw, const char *buf, size_t len);
/* Relays a breaker_state to every worker (control pub socket); an
 * "open" is kept and re-published to a worker that reports that breaker
 * closed (it joined after the trip) until it ends, is closed by its
 * worker, or reset. */
void gw_providers_on_breaker(struct gw *gw, const char *buf, size_t len);
/* The admin reset of provider: forget its trips. */
void gw_providers_on_reset(struct gw *gw, const char *provider);
/* GET /api/v1/ai-proxy/providers/status */
enum MHD_Result gw_providers_status(struct gw_req *r);

/* ---- gw_health.c ---- */

enum MHD_Result gw_health_detailed(struct gw_req *r);

#endif
