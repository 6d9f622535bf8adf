/*
 * proto_test: the message codec.  Round trips of every message, the fixture
 * files under tests/fixtures/proto, and generic defects built in code from
 * a valid encoding of each message (unknown, missing, duplicate keys, wrong
 * JSON types, ranges, versions, every truncation, trailing bytes).
 */
#include "proto.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef AIPROXY_SOURCE_DIR_DEFAULT
#define AIPROXY_SOURCE_DIR_DEFAULT "."
#endif

#define FIXTURE_MAX (256 * 1024)

/* A payload with a NUL, newlines and bytes that are not UTF-8. */
static const char test_payload[] = "{\"a\":1}\n\0\xff\xfe\r\n\x80tail";
#define TEST_PAYLOAD_LEN (sizeof(test_payload) - 1)

static Suite *proto_suite(void);

/* Typed entry points behind one signature, so tables can hold them. */
struct codec {
	int (*encode)(const void *m, char **ret_buf, size_t *ret_len);
	int (*decode)(const char *buf, size_t len, void *ret);
};

#define CODEC(T)                                                               \
	static int codec_enc_##T(                                              \
	    const void *m, char **ret_buf, size_t *ret_len)                    \
	{                                                                      \
		return msg_##T##_encode(m, ret_buf, ret_len);                  \
	}                                                                      \
	static int codec_dec_##T(const char *buf, size_t len, void *ret)       \
	{                                                                      \
		return msg_##T##_decode(buf, len, ret);                        \
	}

CODEC(ping)
CODEC(pong)
CODEC(limit_check)
CODEC(limit_verdict)
CODEC(limit_settle)
CODEC(quota_req)
CODEC(quota_resp)
CODEC(chat_req)
CODEC(chat_resp)
CODEC(stream_chunk)
CODEC(cancel)
CODEC(breaker_reset)
CODEC(cache_clear)
CODEC(usage_event)
CODEC(status_req)
CODEC(status_resp)
CODEC(analytics_req)
CODEC(analytics_resp)
CODEC(ack)
CODEC(usage_sync)
CODEC(usage_batch)
CODEC(usage_ack)
CODEC(cost_today_req)
CODEC(cost_today_resp)
CODEC(threat_report)
CODEC(block_list)
CODEC(block_list_resp)
CODEC(unblock)
CODEC(limit_settle_batch)
CODEC(limit_check_batch)
CODEC(limit_verdict_batch)
CODEC(breaker_state)
CODEC(worker_stats)

#define CODEC_ENTRY(E, T) [E] = {codec_enc_##T, codec_dec_##T}
static const struct codec codecs[MSG_MAX] = {
    CODEC_ENTRY(MSG_PING, ping),
    CODEC_ENTRY(MSG_PONG, pong),
    CODEC_ENTRY(MSG_LIMIT_CHECK, limit_check),
    CODEC_ENTRY(MSG_LIMIT_VERDICT, limit_verdict),
    CODEC_ENTRY(MSG_LIMIT_SETTLE, limit_settle),
    CODEC_ENTRY(MSG_QUOTA_REQ, quota_req),
    CODEC_ENTRY(MSG_QUOTA_RESP, quota_resp),
    CODEC_ENTRY(MSG_CHAT_REQ, chat_req),
    CODEC_ENTRY(MSG_CHAT_RESP, chat_resp),
    CODEC_ENTRY(MSG_STREAM_CHUNK, stream_chunk),
    CODEC_ENTRY(MSG_CANCEL, cancel),
    CODEC_ENTRY(MSG_BREAKER_RESET, breaker_reset),
    CODEC_ENTRY(MSG_CACHE_CLEAR, cache_clear),
    CODEC_ENTRY(MSG_USAGE_EVENT, usage_event),
    CODEC_ENTRY(MSG_STATUS_REQ, status_req),
    CODEC_ENTRY(MSG_STATUS_RESP, status_resp),
    CODEC_ENTRY(MSG_ANALYTICS_REQ, analytics_req),
    CODEC_ENTRY(MSG_ANALYTICS_RESP, analytics_resp),
    CODEC_ENTRY(MSG_ACK, ack),
    CODEC_ENTRY(MSG_USAGE_SYNC, usage_sync),
    CODEC_ENTRY(MSG_USAGE_BATCH, usage_batch),
    CODEC_ENTRY(MSG_USAGE_ACK, usage_ack),
    CODEC_ENTRY(MSG_COST_TODAY_REQ, cost_today_req),
    CODEC_ENTRY(MSG_COST_TODAY_RESP, cost_today_resp),
    CODEC_ENTRY(MSG_THREAT_REPORT, threat_report),
    CODEC_ENTRY(MSG_BLOCK_LIST, block_list),
    CODEC_ENTRY(MSG_BLOCK_LIST_RESP, block_list_resp),
    CODEC_ENTRY(MSG_UNBLOCK, unblock),
    CODEC_ENTRY(MSG_LIMIT_SETTLE_BATCH, limit_settle_batch),
    CODEC_ENTRY(MSG_LIMIT_CHECK_BATCH, limit_check_batch),
    CODEC_ENTRY(MSG_LIMIT_VERDICT_BATCH, limit_verdict_batch),
    CODEC_ENTRY(MSG_BREAKER_STATE, breaker_state),
    CODEC_ENTRY(MSG_WORKER_STATS, worker_stats),
};

#define SET(dst, src) snprintf((dst), sizeof(dst), "%s", (src))

/* The payload fields of u, or false for a message without payload. */
static bool
msg_payload(
    enum msg_type t, union proto_msg *u, const char ***ret_p, size_t **ret_len)
{
	switch (t) {
	case MSG_CHAT_REQ:
		*ret_p = &u->chat_req.payload;
		*ret_len = &u->chat_req.payload_len;
		return true;
	case MSG_CHAT_RESP:
		*ret_p = &u->chat_resp.payload;
		*ret_len = &u->chat_resp.payload_len;
		return true;
	case MSG_STREAM_CHUNK:
		*ret_p = &u->stream_chunk.payload;
		*ret_len = &u->stream_chunk.payload_len;
		return true;
	case MSG_STATUS_RESP:
		*ret_p = &u->status_resp.payload;
		*ret_len = &u->status_resp.payload_len;
		return true;
	case MSG_ANALYTICS_RESP:
		*ret_p = &u->analytics_resp.payload;
		*ret_len = &u->analytics_resp.payload_len;
		return true;
	case MSG_USAGE_BATCH:
		*ret_p = &u->usage_batch.payload;
		*ret_len = &u->usage_batch.payload_len;
		return true;
	case MSG_WORKER_STATS:
		*ret_p = &u->worker_stats.payload;
		*ret_len = &u->worker_stats.payload_len;
		return true;
	case MSG_BLOCK_LIST_RESP:
		*ret_p = &u->block_list_resp.payload;
		*ret_len = &u->block_list_resp.payload_len;
		return true;
	case MSG_LIMIT_SETTLE_BATCH:
		*ret_p = &u->limit_settle_batch.payload;
		*ret_len = &u->limit_settle_batch.payload_len;
		return true;
	case MSG_LIMIT_CHECK_BATCH:
		*ret_p = &u->limit_check_batch.payload;
		*ret_len = &u->limit_check_batch.payload_len;
		return true;
	case MSG_LIMIT_VERDICT_BATCH:
		*ret_p = &u->limit_verdict_batch.payload;
		*ret_len = &u->limit_verdict_batch.payload_len;
		return true;
	default:
		return false;
	}
}

