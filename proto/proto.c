/*
 * proto: table-driven codec for the messages in proto.h.
 *
 * Each message is described once, by a table of its fields (JSON key,
 * kind, offset in the struct, size or range, flags) and an optional check
 * across fields.  proto_encode() and proto_decode() walk that table; the
 * per-message msg_<x>_encode()/msg_<x>_decode() are thin wrappers.
 */
#include "proto.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

enum proto_kind {
	PROTO_STR,   /* char array, NUL-terminated */
	PROTO_ENUM,  /* char array holding one of a list of strings */
	PROTO_INT64, /* int64_t within [min, max] */
	PROTO_BOOL,  /* bool */
	PROTO_KIND_MAX
};

/* Field flags. */
#define PF_NE    0x1 /* string must not be empty */
#define PF_ID    0x2 /* string of [A-Za-z0-9._:-] only */
#define PF_PRINT 0x4 /* string without control characters */
#define PF_HTTP  0x8 /* integer is 0 or 100..599 */

struct proto_field {
	const char *key;
	enum proto_kind kind;
	size_t off;
	size_t size; /* STR, ENUM: size of the array, NUL included */
	int64_t min; /* INT64 */
	int64_t max;
	unsigned flags;
	const char *const *values; /* ENUM: NULL-terminated list */
};

