#ifndef AIPROXY_PROTO_H
#define AIPROXY_PROTO_H

/*
 * proto: the messages the aiproxy daemons exchange over nng, and their
 * codec.  This header is the protocol reference.
 *
 * Topology (same table as README.md):
 *
 *   socket                    listens            dials              pattern
 *   AI_PROXY_WORKER_URL       gateway (req)      provider-workers   req/rep
 *   AI_PROXY_STREAM_URL       gateway (pull)     provider-workers   pipeline
 *                             (stream_chunk; breaker_state, worker_stats)
 *   AI_PROXY_CONTROL_URL      gateway (pub)      provider-workers   pub/sub
 *                             (cancel, breaker_reset, cache_clear,
 *                             breaker_state relayed)
 * "ctl " AI_PROXY_GATEWAY_URL      gateway (rep)      tools (req) req/rep
 *   AI_PROXY_RATELIMITER_URL  ratelimiter (rep)  gateway (req)      req/rep
 *   AI_PROXY_ACCOUNTANT_URL   accountant (rep)   gateway (req)      req/rep
 *   AI_PROXY_USAGE_URL        accountant (sub)   provider-workers   pub/sub
 * "usage "
 *   AI_PROXY_ACCOUNTANT_URL   accountant (rep)   provider-workers   req/rep
 *                             (usage_sync/usage_batch), ratelimiter
 *                             (cost_today_req)
 *
 * Wire format.  A message is one line of compact JSON (the header) ended by
 * '\n', followed by exactly "payload_len" raw bytes for the messages that
 * carry a payload (chat_req, chat_resp, stream_chunk, status_resp,
 * analytics_resp, usage_batch, block_list_resp, limit_settle_batch,
 * limit_check_batch, limit_verdict_batch); the others
 * end right after the '\n'. The header always holds "v" (PROTO_VERSION) and
 * "type" (msg_type_str()), then every field of the message's struct under the
 * field's own name, then "payload_len" when the message carries a payload.
 * A header line is at most PROTO_HEADER_MAX bytes.
 *
 * Decoding is strict; the error rule is:
 *   -EPROTO           the bytes are not a well-formed message of that type:
 *                     no '\n', header too long, not a JSON object, invalid
 *                     JSON or UTF-8, duplicate key, unknown key, missing key,
 *                     a value of the wrong JSON type (1.0 is not an integer),
 *                     "type" not the decoder's type, payload shorter or
 *                     longer than payload_len, bytes after the message;
 *   -EPROTONOSUPPORT  "v" is an integer other than PROTO_VERSION;
 *   -ERANGE           well-formed, but a value is not allowed: an integer
 *                     out of its range, a string too long for its field,
 *                     a string outside its alphabet or enumeration, an
 *                     empty string where one is required, or fields that
 *                     contradict each other (e.g. stream without
 *                     stream_url).
 * "v" is checked first; after it, when a message has both -EPROTO and
 * -ERANGE defects, -EPROTO wins.
 *
 * Encoding validates the struct with the same rules and refuses an invalid
 * one with -EINVAL (-ENOMEM when out of memory).
 *
 * Strings are copied into the struct's fixed arrays, NUL-terminated.
 * Identifiers (request_id, event_id, reservation_id, upstream_request_id,
 * codes) use only [A-Za-z0-9._:-].  Names, subjects, addresses and URLs
 * must not hold control characters; free text (error messages) may.
 * A struct's "payload" is BORROWED: after decoding it points into the
 * decoded buffer (valid while that buffer lives, not NUL-terminated, never
 * NULL, even when payload_len is 0).  When encoding, payload may be NULL
 * only if payload_len is 0.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION      1
#define PROTO_ID_MAX       64  /* request, event, reservation ids */
#define PROTO_SUBJECT_MAX  128 /* subject ids */
#define PROTO_NAME_MAX     64  /* provider, model, daemon, codes */
#define PROTO_IP_MAX       64
#define PROTO_URL_MAX      256
#define PROTO_MSG_TEXT_MAX 512 /* error messages */
#define PROTO_ENUM_MAX     16  /* enumerated strings ("chat_completions") */
#define PROTO_PAYLOAD_MAX  (16 * 1024 * 1024) /* payload_len 0..this */
#define PROTO_HEADER_MAX   8192               /* header line, without '\n' */