/* A valid message of type t with distinctive, non-default values. */
static void
fill(enum msg_type t, union proto_msg *u)
{
	const char **pp;
	size_t *lp;

	memset(u, 0, sizeof(*u));
	switch (t) {
	case MSG_PING:
		SET(u->ping.request_id, "");
		u->ping.ts_us = 1700000000123456LL;
		break;
	case MSG_PONG:
		SET(u->pong.request_id, "ping-1");
		u->pong.ts_us = 1700000000123456LL;
		SET(u->pong.daemon, "ratelimiter");
		u->pong.pid = 4242;
		break;
	case MSG_LIMIT_CHECK:
		SET(u->limit_check.request_id, "req_01HV.x:y-z");
		SET(u->limit_check.subject_type, "session");
		SET(u->limit_check.subject_id, "sess \"quoted\" \xc3\xbc");
		SET(u->limit_check.ip, "2001:db8::1");
		SET(u->limit_check.provider, "claude");
		SET(u->limit_check.model, "claude-3-5-sonnet-20241022");
		u->limit_check.reserve_micro_usd = 123456;
		u->limit_check.threat = 1000;
		break;
	case MSG_LIMIT_VERDICT:
		SET(u->limit_verdict.request_id, "r1");
		u->limit_verdict.allow = false;
		SET(u->limit_verdict.code, "rate_limit_minute");
		u->limit_verdict.limit = 60;
		u->limit_verdict.remaining = 0;
		u->limit_verdict.reset_s = 37;
		u->limit_verdict.retry_after_s = 37;
		SET(u->limit_verdict.reservation_id, "");
		u->limit_verdict.degraded = true;
		break;
	case MSG_LIMIT_SETTLE:
		SET(u->limit_settle.request_id, "r2");
		SET(u->limit_settle.subject_type, "user");
		SET(u->limit_settle.subject_id, "user-42");
		SET(u->limit_settle.reservation_id, "res:r2:1");
		u->limit_settle.reserved_micro_usd = PROTO_MONEY_MAX;
		u->limit_settle.actual_micro_usd = 17;
		break;
	case MSG_QUOTA_REQ:
		SET(u->quota_req.request_id, "q1");
		SET(u->quota_req.subject_type, "user");
		SET(u->quota_req.subject_id, "alice");
		break;
	case MSG_QUOTA_RESP:
		SET(u->quota_resp.request_id, "q1");
		u->quota_resp.minute_limit = 60;
		u->quota_resp.minute_used = 3;
		u->quota_resp.hour_limit = 1000;
		u->quota_resp.hour_used = 33;
		u->quota_resp.cost_limit_micro_usd = 10000000;
		u->quota_resp.cost_used_micro_usd = 1234;
		u->quota_resp.cost_reserved_micro_usd = 5678;
		u->quota_resp.degraded = true;
		break;
	case MSG_CHAT_REQ:
		SET(u->chat_req.request_id, "chat-1");
		SET(u->chat_req.provider, "openai");
		SET(u->chat_req.model, "gpt-4o-mini");
		SET(u->chat_req.api, "chat_completions");
		u->chat_req.stream = true;
		SET(u->chat_req.stream_url, "tcp://127.0.0.1:7101");
		u->chat_req.deadline_ms = PROTO_MS_MAX;
		SET(u->chat_req.subject_type, "");
		SET(u->chat_req.subject_id, "");
		SET(u->chat_req.ip, "127.0.0.1");
		SET(u->chat_req.anthropic_beta, "prompt-caching-2024-07-31");
		break;
	case MSG_CHAT_RESP:
		SET(u->chat_resp.request_id, "chat-1");
		u->chat_resp.status = 429;
		SET(u->chat_resp.error_code, "rate_limit_error");
		SET(u->chat_resp.error_message,
		    "line1\nline2\t\x01 \"q\" \\ \xe2\x82\xac");
		u->chat_resp.upstream_status = 429;
		SET(u->chat_resp.provider, "claude");
		SET(u->chat_resp.model, "claude-3-haiku-20240307");
		u->chat_resp.input_tokens = 1;
		u->chat_resp.output_tokens = 2;
		u->chat_resp.cache_read_tokens = 3;
		u->chat_resp.cache_write_tokens = PROTO_TOKENS_MAX;
		u->chat_resp.cost_micro_usd = 99;
		u->chat_resp.cached = true;
		u->chat_resp.upstream_ms = 1234;
		u->chat_resp.retry_after_ms = 5000;
		u->chat_resp.chunks = 7;
		SET(u->chat_resp.upstream_request_id,
		    "req_011CSHoEeqs5C35K2UUqR7Fy");
		u->chat_resp.attempts = 3;
		u->chat_resp.fallback = true;
		break;
	case MSG_STREAM_CHUNK:
		SET(u->stream_chunk.request_id, "chat-1");
		u->stream_chunk.seq = 12;
		break;
	case MSG_CANCEL:
		SET(u->cancel.request_id, "chat-2");
		break;
	case MSG_BREAKER_RESET:
		SET(u->breaker_reset.request_id, "");
		SET(u->breaker_reset.provider, "openai");
		break;
	case MSG_CACHE_CLEAR:
		SET(u->cache_clear.request_id, "admin-7");
		SET(u->cache_clear.provider, "");
		break;
	case MSG_USAGE_EVENT:
		SET(u->usage_event.request_id, "chat-3");
		SET(u->usage_event.event_id, "w1:000000000042");
		u->usage_event.seq = 42;
		SET(u->usage_event.worker_id, "w1");
		u->usage_event.ts_ms = 1700000000123LL;
		SET(u->usage_event.subject_type, "user");
		SET(u->usage_event.subject_id, "bob");
		SET(u->usage_event.ip, "10.0.0.1");
		SET(u->usage_event.provider, "claude");
		SET(u->usage_event.model, "claude-3-opus-20240229");
		u->usage_event.input_tokens = 100;
		u->usage_event.output_tokens = 200;
		u->usage_event.cache_read_tokens = 300;
		u->usage_event.cache_write_tokens = 400;
		u->usage_event.cost_micro_usd = 16500;
		u->usage_event.cached = false;
		SET(u->usage_event.status, "aborted");
		u->usage_event.http_status = 0;
		u->usage_event.upstream_ms = 10;
		u->usage_event.total_ms = 12;
		break;
	case MSG_STATUS_REQ:
		SET(u->status_req.request_id, "s1");
		SET(u->status_req.what, "providers");
		break;
	case MSG_STATUS_RESP:
		SET(u->status_resp.request_id, "s1");
		SET(u->status_resp.daemon, "provider-worker");
		SET(u->status_resp.state, "degraded");
		break;
	case MSG_ANALYTICS_REQ:
		SET(u->analytics_req.request_id, "a1");
		SET(u->analytics_req.subject_type, "session");
		SET(u->analytics_req.subject_id, "s-9");
		u->analytics_req.days = 90;
		SET(u->analytics_req.provider, "openai");
		break;
	case MSG_ANALYTICS_RESP:
		SET(u->analytics_resp.request_id, "a1");
		u->analytics_resp.status = 200;
		break;
	case MSG_ACK:
		SET(u->ack.request_id, "r2");
		u->ack.ok = true;
		SET(u->ack.code, "ok");
		SET(u->ack.message, "");
		break;
	case MSG_USAGE_SYNC:
		SET(u->usage_sync.request_id, "");
		SET(u->usage_sync.worker_id, "w1:0123456789abcdef");
		u->usage_sync.last_seq = 77;
		break;
	case MSG_USAGE_BATCH:
		SET(u->usage_batch.request_id, "");
		SET(u->usage_batch.worker_id, "w1:0123456789abcdef");
		u->usage_batch.first_seq = 5;
		u->usage_batch.last_seq = 7;
		u->usage_batch.count = 3;
		break;
	case MSG_USAGE_ACK:
		SET(u->usage_ack.request_id, "");
		SET(u->usage_ack.worker_id, "w1:0123456789abcdef");
		u->usage_ack.committed_seq = 6;
		SET(u->usage_ack.code, "busy");
		break;
	case MSG_COST_TODAY_REQ:
		SET(u->cost_today_req.request_id, "q7");
		SET(u->cost_today_req.subject_type, "user");
		SET(u->cost_today_req.subject_id, "alice");
		break;
	case MSG_COST_TODAY_RESP:
		SET(u->cost_today_resp.request_id, "q7");
		SET(u->cost_today_resp.day, "2026-01-31");
		u->cost_today_resp.micro_usd = 123456;
		SET(u->cost_today_resp.code, "ok");
		break;
	case MSG_THREAT_REPORT:
		SET(u->threat_report.request_id, "gw-9");
		SET(u->threat_report.subject_type, "session");
		SET(u->threat_report.subject_id, "sess-0123456789abcdef");
		SET(u->threat_report.ip, "203.0.113.7");
		SET(u->threat_report.reason, "auth_failure");
		u->threat_report.points = 10;
		break;
	case MSG_BLOCK_LIST:
		SET(u->block_list.request_id, "admin-1");
		u->block_list.max = 100;
		break;
	case MSG_BLOCK_LIST_RESP:
		SET(u->block_list_resp.request_id, "admin-1");
		u->block_list_resp.total = 2;
		u->block_list_resp.degraded = true;
		break;
	case MSG_UNBLOCK:
		SET(u->unblock.request_id, "admin-2");
		SET(u->unblock.kind, "ip");
		SET(u->unblock.id, "203.0.113.7");
		break;
	case MSG_LIMIT_SETTLE_BATCH:
		SET(u->limit_settle_batch.request_id, "");
		u->limit_settle_batch.count = 3;
		break;
	case MSG_LIMIT_CHECK_BATCH:
		SET(u->limit_check_batch.request_id, "");
		u->limit_check_batch.count = 2;
		break;
	case MSG_LIMIT_VERDICT_BATCH:
		SET(u->limit_verdict_batch.request_id, "");
		u->limit_verdict_batch.count = 2;
		break;
	case MSG_BREAKER_STATE:
		SET(u->breaker_state.request_id, "");
		SET(u->breaker_state.worker_id, "w2");
		SET(u->breaker_state.provider, "claude");
		SET(u->breaker_state.target, "fallback");
		SET(u->breaker_state.state, "open");
		u->breaker_state.open_until_ms = 1700000030000LL;
		SET(u->breaker_state.reason, "consecutive_failures");
		break;
	case MSG_WORKER_STATS:
		SET(u->worker_stats.request_id, "");
		SET(u->worker_stats.worker_id, "w1");
		u->worker_stats.ts_ms = 1700000000123LL;
		break;
	default:
		ck_abort_msg("no filler for type %d", (int)t);
	}
	if (msg_payload(t, u, &pp, &lp)) {
		*pp = test_payload;
		*lp = TEST_PAYLOAD_LEN;
	}
}