struct proto_desc {
	enum msg_type type;
	size_t size; /* sizeof the struct */
	const struct proto_field *fields;
	size_t nfields;
	bool payload;
	size_t payload_off;           /* const char *payload */
	size_t payload_len_off;       /* size_t payload_len */
	bool (*valid)(const void *m); /* checks across fields, or NULL */
};

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define FSIZE(T, k)   sizeof(((struct msg_##T *)NULL)->k)
#define FOFF(T, k)    offsetof(struct msg_##T, k)

#define FIELD(key, kind, off, size, lo, hi, fl, vals)                          \
	{                                                                      \
		key, kind, off, size, lo, hi, fl, vals                         \
	}
#define F_STR(T, k, fl)                                                        \
	FIELD(#k, PROTO_STR, FOFF(T, k), FSIZE(T, k), 0, 0, (fl), NULL)
#define F_ENUM(T, k, vals)                                                     \
	FIELD(#k, PROTO_ENUM, FOFF(T, k), FSIZE(T, k), 0, 0, 0, (vals))
#define F_INT(T, k, lo, hi)                                                    \
	FIELD(#k, PROTO_INT64, FOFF(T, k), 0, (lo), (hi), 0, NULL)
#define F_HTTP(T, k)                                                           \
	FIELD(#k, PROTO_INT64, FOFF(T, k), 0, 0, 599, PF_HTTP, NULL)
#define F_BOOL(T, k) FIELD(#k, PROTO_BOOL, FOFF(T, k), 0, 0, 0, 0, NULL)
/* request_id: required in the messages of a client request. */
#define F_RID(T)       F_STR(T, request_id, PF_ID)
#define F_RID_NE(T)    F_STR(T, request_id, PF_ID | PF_NE)
#define F_MONEY(T, k)  F_INT(T, k, 0, PROTO_MONEY_MAX)
#define F_TOKENS(T, k) F_INT(T, k, 0, PROTO_TOKENS_MAX)
#define F_MS(T, k)     F_INT(T, k, 0, PROTO_MS_MAX)

#define DESC(T, mt, chk)                                                       \
	static const struct proto_desc desc_##T = {(mt),                       \
	    sizeof(struct msg_##T), fields_##T, ARRAY_SIZE(fields_##T), false, \
	    0, 0, (chk)}
#define DESC_PAYLOAD(T, mt, chk)                                               \
	static const struct proto_desc desc_##T = {(mt),                       \
	    sizeof(struct msg_##T), fields_##T, ARRAY_SIZE(fields_##T), true,  \
	    FOFF(T, payload), FOFF(T, payload_len), (chk)}

static const char *const msg_type_names[MSG_MAX] = {
    [MSG_NONE] = "none",
    [MSG_PING] = "ping",
    [MSG_PONG] = "pong",
    [MSG_LIMIT_CHECK] = "limit_check",
    [MSG_LIMIT_VERDICT] = "limit_verdict",
    [MSG_LIMIT_SETTLE] = "limit_settle",
    [MSG_QUOTA_REQ] = "quota_req",
    [MSG_QUOTA_RESP] = "quota_resp",
    [MSG_CHAT_REQ] = "chat_req",
    [MSG_CHAT_RESP] = "chat_resp",
    [MSG_STREAM_CHUNK] = "stream_chunk",
    [MSG_CANCEL] = "cancel",
    [MSG_BREAKER_RESET] = "breaker_reset",
    [MSG_CACHE_CLEAR] = "cache_clear",
    [MSG_USAGE_EVENT] = "usage_event",
    [MSG_STATUS_REQ] = "status_req",
    [MSG_STATUS_RESP] = "status_resp",
    [MSG_ANALYTICS_REQ] = "analytics_req",
    [MSG_ANALYTICS_RESP] = "analytics_resp",
    [MSG_ACK] = "ack",
    [MSG_USAGE_SYNC] = "usage_sync",
    [MSG_USAGE_BATCH] = "usage_batch",
    [MSG_USAGE_ACK] = "usage_ack",
    [MSG_COST_TODAY_REQ] = "cost_today_req",
    [MSG_COST_TODAY_RESP] = "cost_today_resp",
    [MSG_THREAT_REPORT] = "threat_report",
    [MSG_BLOCK_LIST] = "block_list",
    [MSG_BLOCK_LIST_RESP] = "block_list_resp",
    [MSG_UNBLOCK] = "unblock",
    [MSG_LIMIT_SETTLE_BATCH] = "limit_settle_batch",
    [MSG_LIMIT_CHECK_BATCH] = "limit_check_batch",
    [MSG_LIMIT_VERDICT_BATCH] = "limit_verdict_batch",
    [MSG_BREAKER_STATE] = "breaker_state",
    [MSG_WORKER_STATS] = "worker_stats",
};

static const char *const subject_types[] = {"user", "session", NULL};
static const char *const subject_types_opt[] = {"", "user", "session", NULL};
static const char *const providers[] = {"claude", "openai", NULL};
static const char *const apis[] = {"messages", "chat_completions", NULL};
static const char *const usage_statuses[] = {"ok", "error", "aborted", NULL};
static const char *const states[] = {"up", "degraded", "down", NULL};

static const struct proto_field fields_ping[] = {
    F_RID(ping),
    F_INT(ping, ts_us, 0, INT64_MAX),
};
DESC(ping, MSG_PING, NULL);

static const struct proto_field fields_pong[] = {
    F_RID(pong),
    F_INT(pong, ts_us, 0, INT64_MAX),
    F_STR(pong, daemon, PF_NE | PF_PRINT),
    F_INT(pong, pid, 1, INT32_MAX),
};
DESC(pong, MSG_PONG, NULL);

static const struct proto_field fields_limit_check[] = {
    F_RID_NE(limit_check),
    F_ENUM(limit_check, subject_type, subject_types),
    F_STR(limit_check, subject_id, PF_NE | PF_PRINT),
    F_STR(limit_check, ip, PF_NE | PF_PRINT),
    F_STR(limit_check, provider, PF_PRINT),
    F_STR(limit_check, model, PF_PRINT),
    F_MONEY(limit_check, reserve_micro_usd),
    F_INT(limit_check, threat, 0, PROTO_THREAT_MAX),
};
DESC(limit_check, MSG_LIMIT_CHECK, NULL);

/* code is "ok" exactly when the request is allowed. */
static bool
limit_verdict_valid(const void *p)
{
	const struct msg_limit_verdict *m = p;

	return m->allow == (strcmp(m->code, "ok") == 0);
}

static const struct proto_field fields_limit_verdict[] = {
    F_RID_NE(limit_verdict),
    F_BOOL(limit_verdict, allow),
    F_STR(limit_verdict, code, PF_NE | PF_ID),
    F_MONEY(limit_verdict, limit),
    F_MONEY(limit_verdict, remaining),
    F_INT(limit_verdict, reset_s, 0, PROTO_SECONDS_MAX),
    F_INT(limit_verdict, retry_after_s, 0, PROTO_SECONDS_MAX),
    F_STR(limit_verdict, reservation_id, PF_ID),
    F_BOOL(limit_verdict, degraded),
};
DESC(limit_verdict, MSG_LIMIT_VERDICT, limit_verdict_valid);

static const struct proto_field fields_limit_settle[] = {
    F_RID_NE(limit_settle),
    F_ENUM(limit_settle, subject_type, subject_types),
    F_STR(limit_settle, subject_id, PF_NE | PF_PRINT),
    F_STR(limit_settle, reservation_id, PF_NE | PF_ID),
    F_MONEY(limit_settle, reserved_micro_usd),
    F_MONEY(limit_settle, actual_micro_usd),
};
DESC(limit_settle, MSG_LIMIT_SETTLE, NULL);

static const struct proto_field fields_limit_settle_batch[] = {
    F_RID(limit_settle_batch),
    F_INT(limit_settle_batch, count, 1, PROTO_SETTLE_BATCH_MAX),
};
DESC_PAYLOAD(limit_settle_batch, MSG_LIMIT_SETTLE_BATCH, NULL);

static const struct proto_field fields_limit_check_batch[] = {
    F_RID(limit_check_batch),
    F_INT(limit_check_batch, count, 1, PROTO_CHECK_BATCH_MAX),
};
DESC_PAYLOAD(limit_check_batch, MSG_LIMIT_CHECK_BATCH, NULL);

static const struct proto_field fields_limit_verdict_batch[] = {
    F_RID(limit_verdict_batch),
    F_INT(limit_verdict_batch, count, 1, PROTO_CHECK_BATCH_MAX),
};
DESC_PAYLOAD(limit_verdict_batch, MSG_LIMIT_VERDICT_BATCH, NULL);

static const struct proto_field fields_quota_req[] = {
    F_RID(quota_req),
    F_ENUM(quota_req, subject_type, subject_types),
    F_STR(quota_req, subject_id, PF_NE | PF_PRINT),
};
DESC(quota_req, MSG_QUOTA_REQ, NULL);

static const struct proto_field fields_quota_resp[] = {
    F_RID(quota_resp),
    F_TOKENS(quota_resp, minute_limit),
    F_TOKENS(quota_resp, minute_used),
    F_TOKENS(quota_resp, hour_limit),
    F_TOKENS(quota_resp, hour_used),
    F_MONEY(quota_resp, cost_limit_micro_usd),
    F_MONEY(quota_resp, cost_used_micro_usd),
    F_MONEY(quota_resp, cost_reserved_micro_usd),
    F_BOOL(quota_resp, degraded),
};
DESC(quota_resp, MSG_QUOTA_RESP, NULL);

/* A stream needs somewhere to push its chunks, and only a stream has one. */
static bool
chat_req_valid(const void *p)
{
	const struct msg_chat_req *m = p;

	return m->stream == (m->stream_url[0] != '\0');
}

static const struct proto_field fields_chat_req[] = {
    F_RID_NE(chat_req),
    F_ENUM(chat_req, provider, providers),
    F_STR(chat_req, model, PF_NE | PF_PRINT),
    F_ENUM(chat_req, api, apis),
    F_BOOL(chat_req, stream),
    F_STR(chat_req, stream_url, PF_PRINT),
    F_INT(chat_req, deadline_ms, 1, PROTO_MS_MAX),
    F_ENUM(chat_req, subject_type, subject_types_opt),
    F_STR(chat_req, subject_id, PF_PRINT),
    F_STR(chat_req, ip, PF_PRINT),
    F_STR(chat_req, anthropic_beta, PF_PRINT),
};
DESC_PAYLOAD(chat_req, MSG_CHAT_REQ, chat_req_valid);

static const struct proto_field fields_chat_resp[] = {
    F_RID_NE(chat_resp),
    F_INT(chat_resp, status, 100, 599),
    F_STR(chat_resp, error_code, PF_ID),
    F_STR(chat_resp, error_message, 0),
    F_HTTP(chat_resp, upstream_status),
    F_STR(chat_resp, provider, PF_PRINT),
    F_STR(chat_resp, model, PF_PRINT),
    F_TOKENS(chat_resp, input_tokens),
    F_TOKENS(chat_resp, output_tokens),
    F_TOKENS(chat_resp, cache_read_tokens),
    F_TOKENS(chat_resp, cache_write_tokens),
    F_MONEY(chat_resp, cost_micro_usd),
    F_BOOL(chat_resp, cached),
    F_MS(chat_resp, upstream_ms),
    F_MS(chat_resp, retry_after_ms),
    F_TOKENS(chat_resp, chunks),
    F_STR(chat_resp, upstream_request_id, PF_ID),
    F_INT(chat_resp, attempts, 0, PROTO_TRIES_MAX),
    F_BOOL(chat_resp, fallback),
};
DESC_PAYLOAD(chat_resp, MSG_CHAT_RESP, NULL);

static const struct proto_field fields_stream_chunk[] = {
    F_RID_NE(stream_chunk),
    F_INT(stream_chunk, seq, 0, INT64_MAX),
};
DESC_PAYLOAD(stream_chunk, MSG_STREAM_CHUNK, NULL);

static const struct proto_field fields_cancel[] = {
    F_RID_NE(cancel),
};
DESC(cancel, MSG_CANCEL, NULL);

static const struct proto_field fields_breaker_reset[] = {
    F_RID(breaker_reset),
    F_STR(breaker_reset, provider, PF_NE | PF_PRINT),
};
DESC(breaker_reset, MSG_BREAKER_RESET, NULL);

static const struct proto_field fields_cache_clear[] = {
    F_RID(cache_clear),
    F_STR(cache_clear, provider, PF_PRINT),
};
DESC(cache_clear, MSG_CACHE_CLEAR, NULL);

static const struct proto_field fields_usage_event[] = {
    F_RID_NE(usage_event),
    F_STR(usage_event, event_id, PF_NE | PF_ID),
    F_INT(usage_event, seq, 0, INT64_MAX),
    F_STR(usage_event, worker_id, PF_PRINT),
    F_INT(usage_event, ts_ms, 0, INT64_MAX),
    F_ENUM(usage_event, subject_type, subject_types_opt),
    F_STR(usage_event, subject_id, PF_PRINT),
    F_STR(usage_event, ip, PF_PRINT),
    F_STR(usage_event, provider, PF_PRINT),
    F_STR(usage_event, model, PF_PRINT),
    F_TOKENS(usage_event, input_tokens),
    F_TOKENS(usage_event, output_tokens),
    F_TOKENS(usage_event, cache_read_tokens),
    F_TOKENS(usage_event, cache_write_tokens),
    F_MONEY(usage_event, cost_micro_usd),
    F_BOOL(usage_event, cached),
    F_ENUM(usage_event, status, usage_statuses),
    F_HTTP(usage_event, http_status),
    F_MS(usage_event, upstream_ms),
    F_MS(usage_event, total_ms),
};
DESC(usage_event, MSG_USAGE_EVENT, NULL);

static const struct proto_field fields_status_req[] = {
    F_RID(status_req),
    F_STR(status_req, what, PF_NE | PF_PRINT),
};
DESC(status_req, MSG_STATUS_REQ, NULL);

static const struct proto_field fields_status_resp[] = {
    F_RID(status_resp),
    F_STR(status_resp, daemon, PF_NE | PF_PRINT),
    F_ENUM(status_resp, state, states),
};
DESC_PAYLOAD(status_resp, MSG_STATUS_RESP, NULL);

static const struct proto_field fields_analytics_req[] = {
    F_RID(analytics_req),
    F_ENUM(analytics_req, subject_type, subject_types_opt),
    F_STR(analytics_req, subject_id, PF_PRINT),
    F_INT(analytics_req, days, 1, PROTO_DAYS_MAX),
    F_STR(analytics_req, provider, PF_PRINT),
};
DESC(analytics_req, MSG_ANALYTICS_REQ, NULL);

static const struct proto_field fields_analytics_resp[] = {
    F_RID(analytics_resp),
    F_INT(analytics_resp, status, 100, 599),
};
DESC_PAYLOAD(analytics_resp, MSG_ANALYTICS_RESP, NULL);

static const struct proto_field fields_ack[] = {
    F_RID(ack),
    F_BOOL(ack, ok),
    F_STR(ack, code, PF_ID),
    F_STR(ack, message, 0),
};
DESC(ack, MSG_ACK, NULL);

static const char *const usage_ack_codes[] = {
    "ok", "busy", "unavailable", NULL};

static const struct proto_field fields_usage_sync[] = {
    F_RID(usage_sync),
    F_STR(usage_sync, worker_id, PF_NE | PF_PRINT),
    F_INT(usage_sync, last_seq, 0, INT64_MAX),
};
DESC(usage_sync, MSG_USAGE_SYNC, NULL);

/* A batch is one contiguous run of a journal. */
static bool
usage_batch_valid(const void *p)
{
	const struct msg_usage_batch *m = p;

	return m->last_seq >= m->first_seq &&
	       m->last_seq - m->first_seq == m->count - 1;
}

static const struct proto_field fields_usage_batch[] = {
    F_RID(usage_batch),
    F_STR(usage_batch, worker_id, PF_NE | PF_PRINT),
    F_INT(usage_batch, first_seq, 1, INT64_MAX),
    F_INT(usage_batch, last_seq, 1, INT64_MAX),
    F_INT(usage_batch, count, 1, PROTO_USAGE_BATCH_MAX),
};
DESC_PAYLOAD(usage_batch, MSG_USAGE_BATCH, usage_batch_valid);

static const struct proto_field fields_usage_ack[] = {
    F_RID(usage_ack),
    F_STR(usage_ack, worker_id, PF_NE | PF_PRINT),
    F_INT(usage_ack, committed_seq, 0, INT64_MAX),
    F_ENUM(usage_ack, code, usage_ack_codes),
};
DESC(usage_ack, MSG_USAGE_ACK, NULL);

static const struct proto_field fields_cost_today_req[] = {
    F_RID(cost_today_req),
    F_ENUM(cost_today_req, subject_type, subject_types),
    F_STR(cost_today_req, subject_id, PF_NE | PF_PRINT),
};
DESC(cost_today_req, MSG_COST_TODAY_REQ, NULL);

static const struct proto_field fields_cost_today_resp[] = {
    F_RID(cost_today_resp),
    F_STR(cost_today_resp, day, PF_NE | PF_PRINT),
    F_MONEY(cost_today_resp, micro_usd),
    F_ENUM(cost_today_resp, code, usage_ack_codes),
};
DESC(cost_today_resp, MSG_COST_TODAY_RESP, NULL);

static const char *const block_kinds[] = {"user", "session", "ip", NULL};

/* A subject needs both its type and its id, or neither. */
static bool
threat_report_valid(const void *p)
{
	const struct msg_threat_report *m = p;

	return (m->subject_type[0] == '\0') == (m->subject_id[0] == '\0');
}

static const struct proto_field fields_threat_report[] = {
    F_RID(threat_report),
    F_ENUM(threat_report, subject_type, subject_types_opt),
    F_STR(threat_report, subject_id, PF_PRINT),
    F_STR(threat_report, ip, PF_NE | PF_PRINT),
    F_STR(threat_report, reason, PF_NE | PF_ID),
    F_INT(threat_report, points, 1, PROTO_THREAT_MAX),
};
DESC(threat_report, MSG_THREAT_REPORT, threat_report_valid);

static const struct proto_field fields_block_list[] = {
    F_RID(block_list),
    F_INT(block_list, max, 1, PROTO_BLOCK_LIST_MAX),
};
DESC(block_list, MSG_BLOCK_LIST, NULL);

static const struct proto_field fields_block_list_resp[] = {
    F_RID(block_list_resp),
    F_TOKENS(block_list_resp, total),
    F_BOOL(block_list_resp, degraded),
};
DESC_PAYLOAD(block_list_resp, MSG_BLOCK_LIST_RESP, NULL);

static const struct proto_field fields_unblock[] = {
    F_RID(unblock),
    F_ENUM(unblock, kind, block_kinds),
    F_STR(unblock, id, PF_NE | PF_PRINT),
};
DESC(unblock, MSG_UNBLOCK, NULL);

static const char *const breaker_targets[] = {"primary", "fallback", NULL};
static const char *const breaker_states[] = {
    "closed", "open", "half_open", NULL};

/* An open breaker says until when, and only an open one. */
static bool
breaker_state_valid(const void *p)
{
	const struct msg_breaker_state *m = p;

	return (strcmp(m->state, "open") == 0) == (m->open_until_ms > 0);
}

static const struct proto_field fields_breaker_state[] = {
    F_RID(breaker_state),
    F_STR(breaker_state, worker_id, PF_NE | PF_PRINT),
    F_ENUM(breaker_state, provider, providers),
    F_ENUM(breaker_state, target, breaker_targets),
    F_ENUM(breaker_state, state, breaker_states),
    F_INT(breaker_state, open_until_ms, 0, INT64_MAX),
    F_STR(breaker_state, reason, PF_ID),
};
DESC(breaker_state, MSG_BREAKER_STATE, breaker_state_valid);

static const struct proto_field fields_worker_stats[] = {
    F_RID(worker_stats),
    F_STR(worker_stats, worker_id, PF_NE | PF_PRINT),
    F_INT(worker_stats, ts_ms, 0, INT64_MAX),
};
DESC_PAYLOAD(worker_stats, MSG_WORKER_STATS, NULL);

static const struct proto_desc *const proto_descs[MSG_MAX] = {
    [MSG_PING] = &desc_ping,
    [MSG_PONG] = &desc_pong,
    [MSG_LIMIT_CHECK] = &desc_limit_check,
    [MSG_LIMIT_VERDICT] = &desc_limit_verdict,
    [MSG_LIMIT_SETTLE] = &desc_limit_settle,
    [MSG_LIMIT_SETTLE_BATCH] = &desc_limit_settle_batch,
    [MSG_LIMIT_CHECK_BATCH] = &desc_limit_check_batch,
    [MSG_LIMIT_VERDICT_BATCH] = &desc_limit_verdict_batch,
    [MSG_QUOTA_REQ] = &desc_quota_req,
    [MSG_QUOTA_RESP] = &desc_quota_resp,
    [MSG_CHAT_REQ] = &desc_chat_req,
    [MSG_CHAT_RESP] = &desc_chat_resp,
    [MSG_STREAM_CHUNK] = &desc_stream_chunk,
    [MSG_CANCEL] = &desc_cancel,
    [MSG_BREAKER_RESET] = &desc_breaker_reset,
    [MSG_CACHE_CLEAR] = &desc_cache_clear,
    [MSG_USAGE_EVENT] = &desc_usage_event,
    [MSG_STATUS_REQ] = &desc_status_req,
    [MSG_STATUS_RESP] = &desc_status_resp,
    [MSG_ANALYTICS_REQ] = &desc_analytics_req,
    [MSG_ANALYTICS_RESP] = &desc_analytics_resp,
    [MSG_ACK] = &desc_ack,
    [MSG_USAGE_SYNC] = &desc_usage_sync,
    [MSG_USAGE_BATCH] = &desc_usage_batch,
    [MSG_USAGE_ACK] = &desc_usage_ack,
    [MSG_COST_TODAY_REQ] = &desc_cost_today_req,
    [MSG_COST_TODAY_RESP] = &desc_cost_today_resp,
    [MSG_THREAT_REPORT] = &desc_threat_report,
    [MSG_BLOCK_LIST] = &desc_block_list,
    [MSG_BLOCK_LIST_RESP] = &desc_block_list_resp,
    [MSG_UNBLOCK] = &desc_unblock,
    [MSG_BREAKER_STATE] = &desc_breaker_state,
    [MSG_WORKER_STATS] = &desc_worker_stats,
};

const char *
msg_type_str(enum msg_type t)
{
	if ((unsigned)t >= MSG_MAX)
		return "none";
	return msg_type_names[t];
}

enum msg_type
msg_type_from_str(const char *s)
{
	int t;

	if (s == NULL)
		return MSG_NONE;
	for (t = MSG_NONE + 1; t < MSG_MAX; t++)
		if (strcmp(s, msg_type_names[t]) == 0)
			return (enum msg_type)t;
	return MSG_NONE;
}

static const struct proto_desc *
proto_desc_get(enum msg_type t)
{
	if ((unsigned)t >= MSG_MAX)
		return NULL;
	return proto_descs[t];
}

size_t
proto_msg_size(enum msg_type t)
{
	const struct proto_desc *d = proto_desc_get(t);

	return d == NULL ? 0 : d->size;
}

/* Whether s[0..len) is well-formed UTF-8 (no overlongs, no surrogates). */
static bool
proto_utf8_valid(const unsigned char *s, size_t len)
{
	size_t i = 0, n, k;
	uint32_t c;

	while (i < len) {
		c = s[i];
		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			c &= 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			c &= 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			c &= 0x07;
		} else {
			return false;
		}
		if (len - i <= n)
			return false;
		for (k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			c = (c << 6) | (s[i + k] & 0x3f);
		}
		if ((n == 2 && c < 0x800) || (n == 3 && c < 0x10000) ||
		    c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
			return false;
		i += n + 1;
	}
	return true;
}

static bool
proto_id_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
	       c == '-';
}

/* Whether the string field f of struct m follows its rules. */
static bool
proto_str_valid(const struct proto_field *f, const char *m)
{
	const unsigned char *s = (const unsigned char *)m + f->off;
	const char *const *v;
	size_t n, i;

	n = strnlen((const char *)s, f->size);
	if (n == f->size)
		return false; /* not terminated */
	if (f->kind == PROTO_ENUM) {
		for (v = f->values; *v != NULL; v++)
			if (strcmp((const char *)s, *v) == 0)
				return true;
		return false;
	}
	if ((f->flags & PF_NE) && n == 0)
		return false;
	for (i = 0; i < n; i++) {
		if ((f->flags & PF_ID) && !proto_id_char(s[i]))
			return false;
		if ((f->flags & PF_PRINT) && (s[i] < 0x20 || s[i] == 0x7f))
			return false;
	}
	return proto_utf8_valid(s, n);
}

/* Whether every field of struct m, and the message as a whole, is valid. */
static bool
proto_msg_valid(const struct proto_desc *d, const void *p)
{
	const char *m = p;
	const struct proto_field *f;
	int64_t v;
	size_t i;

	for (i = 0; i < d->nfields; i++) {
		f = &d->fields[i];
		switch (f->kind) {
		case PROTO_STR:
		case PROTO_ENUM:
			if (!proto_str_valid(f, m))
				return false;
			break;
		case PROTO_INT64:
			memcpy(&v, m + f->off, sizeof(v));
			if (v < f->min || v > f->max)
				return false;
			if ((f->flags & PF_HTTP) && v != 0 && v < 100)
				return false;
			break;
		case PROTO_BOOL:
		case PROTO_KIND_MAX:
			break;
		}
	}
	return d->valid == NULL || d->valid(p);
}

/* Steals val; -ENOMEM if it is NULL or cannot be added. */
static int
proto_set(json_t *obj, const char *key, json_t *val)
{
	if (val == NULL || json_object_set_new(obj, key, val) != 0)
		return -ENOMEM;
	return 0;
}

/* The header object for struct m, already validated.  Caller decrefs. */
static int
proto_header_build(const struct proto_desc *d, const void *p, json_t **ret)
{
	const char *m = p;
	const struct proto_field *f;
	json_t *hdr;
	json_t *val = NULL;
	int64_t iv;
	size_t i, plen;
	bool bv;
	int rc;

	hdr = json_object();
	if (hdr == NULL)
		return -ENOMEM;
	rc = proto_set(hdr, "v", json_integer(PROTO_VERSION));
	if (rc == 0)
		rc = proto_set(hdr, "type", json_string(msg_type_str(d->type)));
	for (i = 0; rc == 0 && i < d->nfields; i++) {
		f = &d->fields[i];
		switch (f->kind) {
		case PROTO_STR:
		case PROTO_ENUM:
			val = json_string(m + f->off);
			break;
		case PROTO_INT64:
			memcpy(&iv, m + f->off, sizeof(iv));
			val = json_integer(iv);
			break;
		case PROTO_BOOL:
			memcpy(&bv, m + f->off, sizeof(bv));
			val = json_boolean(bv);
			break;
		case PROTO_KIND_MAX:
			val = NULL;
			break;
		}
		rc = proto_set(hdr, f->key, val);
	}
	if (rc == 0 && d->payload) {
		memcpy(&plen, m + d->payload_len_off, sizeof(plen));
		rc = proto_set(
		    hdr, "payload_len", json_integer((json_int_t)plen));
	}
	if (rc != 0) {
		json_decref(hdr);
		return rc;
	}
	*ret = hdr;
	return 0;
}

/* Encodes struct m of kind d.  Caller frees *ret_buf. */
static int
proto_encode(
    const struct proto_desc *d, const void *p, char **ret_buf, size_t *ret_len)
{
	const char *m = p;
	const char *payload = NULL;
	size_t plen = 0, hlen, total;
	json_t *hdr = NULL;
	char *line = NULL;
	char *buf;
	int rc;

	if (d == NULL || p == NULL || ret_buf == NULL || ret_len == NULL)
		return -EINVAL;
	if (!proto_msg_valid(d, p))
		return -EINVAL;
	if (d->payload) {
		memcpy(&payload, m + d->payload_off, sizeof(payload));
		memcpy(&plen, m + d->payload_len_off, sizeof(plen));
		if (plen > PROTO_PAYLOAD_MAX || (payload == NULL && plen > 0))
			return -EINVAL;
	}
	rc = proto_header_build(d, p, &hdr);
	if (rc != 0)
		return rc;
	line = json_dumps(hdr, JSON_COMPACT);
	if (line == NULL) {
		rc = -ENOMEM;
		goto out_hdr;
	}
	hlen = strlen(line);
	if (hlen > PROTO_HEADER_MAX) {
		rc = -EINVAL;
		goto out_line;
	}
	total = hlen + 1 + plen;
	buf = malloc(total);
	if (buf == NULL) {
		rc = -ENOMEM;
		goto out_line;
	}
	memcpy(buf, line, hlen);
	buf[hlen] = '\n';
	if (plen > 0)
		memcpy(buf + hlen + 1, payload, plen);
	*ret_buf = buf;
	*ret_len = total;
	rc = 0;
out_line:
	free(line);
out_hdr:
	json_decref(hdr);
	return rc;
}

/*
 * Finds and parses the header line of buf and checks "v".  On success
 * *ret_hdr is the header object (caller decrefs) and *ret_hlen the length
 * of the line without its '\n'.
 */
static int
proto_header_load(
    const char *buf, size_t len, json_t **ret_hdr, size_t *ret_hlen)
{
	const char *nl;
	json_error_t err;
	json_t *hdr, *v;
	size_t scan;

	if (buf == NULL)
		return -EPROTO;
	scan = len < PROTO_HEADER_MAX + 1 ? len : PROTO_HEADER_MAX + 1;
	nl = memchr(buf, '\n', scan);
	if (nl == NULL)
		return -EPROTO;
	hdr = json_loadb(buf, (size_t)(nl - buf), JSON_REJECT_DUPLICATES, &err);
	if (hdr == NULL)
		return -EPROTO;
	if (!json_is_object(hdr))
		goto err_proto;
	v = json_object_get(hdr, "v");
	if (!json_is_integer(v))
		goto err_proto;
	if (json_integer_value(v) != PROTO_VERSION) {
		json_decref(hdr);
		return -EPROTONOSUPPORT;
	}
	*ret_hdr = hdr;
	*ret_hlen = (size_t)(nl - buf);
	return 0;
err_proto:
	json_decref(hdr);
	return -EPROTO;
}

bool
proto_batch_next(
    const char **p, const char *end, const char **ret_msg, size_t *ret_len)
{
	const char *nl;

	if (*p >= end)
		return false;
	nl = memchr(*p, '\n', (size_t)(end - *p));
	*ret_msg = *p;
	*ret_len = nl != NULL ? (size_t)(nl - *p) + 1 : (size_t)(end - *p);
	*p += *ret_len;
	return true;
}

int
proto_peek_type(const char *buf, size_t len, enum msg_type *ret)
{
	enum msg_type t;
	json_t *hdr;
	size_t hlen;
	int rc;

	if (ret == NULL)
		return -EINVAL;
	rc = proto_header_load(buf, len, &hdr, &hlen);
	if (rc != 0)
		return rc;
	t = msg_type_from_str(json_string_value(json_object_get(hdr, "type")));
	json_decref(hdr);
	if (t == MSG_NONE)
		return -EPROTO;
	*ret = t;
	return 0;
}

static const struct proto_field *
proto_field_find(const struct proto_desc *d, const char *key)
{
	size_t i;

	for (i = 0; i < d->nfields; i++)
		if (strcmp(d->fields[i].key, key) == 0)
			return &d->fields[i];
	return NULL;
}

/*
 * Copies the JSON value val into field f of struct m.  -EPROTO for a wrong
 * JSON type, -ERANGE for a string too long for its array; ranges are
 * checked later, on the whole struct.
 */
static int
proto_field_load(const struct proto_field *f, json_t *val, char *m)
{
	int64_t iv;
	size_t n;
	bool bv;

	switch (f->kind) {
	case PROTO_STR:
	case PROTO_ENUM:
		if (!json_is_string(val))
			return -EPROTO;
		n = json_string_length(val);
		if (n >= f->size)
			return -ERANGE;
		memcpy(m + f->off, json_string_value(val), n);
		m[f->off + n] = '\0';
		return 0;
	case PROTO_INT64:
		if (!json_is_integer(val))
			return -EPROTO;
		iv = json_integer_value(val);
		memcpy(m + f->off, &iv, sizeof(iv));
		return 0;
	case PROTO_BOOL:
		if (!json_is_boolean(val))
			return -EPROTO;
		bv = json_is_true(val);
		memcpy(m + f->off, &bv, sizeof(bv));
		return 0;
	case PROTO_KIND_MAX:
		break;
	}
	return -EPROTO;
}

/*
 * Decodes buf as a message of kind d into ret (written only on success;
 * the payload is borrowed from buf).  See proto.h for the error rule:
 * -EPROTO wins over -ERANGE.
 */
static int
proto_decode(const struct proto_desc *d, const char *buf, size_t len, void *ret)
{
	union proto_msg tmp;
	char *m = (char *)&tmp;
	const char *key, *payload;
	json_t *hdr, *val;
	json_int_t plen = 0;
	size_t hlen, i, ulen;
	int rc, err, range = 0;

	if (d == NULL || ret == NULL)
		return -EINVAL;
	rc = proto_header_load(buf, len, &hdr, &hlen);
	if (rc != 0)
		return rc;
	rc = -EPROTO;
	val = json_object_get(hdr, "type");
	if (!json_is_string(val) ||
	    strcmp(json_string_value(val), msg_type_str(d->type)) != 0)
		goto out;
	json_object_foreach(hdr, key, val) {
		if (strcmp(key, "v") != 0 && strcmp(key, "type") != 0 &&
		    !(d->payload && strcmp(key, "payload_len") == 0) &&
		    proto_field_find(d, key) == NULL)
			goto out;
	}
	memset(&tmp, 0, sizeof(tmp));
	for (i = 0; i < d->nfields; i++) {
		val = json_object_get(hdr, d->fields[i].key);
		if (val == NULL)
			goto out;
		err = proto_field_load(&d->fields[i], val, m);
		if (err == -ERANGE)
			range = 1;
		else if (err != 0)
			goto out;
	}
	payload = buf + hlen + 1;
	if (d->payload) {
		val = json_object_get(hdr, "payload_len");
		if (!json_is_integer(val))
			goto out;
		plen = json_integer_value(val);
		if (plen < 0 || plen > PROTO_PAYLOAD_MAX)
			range = 1;
		else if ((size_t)plen != len - hlen - 1)
			goto out;
		memcpy(m + d->payload_off, &payload, sizeof(payload));
		ulen = (size_t)plen;
		memcpy(m + d->payload_len_off, &ulen, sizeof(ulen));
	} else if (len != hlen + 1) {
		goto out;
	}
	rc = -ERANGE;
	if (range || !proto_msg_valid(d, m))
		goto out;
	memcpy(ret, m, d->size);
	rc = 0;
out:
	json_decref(hdr);
	return rc;
}

int
proto_msg_encode(
    enum msg_type t, const void *m, char **ret_buf, size_t *ret_len)
{
	return proto_encode(proto_desc_get(t), m, ret_buf, ret_len);
}

int
proto_msg_decode(enum msg_type t, const char *buf, size_t len, void *ret)
{
	return proto_decode(proto_desc_get(t), buf, len, ret);
}

/* The typed entry points declared in proto.h. */
#define PROTO_DEFINE(T)                                                        \
	int msg_##T##_encode(                                                  \
	    const struct msg_##T *m, char **ret_buf, size_t *ret_len)          \
	{                                                                      \
		return proto_encode(&desc_##T, m, ret_buf, ret_len);           \
	}                                                                      \
	int msg_##T##_decode(const char *buf, size_t len, struct msg_##T *ret) \
	{                                                                      \
		return proto_decode(&desc_##T, buf, len, ret);                 \
	}

PROTO_DEFINE(ping)
PROTO_DEFINE(pong)
PROTO_DEFINE(limit_check)
PROTO_DEFINE(limit_verdict)
PROTO_DEFINE(limit_settle)
PROTO_DEFINE(quota_req)
PROTO_DEFINE(quota_resp)
PROTO_DEFINE(chat_req)
PROTO_DEFINE(chat_resp)
PROTO_DEFINE(stream_chunk)
PROTO_DEFINE(cancel)
PROTO_DEFINE(breaker_reset)
PROTO_DEFINE(cache_clear)
PROTO_DEFINE(usage_event)
PROTO_DEFINE(status_req)
PROTO_DEFINE(status_resp)
PROTO_DEFINE(analytics_req)
PROTO_DEFINE(analytics_resp)
PROTO_DEFINE(ack)
PROTO_DEFINE(usage_sync)
PROTO_DEFINE(usage_batch)
PROTO_DEFINE(usage_ack)
PROTO_DEFINE(cost_today_req)
PROTO_DEFINE(cost_today_resp)
PROTO_DEFINE(threat_report)
PROTO_DEFINE(block_list)
PROTO_DEFINE(block_list_resp)
PROTO_DEFINE(unblock)
PROTO_DEFINE(limit_settle_batch)
PROTO_DEFINE(limit_check_batch)
PROTO_DEFINE(limit_verdict_batch)
PROTO_DEFINE(breaker_state)
PROTO_DEFINE(worker_stats)

int
proto_topic_wrap(
    const char *topic, const char *buf, size_t len, char **ret, size_t *ret_len)
{
	size_t tlen;
	char *out;

	if (topic == NULL || (buf == NULL && len > 0) || ret == NULL ||
	    ret_len == NULL)
		return -EINVAL;
	tlen = strlen(topic);
	if (len > SIZE_MAX - tlen)
		return -EINVAL;
	out = malloc(tlen + len > 0 ? tlen + len : 1);
	if (out == NULL)
		return -ENOMEM;
	memcpy(out, topic, tlen);
	if (len > 0)
		memcpy(out + tlen, buf, len);
	*ret = out;
	*ret_len = tlen + len;
	return 0;
}

int
proto_topic_strip(const char *topic, const char *buf, size_t len,
    const char **ret_body, size_t *ret_len)
{
	size_t tlen;

	if (topic == NULL || ret_body == NULL || ret_len == NULL)
		return -EINVAL;
	tlen = strlen(topic);
	if (buf == NULL || len < tlen || memcmp(buf, topic, tlen) != 0)
		return -EPROTO;
	*ret_body = buf + tlen;
	*ret_len = len - tlen;
	return 0;
}