/* Value ranges the codec enforces. */
#define PROTO_TOKENS_MAX  1000000000LL    /* token counts, 0..this */
#define PROTO_MONEY_MAX   1000000000000LL /* micro-USD, 0..this */
#define PROTO_MS_MAX      86400000LL      /* latencies, deadlines (ms) */
#define PROTO_SECONDS_MAX 604800LL        /* reset/retry-after (s) */
#define PROTO_THREAT_MAX  1000
#define PROTO_DAYS_MAX    90
#define PROTO_TRIES_MAX   100
/* HTTP status fields: 0 (none) or 100..599; a reply's own status 100..599 */

/* Pub/sub bodies begin with their topic. */
#define PROTO_TOPIC_USAGE "usage "
#define PROTO_TOPIC_CTL   "ctl "

/* One line per message: sender -> receiver, pattern, reply. */
enum msg_type {
	MSG_NONE = 0,
	/* any peer -> any daemon, req/rep; reply MSG_PONG */
	MSG_PING,
	MSG_PONG,
	/* gateway -> ratelimiter, req/rep */
	MSG_LIMIT_CHECK, /* reply MSG_LIMIT_VERDICT */
	MSG_LIMIT_VERDICT,
	MSG_LIMIT_SETTLE, /* settle or release a reservation; reply MSG_ACK */
	MSG_QUOTA_REQ,    /* reply MSG_QUOTA_RESP */
	MSG_QUOTA_RESP,
	/* gateway -> provider-worker, req/rep */
	MSG_CHAT_REQ, /* reply MSG_CHAT_RESP (for a stream: after the last
			 chunk) */
	MSG_CHAT_RESP,
	/* provider-worker -> gateway, push/pull, no reply */
	MSG_STREAM_CHUNK,
	/* gateway -> provider-workers, pub/sub (topic "ctl "), no reply */
	MSG_CANCEL,
	MSG_BREAKER_RESET,
	MSG_CACHE_CLEAR,
	/* provider-worker -> accountant, pub/sub (topic "usage "), no reply */
	MSG_USAGE_EVENT,
	/* gateway -> any daemon, req/rep; reply MSG_STATUS_RESP */
	MSG_STATUS_REQ,
	MSG_STATUS_RESP,
	/* gateway -> accountant, req/rep; reply MSG_ANALYTICS_RESP */
	MSG_ANALYTICS_REQ,
	MSG_ANALYTICS_RESP,
	/* generic reply */
	MSG_ACK,
	/* provider-worker -> accountant, req/rep (journal catch-up); reply
	   MSG_USAGE_ACK */
	MSG_USAGE_SYNC,  /* what of my journal is in the database? */
	MSG_USAGE_BATCH, /* journal events after committed_seq, re-sent */
	MSG_USAGE_ACK,
	/* ratelimiter -> accountant, req/rep; reply MSG_COST_TODAY_RESP */
	MSG_COST_TODAY_REQ,
	MSG_COST_TODAY_RESP,
	/* gateway -> ratelimiter, req/rep: threat signals and blocks */
	MSG_THREAT_REPORT, /* reply MSG_ACK, code "ok" or "blocked" */
	MSG_BLOCK_LIST,    /* admin; reply MSG_BLOCK_LIST_RESP */
	MSG_BLOCK_LIST_RESP,
	MSG_UNBLOCK, /* admin; reply MSG_ACK, ok=false code "not_found" */
	/* gateway -> ratelimiter, req/rep: settles gathered for a few ms;
	   reply MSG_ACK */
	MSG_LIMIT_SETTLE_BATCH,
	/* provider-worker -> gateway, push/pull (AI_PROXY_STREAM_URL), no
	   reply; the gateway relays breaker_state unchanged to every
	   provider-worker on the control pub socket (topic "ctl ") */
	MSG_BREAKER_STATE, /* a worker's breaker changed state */
	MSG_WORKER_STATS,  /* once a second and on a change: breakers, load */
	/* gateway -> ratelimiter, req/rep: the checks that gathered while
	   one was in flight; reply MSG_LIMIT_VERDICT_BATCH (MSG_ACK
	   bad_request when the batch itself is refused) */
	MSG_LIMIT_CHECK_BATCH,
	MSG_LIMIT_VERDICT_BATCH,
	MSG_MAX
};

/*
 * The structs.  Every field is a header key of the same name.  "(ne)" marks
 * a string that must not be empty; other strings may be "".  request_id is
 * required (ne) in the messages of one client request (limit_check,
 * limit_verdict, limit_settle, chat_req, chat_resp, stream_chunk, cancel,
 * usage_event) and may be "" in control messages.  subject_type is
 * "user"|"session" (ne) where a subject is required, else ""|"user"|
 * "session".
 */