/* Encodes a filled message of type t; caller frees *ret_buf. */
static void
encode_valid(enum msg_type t, char **ret_buf, size_t *ret_len)
{
	union proto_msg u;

	fill(t, &u);
	ck_assert_int_eq(codecs[t].encode(&u, ret_buf, ret_len), 0);
}

/* Splits an encoding into its header object and payload (borrowed). */
static json_t *
split(const char *buf, size_t len, const char **ret_payload, size_t *ret_plen)
{
	const char *nl = memchr(buf, '\n', len);
	json_error_t err;
	json_t *hdr;

	ck_assert_ptr_nonnull(nl);
	hdr = json_loadb(buf, (size_t)(nl - buf), 0, &err);
	ck_assert_msg(hdr != NULL, "header: %s", err.text);
	*ret_payload = nl + 1;
	*ret_plen = len - (size_t)(nl - buf) - 1;
	return hdr;
}

/* header text + '\n' + payload, in a new buffer (caller frees). */
static char *
join(const char *hdr, size_t hlen, const char *payload, size_t plen,
    size_t *ret_len)
{
	char *buf = malloc(hlen + 1 + plen);

	ck_assert_ptr_nonnull(buf);
	memcpy(buf, hdr, hlen);
	buf[hlen] = '\n';
	if (plen > 0)
		memcpy(buf + hlen + 1, payload, plen);
	*ret_len = hlen + 1 + plen;
	return buf;
}

/*
 * Decodes hdr + '\n' + payload as type t; returns the decoder's result.
 * *ret_buf is the decoded buffer, which ret's payload borrows (caller frees).
 */
static int
decode_keep(enum msg_type t, json_t *hdr, const char *payload, size_t plen,
    union proto_msg *ret, char **ret_buf)
{
	char *line;
	size_t len;
	int rc;

	line = json_dumps(hdr, JSON_COMPACT);
	ck_assert_ptr_nonnull(line);
	*ret_buf = join(line, strlen(line), payload, plen, &len);
	rc = codecs[t].decode(*ret_buf, len, ret);
	free(line);
	return rc;
}

static int
decode_with(enum msg_type t, json_t *hdr, const char *payload, size_t plen,
    union proto_msg *ret)
{
	char *buf;
	int rc;

	rc = decode_keep(t, hdr, payload, plen, ret, &buf);
	free(buf);
	return rc;
}

static bool
is_payload_type(enum msg_type t)
{
	union proto_msg u;
	const char **pp;
	size_t *lp;

	return msg_payload(t, &u, &pp, &lp);
}

/* ---- round trips ---- */

static void
check_round_trip(enum msg_type t, union proto_msg *in)
{
	union proto_msg out, again;
	const char **in_p, **out_p;
	size_t *in_l, *out_l;
	char *buf, *buf2, *nl;
	size_t len, len2, size = proto_msg_size(t);
	enum msg_type peek;

	ck_assert_uint_gt(size, 0);
	ck_assert_int_eq(codecs[t].encode(in, &buf, &len), 0);
	/* One header line, then exactly the payload. */
	nl = memchr(buf, '\n', len);
	ck_assert_ptr_nonnull(nl);
	ck_assert_uint_le((size_t)(nl - buf), PROTO_HEADER_MAX);
	ck_assert_int_eq(buf[0], '{');
	ck_assert_int_eq(nl[-1], '}');
	ck_assert_int_eq(proto_peek_type(buf, len, &peek), 0);
	ck_assert_int_eq(peek, t);

	memset(&out, 0x5a, sizeof(out));
	ck_assert_int_eq(codecs[t].decode(buf, len, &out), 0);
	if (msg_payload(t, in, &in_p, &in_l)) {
		msg_payload(t, &out, &out_p, &out_l);
		ck_assert_uint_eq(*out_l, *in_l);
		ck_assert_uint_eq((size_t)(nl + 1 + *in_l - buf), len);
		/* Borrowed: points into buf, right after the header. */
		ck_assert_ptr_eq(*out_p, nl + 1);
		if (*in_l > 0)
			ck_assert_mem_eq(*out_p, *in_p, *in_l);
		*in_p = *out_p;
	} else {
		ck_assert_uint_eq((size_t)(nl + 1 - buf), len);
	}
	ck_assert_msg(
	    memcmp(in, &out, size) == 0, "%s fields differ", msg_type_str(t));

	/* The generic decoder agrees, and re-encoding is byte-identical. */
	memset(&again, 0, sizeof(again));
	ck_assert_int_eq(proto_msg_decode(t, buf, len, &again), 0);
	ck_assert_msg(memcmp(&again, &out, size) == 0, "generic differs");
	ck_assert_int_eq(proto_msg_encode(t, &out, &buf2, &len2), 0);
	ck_assert_uint_eq(len2, len);
	ck_assert_mem_eq(buf2, buf, len);
	free(buf2);
	free(buf);
}

START_TEST(test_round_trip)
{
	enum msg_type t = (enum msg_type)_i;
	union proto_msg in;

	fill(t, &in);
	check_round_trip(t, &in);
}
END_TEST

/* Every payload-carrying message also round-trips an empty payload. */
START_TEST(test_round_trip_empty_payload)
{
	enum msg_type t = (enum msg_type)_i;
	union proto_msg in;
	const char **pp;
	size_t *lp;

	fill(t, &in);
	if (!msg_payload(t, &in, &pp, &lp))
		return;
	*pp = NULL;
	*lp = 0;
	check_round_trip(t, &in);
}
END_TEST

/* Strings at their full length, with every character their class allows. */
START_TEST(test_round_trip_max_strings)
{
	union proto_msg in;
	size_t i;

	fill(MSG_CHAT_RESP, &in);
	memset(in.chat_resp.request_id, 'a', PROTO_ID_MAX);
	in.chat_resp.request_id[PROTO_ID_MAX] = '\0';
	for (i = 0; i < PROTO_MSG_TEXT_MAX; i++)
		in.chat_resp.error_message[i] = (char)(1 + i % 127);
	in.chat_resp.error_message[PROTO_MSG_TEXT_MAX] = '\0';
	SET(in.chat_resp.upstream_request_id,
	    "AZaz09._:-AZaz09._:-AZaz09._:-AZaz09._:-AZaz09._:-AZaz09._:-abcd");
	ck_assert_uint_eq(
	    strlen(in.chat_resp.upstream_request_id), PROTO_ID_MAX);
	check_round_trip(MSG_CHAT_RESP, &in);

	fill(MSG_CHAT_REQ, &in);
	memset(in.chat_req.anthropic_beta, 'b', PROTO_MSG_TEXT_MAX);
	in.chat_req.anthropic_beta[PROTO_MSG_TEXT_MAX] = '\0';
	memset(in.chat_req.stream_url, 'u', PROTO_URL_MAX);
	in.chat_req.stream_url[PROTO_URL_MAX] = '\0';
	/* 42 three-byte characters: 126 bytes of a 128-byte subject. */
	for (i = 0; i < 42; i++)
		memcpy(in.chat_req.subject_id + 3 * i, "\xe2\x82\xac", 3);
	in.chat_req.subject_id[126] = '\0';
	check_round_trip(MSG_CHAT_REQ, &in);
}
END_TEST

