/*
 * acct_server_test: the accountant's requests, driven through
 * acct_server_request() with an SQLite ledger in a temporary folder:
 * usage batches (strictly checked, acknowledged after the commit),
 * usage_sync, live events, cost_today, analytics (validation, numbers,
 * one subject's view), status and bad requests.
 */
#include "acct_server.h"

#include <check.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "acct_unit.h"
#include "clock.h"
#include "proto.h"

static Suite *acct_server_suite(void);

static char st_dir[PATH_MAX];

static struct acct_server *
st_open(void)
{
	struct acct_server_opts o;
	struct acct_server *s = NULL;
	char err[256] = "";

	au_tmpdir(st_dir, sizeof(st_dir));
	memset(&o, 0, sizeof(o));
	o.state_dir = st_dir;
	ck_assert_msg(
	    acct_server_new(&o, &s, err, sizeof(err)) == 0, "%s", err);
	return s;
}

static void
st_close(struct acct_server *s)
{
	acct_server_free(s);
	au_rmtree(st_dir);
}

/* Sends message t (struct m) and waits for a reply of type want, decoded
 * into *ret.  Caller frees *ret_buf (the payload points into it). */
static void
st_call(struct acct_server *s, enum msg_type t, const void *m,
    enum msg_type want, union proto_msg *ret, char **ret_buf)
{
	struct au_reply r;
	char *buf;
	size_t len;

	ck_assert_int_eq(proto_msg_encode(t, m, &buf, &len), 0);
	au_reply_init(&r);
	acct_server_request(s, buf, len, au_reply_fn, &r);
	free(buf);
	au_reply_wait(&r, want);
	ck_assert_int_eq(proto_msg_decode(want, r.buf, r.len, ret), 0);
	*ret_buf = r.buf;
	r.buf = NULL;
	au_reply_free(&r);
}

static void
st_raw_bad(struct acct_server *s, const char *buf, size_t len)
{
	struct msg_ack a;
	struct au_reply r;

	au_reply_init(&r);
	acct_server_request(s, buf, len, au_reply_fn, &r);
	au_reply_wait(&r, MSG_ACK);
	ck_assert_int_eq(msg_ack_decode(r.buf, r.len, &a), 0);
	ck_assert(!a.ok);
	ck_assert_str_eq(a.code, "bad_request");
	au_reply_free(&r);
}

/* A usage_batch of events first..first+n-1 of stream (payload built in
 * *payload, caller frees). */
static void
st_batch(struct msg_usage_batch *b, const char *stream, int64_t first,
    int64_t n, char **payload)
{
	struct msg_usage_event ev;
	char id[32], *enc, *p = NULL;
	size_t len, total = 0;

	for (int64_t i = 0; i < n; i++) {
		snprintf(id, sizeof(id), "b-%s-%lld", stream + 3,
		    (long long)(first + i));
		au_event(&ev, id, stream, first + i, clock_real_ms());
		ck_assert_int_eq(msg_usage_event_encode(&ev, &enc, &len), 0);
		p = realloc(p, total + len);
		memcpy(p + total, enc, len);
		total += len;
		free(enc);
	}
	memset(b, 0, sizeof(*b));
	snprintf(b->worker_id, sizeof(b->worker_id), "%s", stream);
	b->first_seq = first;
	b->last_seq = first + n - 1;
	b->count = n;
	b->payload = p;
	b->payload_len = total;
	*payload = p;
}

START_TEST(test_batch_sync_and_live)
{
	struct acct_server *s = st_open();
	struct msg_usage_sync sync = {.worker_id = "w1:00ff"};
	struct msg_usage_batch b;
	struct msg_usage_event ev;
	union proto_msg r;
	char *payload, *buf, *enc, *wrapped;
	size_t len, wlen;

	/* Nothing yet. */
	st_call(s, MSG_USAGE_SYNC, &sync, MSG_USAGE_ACK, &r, &buf);
	ck_assert_str_eq(r.usage_ack.worker_id, "w1:00ff");
	ck_assert_int_eq(r.usage_ack.committed_seq, 0);
	ck_assert_str_eq(r.usage_ack.code, "ok");
	free(buf);

	/* Events 3..5 first: acknowledged, but 1..2 are missing. */
	st_batch(&b, "w1:00ff", 3, 3, &payload);
	st_call(s, MSG_USAGE_BATCH, &b, MSG_USAGE_ACK, &r, &buf);
	ck_assert_str_eq(r.usage_ack.code, "ok");
	ck_assert_int_eq(r.usage_ack.committed_seq, 0);
	free(buf);
	free(payload);
	st_batch(&b, "w1:00ff", 1, 2, &payload);
	st_call(s, MSG_USAGE_BATCH, &b, MSG_USAGE_ACK, &r, &buf);
	ck_assert_str_eq(r.usage_ack.code, "ok");
	ck_assert_int_eq(r.usage_ack.committed_seq, 5);
	free(buf);
	free(payload);

	/* Event 6 on the live path. */
	au_event(&ev, "live-6", "w1:00ff", 6, clock_real_ms());
	ck_assert_int_eq(msg_usage_event_encode(&ev, &enc, &len), 0);
	ck_assert_int_eq(
	    proto_topic_wrap(PROTO_TOPIC_USAGE, enc, len, &wrapped, &wlen), 0);
	ck_assert_int_eq(acct_server_usage(s, wrapped, wlen), 0);
	ck_assert_int_eq(acct_server_usage(s, enc, len), -EPROTO);
	free(enc);
	free(wrapped);
	ck_assert_uint_eq(acct_server_events(s), 1);
	ck_assert_uint_eq(acct_server_events_rejected(s), 1);
	/* Polled: the writer commits within its flush interval. */
	for (int i = 0; i < 500; i++) {
		st_call(s, MSG_USAGE_SYNC, &sync, MSG_USAGE_ACK, &r, &buf);
		free(buf);
		if (r.usage_ack.committed_seq == 6)
			break;
		ck_assert_int_eq(usleep(10000), 0);
	}
	ck_assert_int_eq(r.usage_ack.committed_seq, 6);
	st_close(s);
}
END_TEST