struct msg_ping {
	char request_id[PROTO_ID_MAX + 1];
	int64_t ts_us; /* sender's clock, >= 0 */
};

struct msg_pong {
	char request_id[PROTO_ID_MAX + 1];
	int64_t ts_us;                   /* echoed from the ping, >= 0 */
	char daemon[PROTO_NAME_MAX + 1]; /* (ne) */
	int64_t pid;                     /* 1..INT32_MAX */
};

struct msg_limit_check {
	char request_id[PROTO_ID_MAX + 1];
	char subject_type[PROTO_ENUM_MAX + 1];  /* "user"|"session" */
	char subject_id[PROTO_SUBJECT_MAX + 1]; /* (ne) */
	char ip[PROTO_IP_MAX + 1];              /* (ne) */
	char provider[PROTO_NAME_MAX + 1];
	char model[PROTO_NAME_MAX + 1];
	int64_t reserve_micro_usd; /* money */
	int64_t threat;            /* 0..PROTO_THREAT_MAX, score this adds */
};

struct msg_limit_verdict {
	char request_id[PROTO_ID_MAX + 1];
	bool allow;
	char code[PROTO_NAME_MAX + 1]; /* "ok" iff allow, else the reason */
	int64_t limit;                 /* 0..PROTO_MONEY_MAX */
	int64_t remaining;             /* 0..PROTO_MONEY_MAX */
	int64_t reset_s;               /* 0..PROTO_SECONDS_MAX */
	int64_t retry_after_s;         /* 0..PROTO_SECONDS_MAX */
	char reservation_id[PROTO_ID_MAX + 1];
	bool degraded;
};

struct msg_limit_settle {
	char request_id[PROTO_ID_MAX + 1];
	char subject_type[PROTO_ENUM_MAX + 1];  /* "user"|"session" */
	char subject_id[PROTO_SUBJECT_MAX + 1]; /* (ne) */
	char reservation_id[PROTO_ID_MAX + 1];  /* (ne) */
	int64_t reserved_micro_usd;             /* money */
	int64_t actual_micro_usd; /* money; 0 releases the reservation */
};

struct msg_quota_req {
	char request_id[PROTO_ID_MAX + 1];
	char subject_type[PROTO_ENUM_MAX + 1];  /* "user"|"session" */
	char subject_id[PROTO_SUBJECT_MAX + 1]; /* (ne) */
};

struct msg_quota_resp {
	char request_id[PROTO_ID_MAX + 1];
	int64_t minute_limit; /* counts 0..PROTO_TOKENS_MAX */
	int64_t minute_used;
	int64_t hour_limit;
	int64_t hour_used;
	int64_t cost_limit_micro_usd; /* money */
	int64_t cost_used_micro_usd;
	int64_t cost_reserved_micro_usd;
	bool degraded;
};

struct msg_chat_req {
	char request_id[PROTO_ID_MAX + 1];
	char provider[PROTO_NAME_MAX + 1]; /* "claude"|"openai" */
	char model[PROTO_NAME_MAX + 1];    /* (ne) */
	char api[PROTO_ENUM_MAX + 1];      /* "messages"|"chat_completions" */
	bool stream;
	char stream_url[PROTO_URL_MAX + 1];    /* non-empty iff stream */
	int64_t deadline_ms;                   /* 1..PROTO_MS_MAX */
	char subject_type[PROTO_ENUM_MAX + 1]; /* ""|"user"|"session" */
	char subject_id[PROTO_SUBJECT_MAX + 1];
	char ip[PROTO_IP_MAX + 1];
	char anthropic_beta[PROTO_MSG_TEXT_MAX + 1];
	const char *payload; /* upstream request body; borrowed */
	size_t payload_len;
};

struct msg_chat_resp {
	char request_id[PROTO_ID_MAX + 1];
	int64_t status;                      /* HTTP status, 100..599 */
	char error_code[PROTO_NAME_MAX + 1]; /* "" on success */
	char error_message[PROTO_MSG_TEXT_MAX + 1];
	int64_t upstream_status; /* 0 (no upstream answer) or 100..599 */
	char provider[PROTO_NAME_MAX + 1];
	char model[PROTO_NAME_MAX + 1];
	int64_t input_tokens; /* tokens 0..PROTO_TOKENS_MAX */
	int64_t output_tokens;
	int64_t cache_read_tokens;
	int64_t cache_write_tokens;
	int64_t cost_micro_usd; /* money */
	bool cached;
	int64_t upstream_ms;    /* 0..PROTO_MS_MAX */
	int64_t retry_after_ms; /* 0..PROTO_MS_MAX */
	int64_t chunks;         /* stream chunks sent, 0..PROTO_TOKENS_MAX */
	char upstream_request_id[PROTO_ID_MAX + 1];
	int64_t attempts; /* upstream attempts, 0..PROTO_TRIES_MAX (0: the
			     breaker refused the call) */
	bool fallback;    /* served by a fallback target (provider/model
			     name what served it) */
	const char
	    *payload; /* upstream or error body, may be empty; borrowed */
	size_t payload_len;
};