/* ---- generic defects, built from each valid encoding ---- */

START_TEST(test_truncated)
{
	enum msg_type t = (enum msg_type)_i;
	union proto_msg out;
	size_t len, n;
	char *buf, *cut;

	encode_valid(t, &buf, &len);
	for (n = 0; n < len; n++) {
		/* A fresh allocation of exactly n bytes, so ASan sees
		 * overreads. */
		cut = malloc(n > 0 ? n : 1);
		ck_assert_ptr_nonnull(cut);
		memcpy(cut, buf, n);
		ck_assert_msg(codecs[t].decode(cut, n, &out) == -EPROTO,
		    "%s prefix %zu of %zu accepted", msg_type_str(t), n, len);
		free(cut);
	}
	ck_assert_int_eq(codecs[t].decode(NULL, 0, &out), -EPROTO);
	free(buf);
}
END_TEST

START_TEST(test_trailing)
{
	enum msg_type t = (enum msg_type)_i;
	union proto_msg out;
	const char *payload;
	size_t len, plen, len2;
	char *buf, *buf2;
	json_t *hdr;

	encode_valid(t, &buf, &len);
	buf2 = malloc(len + 1);
	ck_assert_ptr_nonnull(buf2);
	memcpy(buf2, buf, len);
	buf2[len] = 'x';
	ck_assert_int_eq(codecs[t].decode(buf2, len + 1, &out), -EPROTO);
	buf2[len] = '\n';
	ck_assert_int_eq(codecs[t].decode(buf2, len + 1, &out), -EPROTO);
	buf2[len] = '\0';
	ck_assert_int_eq(codecs[t].decode(buf2, len + 1, &out), -EPROTO);
	free(buf2);

	/* A payload longer or shorter than payload_len. */
	hdr = split(buf, len, &payload, &plen);
	if (is_payload_type(t)) {
		json_object_set_new(
		    hdr, "payload_len", json_integer((json_int_t)plen - 1));
		ck_assert_int_eq(
		    decode_with(t, hdr, payload, plen, &out), -EPROTO);
		json_object_set_new(
		    hdr, "payload_len", json_integer((json_int_t)plen + 1));
		ck_assert_int_eq(
		    decode_with(t, hdr, payload, plen, &out), -EPROTO);
	}
	/* Garbage after the JSON, inside the header line. */
	buf2 = json_dumps(hdr, JSON_COMPACT);
	ck_assert_ptr_nonnull(buf2);
	len2 = strlen(buf2);
	buf2 = realloc(buf2, len2 + 3);
	ck_assert_ptr_nonnull(buf2);
	memcpy(buf2 + len2, "{}", 3);
	json_decref(hdr);
	free(buf);
	buf = join(buf2, len2 + 2, payload, 0, &len);
	ck_assert_int_eq(codecs[t].decode(buf, len, &out), -EPROTO);
	free(buf);
	free(buf2);
}
END_TEST

START_TEST(test_unknown_key)
{
	enum msg_type t = (enum msg_type)_i;
	union proto_msg out;
	const char *payload;
	size_t len, plen;
	json_t *hdr;
	char *buf;

	encode_valid(t, &buf, &len);
	hdr = split(buf, len, &payload, &plen);
	json_object_set_new(hdr, "zzz", json_integer(1));
	ck_assert_int_eq(decode_with(t, hdr, payload, plen, &out), -EPROTO);
	json_object_del(hdr, "zzz");
	/* Case matters, and payload_len is unknown where there is no payload.
	 */
	json_object_set_new(hdr, "Request_id", json_string("x"));
	ck_assert_int_eq(decode_with(t, hdr, payload, plen, &out), -EPROTO);
	json_object_del(hdr, "Request_id");
	if (!is_payload_type(t)) {
		json_object_set_new(hdr, "payload_len", json_integer(0));
		ck_assert_int_eq(
		    decode_with(t, hdr, payload, plen, &out), -EPROTO);
		json_object_del(hdr, "payload_len");
	}
	ck_assert_int_eq(decode_with(t, hdr, payload, plen, &out), 0);
	json_decref(hdr);
	free(buf);
}
END_TEST

START_TEST(test_missing_key)
{
	enum msg_type t = (enum msg_type)_i;
	union proto_msg out;
	const char *payload, *key;
	size_t len, plen, nkeys, i;
	json_t *hdr, *copy, *val;
	char *buf;

	encode_valid(t, &buf, &len);
	hdr = split(buf, len, &payload, &plen);
	nkeys = json_object_size(hdr);
	ck_assert_uint_ge(nkeys, 3);
	for (i = 0; i < nkeys; i++) {
		size_t j = 0;

		copy = json_deep_copy(hdr);
		json_object_foreach(hdr, key, val) {
			if (j++ == i)
				json_object_del(copy, key);
		}
		ck_assert_uint_eq(json_object_size(copy), nkeys - 1);
		ck_assert_msg(
		    decode_with(t, copy, payload, plen, &out) == -EPROTO,
		    "%s without key %zu accepted", msg_type_str(t), i);
		json_decref(copy);
	}
	json_decref(hdr);
	free(buf);
}
END_TEST

/* A JSON value of a type other than val's. */
static json_t *
wrong_type(const json_t *val)
{
	if (json_is_string(val))
		return json_integer(1);
	if (json_is_integer(val))
		return json_string("1");
	return json_integer(1); /* for booleans */
}

START_TEST(test_wrong_type)
{
	enum msg_type t = (enum msg_type)_i;
	union proto_msg out;
	const char *payload, *key;
	size_t len, plen;
	json_t *hdr, *copy, *val;
	json_t *others[5];
	char *buf;
	size_t k;

	encode_valid(t, &buf, &len);
	hdr = split(buf, len, &payload, &plen);
	json_object_foreach(hdr, key, val) {
		copy = json_deep_copy(hdr);
		json_object_set_new(copy, key, wrong_type(val));
		ck_assert_msg(
		    decode_with(t, copy, payload, plen, &out) == -EPROTO,
		    "%s.%s with a wrong type accepted", msg_type_str(t), key);
		/* Nor null, arrays, objects or reals for any key. */
		others[0] = json_null();
		others[1] = json_array();
		others[2] = json_object();
		others[3] = json_real(1.0);
		others[4] =
		    json_is_boolean(val) ? json_string("true") : json_true();
		for (k = 0; k < 5; k++) {
			json_object_set_new(copy, key, others[k]);
			ck_assert_msg(decode_with(t, copy, payload, plen,
					  &out) == -EPROTO,
			    "%s.%s: value %zu accepted", msg_type_str(t), key,
			    k);
		}
		json_decref(copy);
	}
	json_decref(hdr);
	free(buf);
}
END_TEST

/*
 * Every integer field is >= 0 and every string field shorter than 1000
 * bytes, so -1 and a 1000-byte string are out of range for all of them.
 */
START_TEST(test_out_of_range)
{
	enum msg_type t = (enum msg_type)_i;
	union proto_msg out;
	const char *payload, *key;
	size_t len, plen;
	json_t *hdr, *copy, *val;
	char *buf, big[1001];
	int want;

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	encode_valid(t, &buf, &len);
	hdr = split(buf, len, &payload, &plen);
	json_object_foreach(hdr, key, val) {
		if (json_is_boolean(val))
			continue;
		copy = json_deep_copy(hdr);
		if (json_is_integer(val)) {
			json_object_set_new(copy, key, json_integer(-1));
			want =
			    strcmp(key, "v") == 0 ? -EPROTONOSUPPORT : -ERANGE;
		} else {
			json_object_set_new(copy, key, json_string(big));
			want = strcmp(key, "type") == 0 ? -EPROTO : -ERANGE;
		}
		ck_assert_msg(decode_with(t, copy, payload, plen, &out) == want,
		    "%s.%s out of range not refused", msg_type_str(t), key);
		json_decref(copy);
	}
	json_decref(hdr);
	free(buf);
}
END_TEST