START_TEST(test_batch_refused_when_malformed)
{
	struct acct_server *s = st_open();
	struct msg_usage_batch b;
	char *payload, *buf, *p;
	size_t len;

	/* An event of another stream inside. */
	st_batch(&b, "w1:00ff", 1, 2, &payload);
	snprintf(b.worker_id, sizeof(b.worker_id), "w2:00ff");
	ck_assert_int_eq(msg_usage_batch_encode(&b, &buf, &len), 0);
	st_raw_bad(s, buf, len);
	free(buf);
	free(payload);
	/* Numbers that do not follow first_seq. */
	st_batch(&b, "w1:00ff", 1, 2, &payload);
	b.first_seq = 2;
	b.last_seq = 3;
	ck_assert_int_eq(msg_usage_batch_encode(&b, &buf, &len), 0);
	st_raw_bad(s, buf, len);
	free(buf);
	free(payload);
	/* Bytes after the last event. */
	st_batch(&b, "w1:00ff", 1, 1, &payload);
	p = malloc(b.payload_len + 1);
	memcpy(p, b.payload, b.payload_len);
	p[b.payload_len] = 'x';
	b.payload = p;
	b.payload_len++;
	ck_assert_int_eq(msg_usage_batch_encode(&b, &buf, &len), 0);
	st_raw_bad(s, buf, len);
	free(buf);
	free(p);
	free(payload);
	/* Not a message, and one the accountant does not serve. */
	st_raw_bad(s, "\n\n", 2);
	st_raw_bad(s,
	    "{\"v\":1,\"type\":\"quota_req\",\"request_id\":\"\","
	    "\"subject_type\":\"user\",\"subject_id\":\"u\"}\n",
	    strlen("{\"v\":1,\"type\":\"quota_req\",\"request_id\":\"\","
		   "\"subject_type\":\"user\",\"subject_id\":\"u\"}\n"));
	ck_assert_uint_eq(acct_server_bad_requests(s), 5);
	st_close(s);
}
END_TEST

/* The analytics document of a request; caller json_decref()s. */
static json_t *
st_analytics(struct acct_server *s, const char *st, const char *sid,
    const char *provider, int days, int64_t want_status)
{
	struct msg_analytics_req q;
	union proto_msg r;
	json_t *doc;
	char *buf;

	memset(&q, 0, sizeof(q));
	snprintf(q.request_id, sizeof(q.request_id), "an-1");
	snprintf(q.subject_type, sizeof(q.subject_type), "%s", st);
	snprintf(q.subject_id, sizeof(q.subject_id), "%s", sid);
	snprintf(q.provider, sizeof(q.provider), "%s", provider);
	q.days = days;
	st_call(s, MSG_ANALYTICS_REQ, &q, MSG_ANALYTICS_RESP, &r, &buf);
	ck_assert_str_eq(r.analytics_resp.request_id, "an-1");
	ck_assert_int_eq(r.analytics_resp.status, want_status);
	doc = json_loadb(
	    r.analytics_resp.payload, r.analytics_resp.payload_len, 0, NULL);
	ck_assert_ptr_nonnull(doc);
	free(buf);
	return doc;
}

static int64_t
st_int(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	ck_assert_msg(json_is_integer(v), "%s is not an integer", key);
	return json_integer_value(v);
}