struct msg_stream_chunk {
	char request_id[PROTO_ID_MAX + 1];
	int64_t seq;         /* 0.. */
	const char *payload; /* raw bytes as from upstream; borrowed */
	size_t payload_len;
};

struct msg_cancel {
	char request_id[PROTO_ID_MAX + 1]; /* (ne) */
};

struct msg_breaker_reset {
	char request_id[PROTO_ID_MAX + 1];
	char provider[PROTO_NAME_MAX + 1]; /* (ne) */
};

struct msg_cache_clear {
	char request_id[PROTO_ID_MAX + 1];
	char provider[PROTO_NAME_MAX + 1]; /* "" = all */
};

struct msg_usage_event {
	char request_id[PROTO_ID_MAX + 1];
	char event_id[PROTO_ID_MAX + 1]; /* (ne), unique */
	int64_t seq;                     /* journal sequence, 0.. */
	char worker_id[PROTO_NAME_MAX + 1];
	int64_t ts_ms;                         /* 0.. */
	char subject_type[PROTO_ENUM_MAX + 1]; /* ""|"user"|"session" */
	char subject_id[PROTO_SUBJECT_MAX + 1];
	char ip[PROTO_IP_MAX + 1];
	char provider[PROTO_NAME_MAX + 1];
	char model[PROTO_NAME_MAX + 1];
	int64_t input_tokens; /* tokens */
	int64_t output_tokens;
	int64_t cache_read_tokens;
	int64_t cache_write_tokens;
	int64_t cost_micro_usd; /* money */
	bool cached;
	char status[PROTO_ENUM_MAX + 1]; /* "ok"|"error"|"aborted" */
	int64_t http_status;             /* 0 or 100..599 */
	int64_t upstream_ms;             /* 0..PROTO_MS_MAX */
	int64_t total_ms;                /* 0..PROTO_MS_MAX */
};

struct msg_status_req {
	char request_id[PROTO_ID_MAX + 1];
	char what[PROTO_NAME_MAX + 1]; /* (ne) e.g. "health", "providers" */
};

struct msg_status_resp {
	char request_id[PROTO_ID_MAX + 1];
	char daemon[PROTO_NAME_MAX + 1]; /* (ne) */
	char state[PROTO_ENUM_MAX + 1];  /* "up"|"degraded"|"down" */
	const char *payload; /* JSON document, may be empty; borrowed */
	size_t payload_len;
};

struct msg_analytics_req {
	char request_id[PROTO_ID_MAX + 1];
	char subject_type[PROTO_ENUM_MAX + 1]; /* "" = everyone (admin) */
	char subject_id[PROTO_SUBJECT_MAX + 1];
	int64_t days; /* 1..PROTO_DAYS_MAX */
	char provider[PROTO_NAME_MAX + 1];
};

struct msg_analytics_resp {
	char request_id[PROTO_ID_MAX + 1];
	int64_t status;      /* HTTP-like, 100..599 */
	const char *payload; /* JSON document; borrowed */
	size_t payload_len;
};

struct msg_ack {
	char request_id[PROTO_ID_MAX + 1];
	bool ok;
	char code[PROTO_NAME_MAX + 1];
	char message[PROTO_MSG_TEXT_MAX + 1];
};

/*
 * Journal catch-up (see common/usage_sender.h).  worker_id names one
 * journal ("<AI_PROXY_WORKER_ID>:<journal epoch>"), the same string as
 * the worker_id of the usage events it holds.  committed_seq is the
 * highest S such that events 1..S of that journal are all in the
 * database.  code: "ok"; "busy" (queue full, try later); "unavailable"
 * (database down; committed_seq is then the last known value, maybe 0).
 */
#define PROTO_USAGE_BATCH_MAX 1000 /* events in one usage_batch */

struct msg_usage_sync {
	char request_id[PROTO_ID_MAX + 1];
	char worker_id[PROTO_NAME_MAX + 1]; /* (ne) */
	int64_t last_seq;                   /* highest seq journaled, 0.. */
};