START_TEST(test_bad_version)
{
	enum msg_type t = (enum msg_type)_i;
	union proto_msg out;
	const char *payload;
	size_t len, plen;
	json_t *hdr;
	char *buf;

	encode_valid(t, &buf, &len);
	hdr = split(buf, len, &payload, &plen);
	json_object_set_new(hdr, "v", json_integer(PROTO_VERSION + 1));
	ck_assert_int_eq(
	    decode_with(t, hdr, payload, plen, &out), -EPROTONOSUPPORT);
	json_object_set_new(hdr, "v", json_integer(0));
	ck_assert_int_eq(
	    decode_with(t, hdr, payload, plen, &out), -EPROTONOSUPPORT);
	json_object_set_new(hdr, "v", json_real(1.0));
	ck_assert_int_eq(decode_with(t, hdr, payload, plen, &out), -EPROTO);
	json_object_set_new(hdr, "v", json_integer(PROTO_VERSION));
	ck_assert_int_eq(decode_with(t, hdr, payload, plen, &out), 0);
	json_decref(hdr);
	free(buf);
}
END_TEST

START_TEST(test_duplicate_key)
{
	enum msg_type t = (enum msg_type)_i;
	union proto_msg out;
	const char *dups[] = {
	    "{\"v\":1,", "{\"request_id\":\"dup\",", "{\"type\":\"ping\","};
	char *buf, *buf2, *nl;
	size_t len, len2, i, dlen;

	encode_valid(t, &buf, &len);
	ck_assert_int_eq(buf[0], '{');
	for (i = 0; i < sizeof(dups) / sizeof(dups[0]); i++) {
		dlen = strlen(dups[i]);
		len2 = len - 1 + dlen;
		buf2 = malloc(len2);
		ck_assert_ptr_nonnull(buf2);
		memcpy(buf2, dups[i], dlen);
		memcpy(buf2 + dlen, buf + 1, len - 1);
		nl = memchr(buf2, '\n', len2);
		ck_assert_ptr_nonnull(nl);
		ck_assert_msg(codecs[t].decode(buf2, len2, &out) == -EPROTO,
		    "%s duplicate %zu accepted", msg_type_str(t), i);
		free(buf2);
	}
	free(buf);
}
END_TEST

/* Decoded by any other decoder, a message is refused. */
START_TEST(test_wrong_decoder)
{
	enum msg_type t = (enum msg_type)_i;
	union proto_msg out;
	size_t len;
	char *buf;
	int o;

	encode_valid(t, &buf, &len);
	for (o = MSG_NONE + 1; o < MSG_MAX; o++) {
		if (o == (int)t)
			continue;
		ck_assert_int_eq(codecs[o].decode(buf, len, &out), -EPROTO);
	}
	ck_assert_int_eq(proto_msg_decode(MSG_NONE, buf, len, &out), -EINVAL);
	ck_assert_int_eq(proto_msg_decode(MSG_MAX, buf, len, &out), -EINVAL);
	free(buf);
}
END_TEST

/* buf with pad blanks after its opening '{' (caller frees). */
static char *
pad_header(const char *buf, size_t len, size_t pad, size_t *ret_len)
{
	char *out = malloc(len + pad);

	ck_assert_ptr_nonnull(out);
	out[0] = '{';
	memset(out + 1, ' ', pad);
	memcpy(out + 1 + pad, buf + 1, len - 1);
	*ret_len = len + pad;
	return out;
}

/* Padding the header with blanks: PROTO_HEADER_MAX is fine, one more not. */
START_TEST(test_header_max)
{
	enum msg_type t = (enum msg_type)_i;
	union proto_msg out;
	size_t len, hlen, len2;
	char *buf, *buf2, *nl;

	encode_valid(t, &buf, &len);
	nl = memchr(buf, '\n', len);
	hlen = (size_t)(nl - buf);
	ck_assert_uint_lt(hlen, PROTO_HEADER_MAX);

	buf2 = pad_header(buf, len, PROTO_HEADER_MAX - hlen, &len2);
	ck_assert_int_eq(codecs[t].decode(buf2, len2, &out), 0);
	free(buf2);
	buf2 = pad_header(buf, len, PROTO_HEADER_MAX - hlen + 1, &len2);
	ck_assert_int_eq(codecs[t].decode(buf2, len2, &out), -EPROTO);
	free(buf2);
	free(buf);
}
END_TEST

/* ---- boundaries, one table ---- */

struct bound_case {
	enum msg_type type;
	const char *key;
	const char *json; /* the value, as JSON text */
	int want;
};