START_TEST(test_analytics_and_cost)
{
	struct acct_server *s = st_open();
	struct msg_cost_today_req cq = {
	    .request_id = "c1", .subject_type = "user", .subject_id = "alice"};
	struct msg_usage_batch b;
	union proto_msg r;
	json_t *doc, *series, *last, *totals;
	char *payload, *buf, today[16];

	/* alice: 4 events of 160 micro-USD today. */
	st_batch(&b, "w3:00aa", 1, 4, &payload);
	st_call(s, MSG_USAGE_BATCH, &b, MSG_USAGE_ACK, &r, &buf);
	ck_assert_int_eq(r.usage_ack.committed_seq, 4);
	free(buf);
	free(payload);

	st_call(s, MSG_COST_TODAY_REQ, &cq, MSG_COST_TODAY_RESP, &r, &buf);
	clock_fmt_day(clock_real_ms(), today, sizeof(today));
	ck_assert_str_eq(r.cost_today_resp.request_id, "c1");
	ck_assert_str_eq(r.cost_today_resp.day, today);
	ck_assert_str_eq(r.cost_today_resp.code, "ok");
	ck_assert_int_eq(r.cost_today_resp.micro_usd, 640);
	free(buf);
	snprintf(cq.subject_id, sizeof(cq.subject_id), "bob");
	st_call(s, MSG_COST_TODAY_REQ, &cq, MSG_COST_TODAY_RESP, &r, &buf);
	ck_assert_int_eq(r.cost_today_resp.micro_usd, 0);
	free(buf);

	doc = st_analytics(s, "user", "alice", "", 7, 200);
	ck_assert_int_eq(st_int(doc, "days"), 7);
	ck_assert_str_eq(json_string_value(json_object_get(doc, "to")), today);
	ck_assert(json_is_null(json_object_get(doc, "provider")));
	ck_assert_str_eq(json_string_value(json_object_get(
			     json_object_get(doc, "subject"), "id")),
	    "alice");
	totals = json_object_get(doc, "totals");
	ck_assert_int_eq(st_int(totals, "requests"), 4);
	ck_assert_int_eq(st_int(totals, "cost_micro_usd"), 640);
	ck_assert(
	    json_real_value(json_object_get(totals, "cost_usd")) == 0.00064);
	ck_assert_int_eq(st_int(totals, "p50_latency_ms"), 50);
	series = json_object_get(doc, "series");
	ck_assert_uint_eq(json_array_size(series), 7);
	last = json_array_get(series, 6);
	ck_assert_str_eq(
	    json_string_value(json_object_get(last, "day")), today);
	ck_assert_int_eq(st_int(last, "requests"), 4);
	ck_assert_int_eq(st_int(json_array_get(series, 0), "requests"), 0);
	ck_assert(json_real_value(json_object_get(
		      json_array_get(series, 0), "error_rate")) == 0.0);
	json_decref(doc);

	/* Another subject sees none of it; everyone sees it all. */
	doc = st_analytics(s, "session", "alice", "", 1, 200);
	ck_assert_int_eq(st_int(json_object_get(doc, "totals"), "requests"), 0);
	json_decref(doc);
	doc = st_analytics(s, "", "", "claude", 90, 200);
	ck_assert_int_eq(st_int(json_object_get(doc, "totals"), "requests"), 4);
	ck_assert_uint_eq(json_array_size(json_object_get(doc, "series")), 90);
	json_decref(doc);
	doc = st_analytics(s, "", "", "openai", 3, 200);
	ck_assert_int_eq(st_int(json_object_get(doc, "totals"), "requests"), 0);
	json_decref(doc);

	/* Bad requests: 400 with a reason. */
	doc = st_analytics(s, "user", "alice", "gemini", 7, 400);
	ck_assert_str_eq(
	    json_string_value(json_object_get(doc, "error")), "bad_request");
	json_decref(doc);
	doc = st_analytics(s, "user", "", "", 7, 400);
	json_decref(doc);
	doc = st_analytics(s, "", "alice", "", 7, 400);
	json_decref(doc);
	st_close(s);
}
END_TEST

START_TEST(test_ping_and_status)
{
	struct acct_server *s = st_open();
	struct msg_ping ping = {.request_id = "p1", .ts_us = 42};
	struct msg_status_req sq = {.request_id = "s1", .what = "health"};
	union proto_msg r;
	json_t *doc;
	char *buf;

	st_call(s, MSG_PING, &ping, MSG_PONG, &r, &buf);
	ck_assert_str_eq(r.pong.daemon, "accountant");
	ck_assert_int_eq(r.pong.ts_us, 42);
	free(buf);
	st_call(s, MSG_STATUS_REQ, &sq, MSG_STATUS_RESP, &r, &buf);
	ck_assert_str_eq(r.status_resp.state, "up");
	doc = json_loadb(
	    r.status_resp.payload, r.status_resp.payload_len, 0, NULL);
	ck_assert_ptr_nonnull(doc);
	ck_assert_str_eq(
	    json_string_value(json_object_get(doc, "ledger")), "sqlite");
	ck_assert_str_eq(
	    json_string_value(json_object_get(doc, "database")), "up");
	json_decref(doc);
	free(buf);
	st_close(s);
}
END_TEST

static Suite *
acct_server_suite(void)
{
	Suite *s = suite_create("acct_server");
	TCase *tc = tcase_create("server");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_batch_sync_and_live);
	tcase_add_test(tc, test_batch_refused_when_malformed);
	tcase_add_test(tc, test_analytics_and_cost);
	tcase_add_test(tc, test_ping_and_status);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(acct_server_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