/* payload: count encoded limit_settle messages back to back (each ends
 * with its '\n'), in the order the gateway settled them. */
#define PROTO_SETTLE_BATCH_MAX 256 /* settles in one limit_settle_batch */

struct msg_limit_settle_batch {
	char request_id[PROTO_ID_MAX + 1];
	int64_t count;       /* 1..PROTO_SETTLE_BATCH_MAX */
	const char *payload; /* borrowed */
	size_t payload_len;
};

/* limit_check_batch payload: count encoded limit_check messages back to
 * back (each ends with its '\n').  limit_verdict_batch payload: one
 * encoded limit_verdict per check, in the same order, same count. */
#define PROTO_CHECK_BATCH_MAX 256 /* checks in one limit_check_batch */

struct msg_limit_check_batch {
	char request_id[PROTO_ID_MAX + 1];
	int64_t count;       /* 1..PROTO_CHECK_BATCH_MAX */
	const char *payload; /* borrowed */
	size_t payload_len;
};

struct msg_limit_verdict_batch {
	char request_id[PROTO_ID_MAX + 1];
	int64_t count;       /* 1..PROTO_CHECK_BATCH_MAX */
	const char *payload; /* borrowed */
	size_t payload_len;
};

/* payload: count encoded usage_event messages back to back (each ends with
 * its '\n'), seqs first_seq..last_seq in order, all of worker_id. */
struct msg_usage_batch {
	char request_id[PROTO_ID_MAX + 1];
	char worker_id[PROTO_NAME_MAX + 1]; /* (ne) */
	int64_t first_seq;                  /* 1.. */
	int64_t last_seq;                   /* first_seq + count - 1 */
	int64_t count;                      /* 1..PROTO_USAGE_BATCH_MAX */
	const char *payload;                /* borrowed */
	size_t payload_len;
};

struct msg_usage_ack {
	char request_id[PROTO_ID_MAX + 1];
	char worker_id[PROTO_NAME_MAX + 1]; /* (ne) */
	int64_t committed_seq;              /* 0.. */
	char code[PROTO_ENUM_MAX + 1];      /* "ok"|"busy"|"unavailable" */
};

/* The settled cost of a subject on the current UTC day. */
struct msg_cost_today_req {
	char request_id[PROTO_ID_MAX + 1];
	char subject_type[PROTO_ENUM_MAX + 1];  /* "user"|"session" */
	char subject_id[PROTO_SUBJECT_MAX + 1]; /* (ne) */
};

struct msg_cost_today_resp {
	char request_id[PROTO_ID_MAX + 1];
	char day[PROTO_ENUM_MAX + 1];  /* (ne) "YYYY-MM-DD", UTC */
	int64_t micro_usd;             /* money; 0 when unavailable */
	char code[PROTO_ENUM_MAX + 1]; /* "ok"|"busy"|"unavailable" */
};

/*
 * Threat signals and blocks (services/ratelimiter/rl_limits.h has the
 * rules).  threat_report: points a subject and/or client IP earned outside
 * limit_check (reason e.g. "invalid_request", "auth_failure").  Blocks are
 * named by kind "user", "session" or "ip" and id (subject id or address).
 * block_list_resp's payload is a JSON array, oldest block first:
 *   [{"kind":"ip","id":"203.0.113.7","until":<unix seconds>,
 *     "retry_after_s":<seconds left>,"reason":"session_churn"}, ...]
 */
#define PROTO_BLOCK_LIST_MAX 1000

struct msg_threat_report {
	char request_id[PROTO_ID_MAX + 1];
	char subject_type[PROTO_ENUM_MAX + 1];  /* ""|"user"|"session" */
	char subject_id[PROTO_SUBJECT_MAX + 1]; /* "" iff subject_type "" */
	char ip[PROTO_IP_MAX + 1];              /* (ne) */
	char reason[PROTO_NAME_MAX + 1];        /* (ne) identifier */
	int64_t points;                         /* 1..PROTO_THREAT_MAX */
};

struct msg_block_list {
	char request_id[PROTO_ID_MAX + 1];
	int64_t max; /* entries wanted, 1..PROTO_BLOCK_LIST_MAX */
};

struct msg_block_list_resp {
	char request_id[PROTO_ID_MAX + 1];
	int64_t total; /* blocks in force (may exceed the entries), counts */
	bool degraded; /* from the in-process fallback, not Redis */
	const char *payload; /* JSON array; borrowed */
	size_t payload_len;
};