static const struct bound_case bound_cases[] = {
    {MSG_PING, "request_id", "\"\"", 0},
    {MSG_PING, "ts_us", "9223372036854775807", 0},
    {MSG_PING, "request_id", "\"a b\"", -ERANGE},
    {MSG_PING, "request_id", "\"a/b\"", -ERANGE},
    {MSG_PING, "request_id",
	"\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
	0},
    {MSG_PING, "request_id",
	"\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
	-ERANGE},
    {MSG_PING, "ts_us", "9223372036854775808", -EPROTO},
    {MSG_PONG, "pid", "0", -ERANGE},
    {MSG_PONG, "pid", "2147483647", 0},
    {MSG_PONG, "pid", "2147483648", -ERANGE},
    {MSG_PONG, "daemon", "\"\"", -ERANGE},
    {MSG_LIMIT_CHECK, "request_id", "\"\"", -ERANGE},
    {MSG_LIMIT_CHECK, "threat", "1001", -ERANGE},
    {MSG_LIMIT_CHECK, "threat", "0", 0},
    {MSG_LIMIT_CHECK, "subject_type", "\"user\"", 0},
    {MSG_LIMIT_CHECK, "subject_type", "\"admin\"", -ERANGE},
    {MSG_LIMIT_CHECK, "subject_type", "\"\"", -ERANGE},
    {MSG_LIMIT_CHECK, "subject_type", "\"User\"", -ERANGE},
    {MSG_LIMIT_CHECK, "subject_type", "\"sessionsessionsession\"", -ERANGE},
    {MSG_LIMIT_CHECK, "subject_id", "\"\"", -ERANGE},
    {MSG_LIMIT_CHECK, "subject_id", "\"a\\u0001b\"", -ERANGE},
    {MSG_LIMIT_CHECK, "subject_id", "\"a\\u0000b\"", -EPROTO},
    {MSG_LIMIT_CHECK, "ip", "\"\"", -ERANGE},
    {MSG_LIMIT_CHECK, "model", "\"m\\nx\"", -ERANGE},
    {MSG_LIMIT_CHECK, "model", "\"m\\u007fx\"", -ERANGE},
    {MSG_LIMIT_CHECK, "model", "\"\\u00fc\\ud83d\\ude00\"", 0},
    {MSG_LIMIT_CHECK, "reserve_micro_usd", "1000000000000", 0},
    {MSG_LIMIT_CHECK, "reserve_micro_usd", "1000000000001", -ERANGE},
    {MSG_LIMIT_VERDICT, "allow", "true", -ERANGE},
    {MSG_LIMIT_VERDICT, "code", "\"ok\"", -ERANGE},
    {MSG_LIMIT_VERDICT, "code", "\"\"", -ERANGE},
    {MSG_LIMIT_VERDICT, "code", "\"rate limit\"", -ERANGE},
    {MSG_LIMIT_VERDICT, "retry_after_s", "604800", 0},
    {MSG_LIMIT_VERDICT, "retry_after_s", "604801", -ERANGE},
    {MSG_LIMIT_VERDICT, "reservation_id", "\"res-1\"", 0},
    {MSG_LIMIT_SETTLE, "reservation_id", "\"\"", -ERANGE},
    {MSG_LIMIT_SETTLE, "actual_micro_usd", "0", 0},
    {MSG_LIMIT_SETTLE, "actual_micro_usd", "-5", -ERANGE},
    {MSG_QUOTA_REQ, "subject_type", "\"session\"", 0},
    {MSG_QUOTA_REQ, "subject_id", "\"\"", -ERANGE},
    {MSG_QUOTA_RESP, "hour_used", "1000000000", 0},
    {MSG_QUOTA_RESP, "hour_used", "1000000001", -ERANGE},
    {MSG_CHAT_REQ, "provider", "\"claude\"", 0},
    {MSG_CHAT_REQ, "provider", "\"gemini\"", -ERANGE},
    {MSG_CHAT_REQ, "api", "\"messages\"", 0},
    {MSG_CHAT_REQ, "api", "\"completions\"", -ERANGE},
    {MSG_CHAT_REQ, "stream", "false", -ERANGE},
    {MSG_CHAT_REQ, "stream_url", "\"\"", -ERANGE},
    {MSG_CHAT_REQ, "deadline_ms", "0", -ERANGE},
    {MSG_CHAT_REQ, "deadline_ms", "1", 0},
    {MSG_CHAT_REQ, "deadline_ms", "86400001", -ERANGE},
    {MSG_CHAT_REQ, "subject_type", "\"user\"", 0},
    {MSG_CHAT_REQ, "subject_type", "\"ip\"", -ERANGE},
    {MSG_CHAT_REQ, "model", "\"\"", -ERANGE},
    {MSG_CHAT_REQ, "payload_len", "16777217", -ERANGE},
    {MSG_CHAT_REQ, "payload_len", "-1", -ERANGE},
    {MSG_CHAT_RESP, "status", "200", 0},
    {MSG_CHAT_RESP, "status", "0", -ERANGE},
    {MSG_CHAT_RESP, "status", "99", -ERANGE},
    {MSG_CHAT_RESP, "status", "600", -ERANGE},
    {MSG_CHAT_RESP, "upstream_status", "0", 0},
    {MSG_CHAT_RESP, "upstream_status", "100", 0},
    {MSG_CHAT_RESP, "upstream_status", "599", 0},
    {MSG_CHAT_RESP, "upstream_status", "99", -ERANGE},
    {MSG_CHAT_RESP, "upstream_status", "600", -ERANGE},
    {MSG_CHAT_RESP, "error_message", "\"tab\\tnl\\n\\u0001\"", 0},
    {MSG_CHAT_RESP, "error_code", "\"bad code\"", -ERANGE},
    {MSG_CHAT_RESP, "upstream_request_id", "\"req=1\"", -ERANGE},
    {MSG_CHAT_RESP, "retry_after_ms", "86400000", 0},
    {MSG_CHAT_RESP, "retry_after_ms", "86400001", -ERANGE},
    {MSG_CHAT_RESP, "chunks", "1000000001", -ERANGE},
    {MSG_CHAT_RESP, "attempts", "0", 0},
    {MSG_CHAT_RESP, "attempts", "101", -ERANGE},
    {MSG_CHAT_RESP, "attempts", "-1", -ERANGE},
    {MSG_BREAKER_STATE, "state", "\"half_open\"", -ERANGE},
    {MSG_BREAKER_STATE, "open_until_ms", "0", -ERANGE},
    {MSG_BREAKER_STATE, "provider", "\"gemini\"", -ERANGE},
    {MSG_BREAKER_STATE, "target", "\"primary\"", 0},
    {MSG_BREAKER_STATE, "target", "\"other\"", -ERANGE},
    {MSG_BREAKER_STATE, "worker_id", "\"\"", -ERANGE},
    {MSG_BREAKER_STATE, "reason", "\"no way\"", -ERANGE},
    {MSG_WORKER_STATS, "worker_id", "\"\"", -ERANGE},
    {MSG_WORKER_STATS, "ts_ms", "-1", -ERANGE},
    {MSG_STREAM_CHUNK, "seq", "0", 0},
    {MSG_STREAM_CHUNK, "request_id", "\"\"", -ERANGE},
    {MSG_CANCEL, "request_id", "\"\"", -ERANGE},
    {MSG_BREAKER_RESET, "provider", "\"\"", -ERANGE},
    {MSG_CACHE_CLEAR, "provider", "\"claude\"", 0},
    {MSG_USAGE_EVENT, "event_id", "\"\"", -ERANGE},
    {MSG_USAGE_EVENT, "event_id", "\"e#1\"", -ERANGE},
    {MSG_USAGE_EVENT, "status", "\"ok\"", 0},
    {MSG_USAGE_EVENT, "status", "\"error\"", 0},
    {MSG_USAGE_EVENT, "status", "\"fine\"", -ERANGE},
    {MSG_USAGE_EVENT, "http_status", "200", 0},
    {MSG_USAGE_EVENT, "http_status", "42", -ERANGE},
    {MSG_USAGE_EVENT, "subject_type", "\"\"", 0},
    {MSG_USAGE_EVENT, "total_ms", "86400001", -ERANGE},
    {MSG_STATUS_REQ, "what", "\"\"", -ERANGE},
    {MSG_STATUS_RESP, "state", "\"up\"", 0},
    {MSG_STATUS_RESP, "state", "\"down\"", 0},
    {MSG_STATUS_RESP, "state", "\"sideways\"", -ERANGE},
    {MSG_ANALYTICS_REQ, "days", "1", 0},
    {MSG_ANALYTICS_REQ, "days", "0", -ERANGE},
    {MSG_ANALYTICS_REQ, "days", "91", -ERANGE},
    {MSG_ANALYTICS_REQ, "subject_type", "\"\"", 0},
    {MSG_ANALYTICS_RESP, "status", "599", 0},
    {MSG_ANALYTICS_RESP, "status", "600", -ERANGE},
    {MSG_ACK, "code", "\"not_found\"", 0},
    {MSG_ACK, "message", "\"\\u00e9\\n\"", 0},
    {MSG_USAGE_SYNC, "worker_id", "\"\"", -ERANGE},
    {MSG_USAGE_SYNC, "last_seq", "0", 0},
    {MSG_USAGE_SYNC, "last_seq", "-1", -ERANGE},
    {MSG_USAGE_BATCH, "first_seq", "0", -ERANGE},
    {MSG_USAGE_BATCH, "first_seq", "6", -ERANGE},
    {MSG_USAGE_BATCH, "count", "0", -ERANGE},
    {MSG_USAGE_BATCH, "count", "1001", -ERANGE},
    {MSG_USAGE_BATCH, "last_seq", "4", -ERANGE},
    {MSG_USAGE_ACK, "code", "\"ok\"", 0},
    {MSG_USAGE_ACK, "code", "\"unavailable\"", 0},
    {MSG_USAGE_ACK, "code", "\"maybe\"", -ERANGE},
    {MSG_USAGE_ACK, "committed_seq", "-1", -ERANGE},
    {MSG_COST_TODAY_REQ, "subject_type", "\"\"", -ERANGE},
    {MSG_COST_TODAY_REQ, "subject_id", "\"\"", -ERANGE},
    {MSG_COST_TODAY_RESP, "day", "\"\"", -ERANGE},
    {MSG_COST_TODAY_RESP, "micro_usd", "1000000000001", -ERANGE},
    {MSG_THREAT_REPORT, "points", "0", -ERANGE},
    {MSG_THREAT_REPORT, "points", "1000", 0},
    {MSG_THREAT_REPORT, "points", "1001", -ERANGE},
    {MSG_THREAT_REPORT, "subject_type", "\"\"", -ERANGE},
    {MSG_THREAT_REPORT, "subject_id", "\"\"", -ERANGE},
    {MSG_THREAT_REPORT, "ip", "\"\"", -ERANGE},
    {MSG_THREAT_REPORT, "reason", "\"\"", -ERANGE},
    {MSG_THREAT_REPORT, "reason", "\"bad reason\"", -ERANGE},
    {MSG_BLOCK_LIST, "max", "0", -ERANGE},
    {MSG_BLOCK_LIST, "max", "1000", 0},
    {MSG_BLOCK_LIST, "max", "1001", -ERANGE},
    {MSG_BLOCK_LIST_RESP, "total", "0", 0},
    {MSG_UNBLOCK, "kind", "\"user\"", 0},
    {MSG_UNBLOCK, "kind", "\"admin\"", -ERANGE},
    {MSG_UNBLOCK, "id", "\"\"", -ERANGE},
};

START_TEST(test_bounds)
{
	const struct bound_case *c = &bound_cases[_i];
	union proto_msg out, again;
	const char *payload;
	size_t len, plen, len2;
	json_error_t err;
	json_t *hdr, *val;
	char *buf, *buf2, *dec = NULL;
	int rc;

	encode_valid(c->type, &buf, &len);
	hdr = split(buf, len, &payload, &plen);
	ck_assert_ptr_nonnull(json_object_get(hdr, c->key));
	val = json_loads(c->json, JSON_DECODE_ANY, &err);
	if (val == NULL) {
		/* Not representable in jansson: splice the text in. */
		char line[PROTO_HEADER_MAX];
		int n;

		json_object_set_new(hdr, c->key, json_integer(1234567));
		buf2 = json_dumps(hdr, JSON_COMPACT);
		ck_assert_ptr_nonnull(buf2);
		n = snprintf(line, sizeof(line), "%.*s%s%s",
		    (int)(strstr(buf2, ":1234567") + 1 - buf2), buf2, c->json,
		    strstr(buf2, ":1234567") + 8);
		ck_assert_int_lt(n, (int)sizeof(line));
		free(buf2);
		dec = join(line, (size_t)n, payload, plen, &len2);
		rc = codecs[c->type].decode(dec, len2, &out);
	} else {
		json_object_set_new(hdr, c->key, val);
		rc = decode_keep(c->type, hdr, payload, plen, &out, &dec);
	}
	ck_assert_msg(rc == c->want, "%s.%s=%s: got %d, want %d",
	    msg_type_str(c->type), c->key, c->json, rc, c->want);
	if (rc == 0) {
		/* What decodes also encodes, and decodes again the same. */
		ck_assert_int_eq(codecs[c->type].encode(&out, &buf2, &len2), 0);
		ck_assert_int_eq(codecs[c->type].decode(buf2, len2, &again), 0);
		free(buf2);
	}
	free(dec);
	json_decref(hdr);
	free(buf);
}
END_TEST

/* ---- encoding refuses invalid structs ---- */

static void
bad_rid_unterminated(union proto_msg *u)
{
	memset(u->ping.request_id, 'a', sizeof(u->ping.request_id));
}

static void
bad_rid_char(union proto_msg *u)
{
	SET(u->chat_req.request_id, "id with space");
}

static void
bad_stream_no_url(union proto_msg *u)
{
	u->chat_req.stream_url[0] = '\0';
}

static void
bad_url_no_stream(union proto_msg *u)
{
	u->chat_req.stream = false;
}

static void
bad_payload_null(union proto_msg *u)
{
	u->chat_req.payload = NULL;
}

static void
bad_payload_big(union proto_msg *u)
{
	u->chat_req.payload_len = PROTO_PAYLOAD_MAX + 1;
}

static void
bad_threat(union proto_msg *u)
{
	u->limit_check.threat = PROTO_THREAT_MAX + 1;
}

static void
bad_subject_type(union proto_msg *u)
{
	SET(u->limit_check.subject_type, "admin");
}

static void
bad_verdict_code(union proto_msg *u)
{
	u->limit_verdict.allow = true;
}

static void
bad_invalid_utf8(union proto_msg *u)
{
	SET(u->chat_resp.error_message, "bad \xff utf8");
}

static void
bad_overlong_utf8(union proto_msg *u)
{
	SET(u->chat_resp.error_message, "overlong \xc0\xaf");
}

static void
bad_surrogate(union proto_msg *u)
{
	SET(u->chat_resp.error_message, "surrogate \xed\xa0\x80");
}

static void
bad_http_status(union proto_msg *u)
{
	u->usage_event.http_status = 99;
}

static void
bad_cancel_empty(union proto_msg *u)
{
	u->cancel.request_id[0] = '\0';
}

static void
bad_days(union proto_msg *u)
{
	u->analytics_req.days = 0;
}

static void
bad_negative_money(union proto_msg *u)
{
	u->usage_event.cost_micro_usd = -1;
}

struct bad_case {
	enum msg_type type;
	void (*spoil)(union proto_msg *u);
};

static const struct bad_case bad_cases[] = {
    {MSG_PING, bad_rid_unterminated},
    {MSG_CHAT_REQ, bad_rid_char},
    {MSG_CHAT_REQ, bad_stream_no_url},
    {MSG_CHAT_REQ, bad_url_no_stream},
    {MSG_CHAT_REQ, bad_payload_null},
    {MSG_CHAT_REQ, bad_payload_big},
    {MSG_LIMIT_CHECK, bad_threat},
    {MSG_LIMIT_CHECK, bad_subject_type},
    {MSG_LIMIT_VERDICT, bad_verdict_code},
    {MSG_CHAT_RESP, bad_invalid_utf8},
    {MSG_CHAT_RESP, bad_overlong_utf8},
    {MSG_CHAT_RESP, bad_surrogate},
    {MSG_USAGE_EVENT, bad_http_status},
    {MSG_USAGE_EVENT, bad_negative_money},
    {MSG_CANCEL, bad_cancel_empty},
    {MSG_ANALYTICS_REQ, bad_days},
};

START_TEST(test_encode_invalid)
{
	const struct bad_case *c = &bad_cases[_i];
	union proto_msg u;
	char *buf = (char *)"untouched";
	size_t len = 12345;

	fill(c->type, &u);
	c->spoil(&u);
	ck_assert_int_eq(codecs[c->type].encode(&u, &buf, &len), -EINVAL);
	ck_assert_int_eq(proto_msg_encode(c->type, &u, &buf, &len), -EINVAL);
	/* Out-parameters untouched on failure. */
	ck_assert_str_eq(buf, "untouched");
	ck_assert_uint_eq(len, 12345);
}
END_TEST

/* ---- decode writes *ret only on success ---- */

START_TEST(test_ret_untouched)
{
	union proto_msg out, ref;
	const char *payload;
	size_t len, plen;
	json_t *hdr;
	char *buf;

	encode_valid(MSG_LIMIT_CHECK, &buf, &len);
	hdr = split(buf, len, &payload, &plen);
	memset(&out, 0x77, sizeof(out));
	memset(&ref, 0x77, sizeof(ref));
	/* Fails late: ranges are checked after every field was read. */
	json_object_set_new(hdr, "threat", json_integer(PROTO_THREAT_MAX + 1));
	ck_assert_int_eq(
	    decode_with(MSG_LIMIT_CHECK, hdr, payload, plen, &out), -ERANGE);
	ck_assert_mem_eq(&out, &ref, sizeof(out));
	/* And on the header: truncated. */
	ck_assert_int_eq(
	    msg_limit_check_decode(buf, len - 1, &out.limit_check), -EPROTO);
	ck_assert_mem_eq(&out, &ref, sizeof(out));
	json_decref(hdr);
	free(buf);
}
END_TEST

/* ---- fixtures ---- */

static const char *
fixture_dir(char *dir, size_t size)
{
	const char *src = getenv("AIPROXY_SOURCE_DIR");

	if (src == NULL || *src == '\0')
		src = AIPROXY_SOURCE_DIR_DEFAULT;
	ck_assert_int_lt(
	    snprintf(dir, size, "%s/tests/fixtures/proto", src), (int)size);
	return dir;
}

static char *
read_file(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	size_t n;

	ck_assert_msg(f != NULL, "cannot open %s", path);
	buf = malloc(FIXTURE_MAX);
	ck_assert_ptr_nonnull(buf);
	n = fread(buf, 1, FIXTURE_MAX, f);
	ck_assert_msg(!ferror(f) && n < FIXTURE_MAX, "cannot read %s", path);
	fclose(f);
	/* Exactly n bytes, so ASan sees any read past the message. */
	buf = realloc(buf, n > 0 ? n : 1);
	ck_assert_ptr_nonnull(buf);
	*ret_len = n;
	return buf;
}

/* malformed-range-* -> -ERANGE, malformed-version* -> -EPROTONOSUPPORT. */
static int
fixture_want(const char *reason)
{
	if (strncmp(reason, "range", 5) == 0)
		return -ERANGE;
	if (strncmp(reason, "version", 7) == 0)
		return -EPROTONOSUPPORT;
	return -EPROTO;
}

START_TEST(test_fixtures)
{
	enum msg_type t = (enum msg_type)_i, peek;
	const char *name = msg_type_str(t), *rest;
	char dir[1024], path[2048];
	union proto_msg out;
	size_t nlen = strlen(name), len, len2;
	int valid = 0, malformed = 0, rc;
	struct dirent *de;
	char *buf, *buf2;
	DIR *d;

	d = opendir(fixture_dir(dir, sizeof(dir)));
	ck_assert_msg(d != NULL, "no fixture folder %s", dir);
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, name, nlen) != 0 ||
		    de->d_name[nlen] != '.')
			continue;
		rest = de->d_name + nlen + 1;
		ck_assert_int_lt(
		    snprintf(path, sizeof(path), "%s/%s", dir, de->d_name),
		    (int)sizeof(path));
		buf = read_file(path, &len);
		rc = proto_msg_decode(t, buf, len, &out);
		if (strcmp(rest, "valid") == 0 ||
		    strncmp(rest, "valid-", 6) == 0) {
			valid++;
			ck_assert_msg(rc == 0, "%s: %d", de->d_name, rc);
			ck_assert_int_eq(proto_peek_type(buf, len, &peek), 0);
			ck_assert_int_eq(peek, t);
			/* Fixtures are canonical: re-encoding gives them. */
			ck_assert_int_eq(
			    proto_msg_encode(t, &out, &buf2, &len2), 0);
			ck_assert_msg(
			    len2 == len && memcmp(buf, buf2, len) == 0,
			    "%s: not canonical", de->d_name);
			free(buf2);
		} else if (strncmp(rest, "malformed-", 10) == 0) {
			malformed++;
			ck_assert_msg(rc == fixture_want(rest + 10),
			    "%s: got %d, want %d", de->d_name, rc,
			    fixture_want(rest + 10));
		} else {
			ck_abort_msg("%s: unknown fixture kind", de->d_name);
		}
		free(buf);
	}
	closedir(d);
	ck_assert_msg(valid >= 1, "%s: no valid fixture", name);
	ck_assert_msg(malformed >= 1, "%s: no malformed fixture", name);
}
END_TEST