struct msg_unblock {
	char request_id[PROTO_ID_MAX + 1];
	char kind[PROTO_ENUM_MAX + 1];  /* "user"|"session"|"ip" */
	char id[PROTO_SUBJECT_MAX + 1]; /* (ne) */
};

/*
 * Circuit breakers shared by the worker pool (services/provider-worker/
 * README.md).  A worker whose breaker of a target (provider + "primary"
 * or "fallback" upstream) changes state pushes breaker_state to the
 * gateway's pull socket; the gateway publishes it unchanged on the
 * control socket ("ctl "), so every worker learns it within milliseconds.
 * A worker ignores its own (worker_id); "open" opens a peer's breaker
 * until open_until_ms (wall clock, ms) and leaves the probe to the worker
 * that tripped; "closed" closes a breaker a peer opened.  reason:
 * "consecutive_failures", "failure_rate", "probe_failed", "closed".
 */
struct msg_breaker_state {
	char request_id[PROTO_ID_MAX + 1];
	char worker_id[PROTO_NAME_MAX + 1]; /* (ne) */
	char provider[PROTO_NAME_MAX + 1];  /* "claude"|"openai" */
	char target[PROTO_ENUM_MAX + 1];    /* "primary"|"fallback" */
	char state[PROTO_ENUM_MAX + 1];     /* "closed"|"open"|"half_open" */
	int64_t open_until_ms;              /* > 0 iff state "open", 0.. */
	char reason[PROTO_NAME_MAX + 1];    /* identifier */
};

/*
 * A worker's numbers, pushed once a second (and at once after a breaker
 * change) to the gateway, which keeps the latest per worker_id for
 * GET /api/v1/ai-proxy/providers/status.  payload (JSON):
 *   {"providers":{"claude":{T,"fallback":T|null},"openai":{...}}}
 * with T = {"state","open_until_ms","reason","consecutive_failures",
 * "window_total","window_failures" (upstream attempts in the last 60 s),
 * "requests_last_minute","last_error":{"code","message","status",
 * "at_ms"}|null,"last_success_ms","in_flight","latency_buckets":[16
 * counts, upper bounds 5,10,25,50,100,250,500,1000,2000,4000,8000,15000,
 * 30000,60000,120000 ms, then the rest]}.  A provider without a key is
 * left out.
 */
struct msg_worker_stats {
	char request_id[PROTO_ID_MAX + 1];
	char worker_id[PROTO_NAME_MAX + 1]; /* (ne) */
	int64_t ts_ms;                      /* wall clock, 0.. */
	const char *payload;                /* JSON document; borrowed */
	size_t payload_len;
};

/* Storage for any message, for code that handles several kinds. */
union proto_msg {
	struct msg_ping ping;
	struct msg_pong pong;
	struct msg_limit_check limit_check;
	struct msg_limit_verdict limit_verdict;
	struct msg_limit_settle limit_settle;
	struct msg_quota_req quota_req;
	struct msg_quota_resp quota_resp;
	struct msg_chat_req chat_req;
	struct msg_chat_resp chat_resp;
	struct msg_stream_chunk stream_chunk;
	struct msg_cancel cancel;
	struct msg_breaker_reset breaker_reset;
	struct msg_cache_clear cache_clear;
	struct msg_usage_event usage_event;
	struct msg_status_req status_req;
	struct msg_status_resp status_resp;
	struct msg_analytics_req analytics_req;
	struct msg_analytics_resp analytics_resp;
	struct msg_ack ack;
	struct msg_usage_sync usage_sync;
	struct msg_usage_batch usage_batch;
	struct msg_usage_ack usage_ack;
	struct msg_cost_today_req cost_today_req;
	struct msg_cost_today_resp cost_today_resp;
	struct msg_threat_report threat_report;
	struct msg_block_list block_list;
	struct msg_block_list_resp block_list_resp;
	struct msg_unblock unblock;
	struct msg_limit_settle_batch limit_settle_batch;
	struct msg_breaker_state breaker_state;
	struct msg_worker_stats worker_stats;
	struct msg_limit_check_batch limit_check_batch;
	struct msg_limit_verdict_batch limit_verdict_batch;
};

/* "ping", "limit_check", ...; "none" for MSG_NONE or an unknown value. */
const char *msg_type_str(enum msg_type t);
/* The type named s, or MSG_NONE when s is NULL or unknown. */
enum msg_type msg_type_from_str(const char *s);

/*
 * Walks a batch payload (encoded messages back to back, each ended by its
 * '\n': limit_settle_batch, limit_check_batch, limit_verdict_batch,
 * usage_batch).  Names the next message in *ret_msg / *ret_len, its '\n'
 * included (or, at a tail with no '\n', the tail: its decoder refuses it),
 * and moves *p past it.  false once *p reaches end.
 */
bool proto_batch_next(
    const char **p, const char *end, const char **ret_msg, size_t *ret_len);

/*
 * Reads only the header of buf to learn the message's type, so a socket
 * that receives several kinds can dispatch.  -EPROTO when the header is
 * malformed or names no known type, -EPROTONOSUPPORT on a wrong "v".
 */
int proto_peek_type(const char *buf, size_t len, enum msg_type *ret);

/*
 * Generic codec: m / ret point to the struct of type t (proto_msg_size(t)
 * bytes, e.g. a member of union proto_msg).  -EINVAL for an unknown t.
 * Encode: caller frees *ret_buf with free().  Decode: *ret written only on
 * success; its payload is borrowed from buf.
 */
size_t proto_msg_size(enum msg_type t);
int proto_msg_encode(
    enum msg_type t, const void *m, char **ret_buf, size_t *ret_len);
int proto_msg_decode(enum msg_type t, const char *buf, size_t len, void *ret);

/*
 * Per-message codec.  encode: caller frees *ret_buf with free().
 * decode: *ret written only on success; payload borrowed from buf.
 */
int msg_ping_encode(const struct msg_ping *m, char **ret_buf, size_t *ret_len);
int msg_ping_decode(const char *buf, size_t len, struct msg_ping *ret);
int msg_pong_encode(const struct msg_pong *m, char **ret_buf, size_t *ret_len);
int msg_pong_decode(const char *buf, size_t len, struct msg_pong *ret);
int msg_limit_check_encode(
    const struct msg_limit_check *m, char **ret_buf, size_t *ret_len);
int msg_limit_check_decode(
    const char *buf, size_t len, struct msg_limit_check *ret);
int msg_limit_verdict_encode(
    const struct msg_limit_verdict *m, char **ret_buf, size_t *ret_len);
int msg_limit_verdict_decode(
    const char *buf, size_t len, struct msg_limit_verdict *ret);
int msg_limit_settle_encode(
    const struct msg_limit_settle *m, char **ret_buf, size_t *ret_len);
int msg_limit_settle_decode(
    const char *buf, size_t len, struct msg_limit_settle *ret);
int msg_quota_req_encode(
    const struct msg_quota_req *m, char **ret_buf, size_t *ret_len);
int msg_quota_req_decode(
    const char *buf, size_t len, struct msg_quota_req *ret);
int msg_quota_resp_encode(
    const struct msg_quota_resp *m, char **ret_buf, size_t *ret_len);
int msg_quota_resp_decode(
    const char *buf, size_t len, struct msg_quota_resp *ret);
int msg_chat_req_encode(
    const struct msg_chat_req *m, char **ret_buf, size_t *ret_len);
int msg_chat_req_decode(const char *buf, size_t len, struct msg_chat_req *ret);
int msg_chat_resp_encode(
    const struct msg_chat_resp *m, char **ret_buf, size_t *ret_len);
int msg_chat_resp_decode(
    const char *buf, size_t len, struct msg_chat_resp *ret);
int msg_stream_chunk_encode(
    const struct msg_stream_chunk *m, char **ret_buf, size_t *ret_len);
int msg_stream_chunk_decode(
    const char *buf, size_t len, struct msg_stream_chunk *ret);
int msg_cancel_encode(
    const struct msg_cancel *m, char **ret_buf, size_t *ret_len);
int msg_cancel_decode(const char *buf, size_t len, struct msg_cancel *ret);
int msg_breaker_reset_encode(
    const struct msg_breaker_reset *m, char **ret_buf, size_t *ret_len);
int msg_breaker_reset_decode(
    const char *buf, size_t len, struct msg_breaker_reset *ret);
int msg_cache_clear_encode(
    const struct msg_cache_clear *m, char **ret_buf, size_t *ret_len);
int msg_cache_clear_decode(
    const char *buf, size_t len, struct msg_cache_clear *ret);
int msg_usage_event_encode(
    const struct msg_usage_event *m, char **ret_buf, size_t *ret_len);
int msg_usage_event_decode(
    const char *buf, size_t len, struct msg_usage_event *ret);
int msg_status_req_encode(
    const struct msg_status_req *m, char **ret_buf, size_t *ret_len);
int msg_status_req_decode(
    const char *buf, size_t len, struct msg_status_req *ret);