/* ---- names, peek, topics ---- */

START_TEST(test_type_names)
{
	int t, o;

	ck_assert_str_eq(msg_type_str(MSG_NONE), "none");
	ck_assert_str_eq(msg_type_str(MSG_MAX), "none");
	ck_assert_str_eq(msg_type_str(MSG_CHAT_REQ), "chat_req");
	ck_assert_str_eq(msg_type_str(MSG_USAGE_EVENT), "usage_event");
	ck_assert_int_eq(msg_type_from_str("ack"), MSG_ACK);
	ck_assert_int_eq(msg_type_from_str("none"), MSG_NONE);
	ck_assert_int_eq(msg_type_from_str("PING"), MSG_NONE);
	ck_assert_int_eq(msg_type_from_str(""), MSG_NONE);
	ck_assert_int_eq(msg_type_from_str(NULL), MSG_NONE);
	ck_assert_uint_eq(proto_msg_size(MSG_NONE), 0);
	ck_assert_uint_eq(proto_msg_size(MSG_MAX), 0);
	for (t = MSG_NONE + 1; t < MSG_MAX; t++) {
		ck_assert_int_eq(msg_type_from_str(msg_type_str(t)), t);
		ck_assert_uint_gt(proto_msg_size(t), 0);
		ck_assert_uint_le(proto_msg_size(t), sizeof(union proto_msg));
		for (o = t + 1; o < MSG_MAX; o++)
			ck_assert_str_ne(msg_type_str(t), msg_type_str(o));
	}
}
END_TEST

START_TEST(test_peek)
{
	static const char *const bad[] = {
	    "",
	    "{\"v\":1,\"type\":\"ping\"}",
	    "{\"v\":1,\"type\":\"nope\"}\n",
	    "{\"v\":1,\"type\":7}\n",
	    "{\"v\":1}\n",
	    "{\"type\":\"ping\"}\n",
	    "[]\n",
	    "\"ping\"\n",
	    "{\"v\":1,\"type\":\"ping\",\"type\":\"ping\"}\n",
	};
	enum msg_type t = MSG_ACK;
	size_t i;

	/* Only the header matters to peek; the fields are not checked. */
	ck_assert_int_eq(
	    proto_peek_type("{\"v\":1,\"type\":\"cancel\"}\nxyz", 27, &t), 0);
	ck_assert_int_eq(t, MSG_CANCEL);
	ck_assert_int_eq(
	    proto_peek_type("{\"v\":2,\"type\":\"cancel\"}\n", 24, &t),
	    -EPROTONOSUPPORT);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		t = MSG_ACK;
		ck_assert_msg(
		    proto_peek_type(bad[i], strlen(bad[i]), &t) == -EPROTO,
		    "peek accepted case %zu", i);
		ck_assert_int_eq(t, MSG_ACK);
	}
}
END_TEST

START_TEST(test_topics)
{
	const char *body;
	size_t len, blen;
	char *buf;

	ck_assert_int_eq(
	    proto_topic_wrap(PROTO_TOPIC_USAGE, "a\0b", 3, &buf, &len), 0);
	ck_assert_uint_eq(len, 9);
	ck_assert_mem_eq(buf, "usage a\0b", 9);
	ck_assert_int_eq(
	    proto_topic_strip(PROTO_TOPIC_USAGE, buf, len, &body, &blen), 0);
	ck_assert_ptr_eq(body, buf + 6);
	ck_assert_uint_eq(blen, 3);
	ck_assert_int_eq(
	    proto_topic_strip(PROTO_TOPIC_CTL, buf, len, &body, &blen),
	    -EPROTO);
	ck_assert_int_eq(
	    proto_topic_strip(PROTO_TOPIC_USAGE, buf, 5, &body, &blen),
	    -EPROTO);
	free(buf);

	ck_assert_int_eq(
	    proto_topic_wrap(PROTO_TOPIC_CTL, NULL, 0, &buf, &len), 0);
	ck_assert_uint_eq(len, 4);
	ck_assert_int_eq(
	    proto_topic_strip(PROTO_TOPIC_CTL, buf, len, &body, &blen), 0);
	ck_assert_uint_eq(blen, 0);
	free(buf);
	ck_assert_int_eq(proto_topic_wrap(NULL, "x", 1, &buf, &len), -EINVAL);
}
END_TEST

/* A real message through a topic, as the usage pub/sub carries it. */
START_TEST(test_topic_message)
{
	union proto_msg in, out;
	size_t len, wlen, blen;
	char *buf, *wrapped;
	const char *body;

	fill(MSG_USAGE_EVENT, &in);
	ck_assert_int_eq(
	    msg_usage_event_encode(&in.usage_event, &buf, &len), 0);
	ck_assert_int_eq(
	    proto_topic_wrap(PROTO_TOPIC_USAGE, buf, len, &wrapped, &wlen), 0);
	ck_assert_int_eq(
	    msg_usage_event_decode(wrapped, wlen, &out.usage_event), -EPROTO);
	ck_assert_int_eq(
	    proto_topic_strip(PROTO_TOPIC_USAGE, wrapped, wlen, &body, &blen),
	    0);
	ck_assert_int_eq(
	    msg_usage_event_decode(body, blen, &out.usage_event), 0);
	ck_assert_str_eq(out.usage_event.event_id, in.usage_event.event_id);
	free(wrapped);
	free(buf);
}
END_TEST

static Suite *
proto_suite(void)
{
	Suite *s = suite_create("proto");
	TCase *tc;

	tc = tcase_create("round_trip");
	tcase_add_loop_test(tc, test_round_trip, MSG_NONE + 1, MSG_MAX);
	tcase_add_loop_test(
	    tc, test_round_trip_empty_payload, MSG_NONE + 1, MSG_MAX);
	tcase_add_test(tc, test_round_trip_max_strings);
	suite_add_tcase(s, tc);

	tc = tcase_create("malformed");
	tcase_add_loop_test(tc, test_truncated, MSG_NONE + 1, MSG_MAX);
	tcase_add_loop_test(tc, test_trailing, MSG_NONE + 1, MSG_MAX);
	tcase_add_loop_test(tc, test_unknown_key, MSG_NONE + 1, MSG_MAX);
	tcase_add_loop_test(tc, test_missing_key, MSG_NONE + 1, MSG_MAX);
	tcase_add_loop_test(tc, test_wrong_type, MSG_NONE + 1, MSG_MAX);
	tcase_add_loop_test(tc, test_out_of_range, MSG_NONE + 1, MSG_MAX);
	tcase_add_loop_test(tc, test_bad_version, MSG_NONE + 1, MSG_MAX);
	tcase_add_loop_test(tc, test_duplicate_key, MSG_NONE + 1, MSG_MAX);
	tcase_add_loop_test(tc, test_wrong_decoder, MSG_NONE + 1, MSG_MAX);
	tcase_add_loop_test(tc, test_header_max, MSG_NONE + 1, MSG_MAX);
	tcase_add_test(tc, test_ret_untouched);
	suite_add_tcase(s, tc);

	tc = tcase_create("bounds");
	tcase_add_loop_test(tc, test_bounds, 0,
	    (int)(sizeof(bound_cases) / sizeof(bound_cases[0])));
	tcase_add_loop_test(tc, test_encode_invalid, 0,
	    (int)(sizeof(bad_cases) / sizeof(bad_cases[0])));
	suite_add_tcase(s, tc);

	tc = tcase_create("fixtures");
	tcase_add_loop_test(tc, test_fixtures, MSG_NONE + 1, MSG_MAX);
	suite_add_tcase(s, tc);

	tc = tcase_create("misc");
	tcase_add_test(tc, test_type_names);
	tcase_add_test(tc, test_peek);
	tcase_add_test(tc, test_topics);
	tcase_add_test(tc, test_topic_message);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(proto_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