int msg_status_resp_encode(
    const struct msg_status_resp *m, char **ret_buf, size_t *ret_len);
int msg_status_resp_decode(
    const char *buf, size_t len, struct msg_status_resp *ret);
int msg_analytics_req_encode(
    const struct msg_analytics_req *m, char **ret_buf, size_t *ret_len);
int msg_analytics_req_decode(
    const char *buf, size_t len, struct msg_analytics_req *ret);
int msg_analytics_resp_encode(
    const struct msg_analytics_resp *m, char **ret_buf, size_t *ret_len);
int msg_analytics_resp_decode(
    const char *buf, size_t len, struct msg_analytics_resp *ret);
int msg_ack_encode(const struct msg_ack *m, char **ret_buf, size_t *ret_len);
int msg_ack_decode(const char *buf, size_t len, struct msg_ack *ret);
int msg_usage_sync_encode(
    const struct msg_usage_sync *m, char **ret_buf, size_t *ret_len);
int msg_usage_sync_decode(
    const char *buf, size_t len, struct msg_usage_sync *ret);
int msg_usage_batch_encode(
    const struct msg_usage_batch *m, char **ret_buf, size_t *ret_len);
int msg_usage_batch_decode(
    const char *buf, size_t len, struct msg_usage_batch *ret);
int msg_usage_ack_encode(
    const struct msg_usage_ack *m, char **ret_buf, size_t *ret_len);
int msg_usage_ack_decode(
    const char *buf, size_t len, struct msg_usage_ack *ret);
int msg_cost_today_req_encode(
    const struct msg_cost_today_req *m, char **ret_buf, size_t *ret_len);
int msg_cost_today_req_decode(
    const char *buf, size_t len, struct msg_cost_today_req *ret);
int msg_cost_today_resp_encode(
    const struct msg_cost_today_resp *m, char **ret_buf, size_t *ret_len);
int msg_cost_today_resp_decode(
    const char *buf, size_t len, struct msg_cost_today_resp *ret);
int msg_threat_report_encode(
    const struct msg_threat_report *m, char **ret_buf, size_t *ret_len);
int msg_threat_report_decode(
    const char *buf, size_t len, struct msg_threat_report *ret);
int msg_block_list_encode(
    const struct msg_block_list *m, char **ret_buf, size_t *ret_len);
int msg_block_list_decode(
    const char *buf, size_t len, struct msg_block_list *ret);
int msg_block_list_resp_encode(
    const struct msg_block_list_resp *m, char **ret_buf, size_t *ret_len);
int msg_block_list_resp_decode(
    const char *buf, size_t len, struct msg_block_list_resp *ret);
int msg_unblock_encode(
    const struct msg_unblock *m, char **ret_buf, size_t *ret_len);
int msg_unblock_decode(const char *buf, size_t len, struct msg_unblock *ret);
int msg_limit_settle_batch_encode(
    const struct msg_limit_settle_batch *m, char **ret_buf, size_t *ret_len);
int msg_limit_settle_batch_decode(
    const char *buf, size_t len, struct msg_limit_settle_batch *ret);
int msg_limit_check_batch_encode(
    const struct msg_limit_check_batch *m, char **ret_buf, size_t *ret_len);
int msg_limit_check_batch_decode(
    const char *buf, size_t len, struct msg_limit_check_batch *ret);
int msg_limit_verdict_batch_encode(
    const struct msg_limit_verdict_batch *m, char **ret_buf, size_t *ret_len);
int msg_limit_verdict_batch_decode(
    const char *buf, size_t len, struct msg_limit_verdict_batch *ret);
int msg_breaker_state_encode(
    const struct msg_breaker_state *m, char **ret_buf, size_t *ret_len);
int msg_breaker_state_decode(
    const char *buf, size_t len, struct msg_breaker_state *ret);
int msg_worker_stats_encode(
    const struct msg_worker_stats *m, char **ret_buf, size_t *ret_len);
int msg_worker_stats_decode(
    const char *buf, size_t len, struct msg_worker_stats *ret);

/*
 * Pub/sub topics.  wrap: *ret = topic followed by buf (caller frees).
 * strip: checks that buf begins with topic (-EPROTO if not) and sets
 * *ret_body to the rest (borrowed from buf).
 */
int proto_topic_wrap(const char *topic, const char *buf, size_t len, char **ret,
    size_t *ret_len);
int proto_topic_strip(const char *topic, const char *buf, size_t len,
    const char **ret_body, size_t *ret_len);

#endif
