/*
 * The ratelimiter's messages through rl_server_handle(), on the memory
 * store: verdicts, reservations and settles, quota, threat reports, block
 * list and unblock, status, bad requests; then Redis configured but down
 * (degraded verdicts from 1/N of each limit, never an error); and the
 * redis:// URL parser.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>

#include "cfg.h"
#include "proto.h"
#include "rl_server.h"
#include "rl_store.h"

static Suite *rl_server_suite(void);

#define SET(dst, src) snprintf((dst), sizeof(dst), "%s", (src))

static struct rl_server *
server(char *const envp[])
{
	struct rl_server *s;
	struct cfg c;
	char err[256];

	ck_assert_msg(
	    cfg_load(&c, CFG_RL, envp, NULL, err, sizeof(err)) == 0, "%s", err);
	s = rl_server_new(&c);
	cfg_free(&c);
	ck_assert_ptr_nonnull(s);
	return s;
}

/* Encodes m (type t), hands it to the server, decodes the reply into r,
 * whose type must be want.  Caller frees the returned buffer (payloads
 * borrow from it). */
static char *
call(struct rl_server *s, enum msg_type t, const void *m, enum msg_type want,
    union proto_msg *r)
{
	char *req, *rep;
	size_t rlen, plen;
	enum msg_type got;

	ck_assert_int_eq(proto_msg_encode(t, m, &req, &rlen), 0);
	ck_assert_int_eq(rl_server_handle(s, req, rlen, &rep, &plen), 0);
	free(req);
	ck_assert_int_eq(proto_peek_type(rep, plen, &got), 0);
	ck_assert_msg(got == want, "reply %s, want %s", msg_type_str(got),
	    msg_type_str(want));
	ck_assert_int_eq(proto_msg_decode(want, rep, plen, r), 0);
	return rep;
}

static struct msg_limit_verdict
limit_check(struct rl_server *s, const char *type, const char *id,
    const char *ip, int64_t reserve, int64_t threat)
{
	struct msg_limit_check m;
	union proto_msg r;

	memset(&m, 0, sizeof(m));
	SET(m.request_id, "req-check");
	SET(m.subject_type, type);
	SET(m.subject_id, id);
	SET(m.ip, ip);
	SET(m.provider, "claude");
	SET(m.model, "claude-3-5-haiku-20241022");
	m.reserve_micro_usd = reserve;
	m.threat = threat;
	free(call(s, MSG_LIMIT_CHECK, &m, MSG_LIMIT_VERDICT, &r));
	ck_assert_str_eq(r.limit_verdict.request_id, "req-check");
	return r.limit_verdict;
}

static struct msg_ack
limit_settle(struct rl_server *s, const char *type, const char *id,
    const char *rsv, int64_t actual)
{
	struct msg_limit_settle m;
	union proto_msg r;

	memset(&m, 0, sizeof(m));
	SET(m.request_id, "req-settle");
	SET(m.subject_type, type);
	SET(m.subject_id, id);
	SET(m.reservation_id, rsv);
	m.reserved_micro_usd = 100000;
	m.actual_micro_usd = actual;
	free(call(s, MSG_LIMIT_SETTLE, &m, MSG_ACK, &r));
	return r.ack;
}

static struct msg_quota_resp
quota(struct rl_server *s, const char *type, const char *id)
{
	struct msg_quota_req m;
	union proto_msg r;

	memset(&m, 0, sizeof(m));
	SET(m.request_id, "req-quota");
	SET(m.subject_type, type);
	SET(m.subject_id, id);
	free(call(s, MSG_QUOTA_REQ, &m, MSG_QUOTA_RESP, &r));
	return r.quota_resp;
}

static struct msg_ack
threat(struct rl_server *s, const char *type, const char *id, const char *ip,
    int64_t points, const char *reason)
{
	struct msg_threat_report m;
	union proto_msg r;

	memset(&m, 0, sizeof(m));
	SET(m.request_id, "req-threat");
	SET(m.subject_type, type);
	SET(m.subject_id, id);
	SET(m.ip, ip);
	SET(m.reason, reason);
	m.points = points;
	free(call(s, MSG_THREAT_REPORT, &m, MSG_ACK, &r));
	return r.ack;
}

/* The status payload as JSON (caller decrefs) and the state. */
static json_t *
status(struct rl_server *s, char *state, size_t len)
{
	struct msg_status_req m = {.request_id = "st", .what = "health"};
	union proto_msg r;
	json_t *doc;
	char *buf;

	buf = call(s, MSG_STATUS_REQ, &m, MSG_STATUS_RESP, &r);
	snprintf(state, len, "%s", r.status_resp.state);
	doc = json_loadb(
	    r.status_resp.payload, r.status_resp.payload_len, 0, NULL);
	free(buf);
	ck_assert_ptr_nonnull(doc);
	return doc;
}

static char *const env_small[] = {"AI_PROXY_RATE_LIMIT_PER_MINUTE=42",
    "AI_PROXY_RATE_LIMIT_PER_HOUR=420", "AI_PROXY_COST_LIMIT_DAILY=1.00", NULL};

START_TEST(test_verdicts)
{
	struct rl_server *s = server(env_small);
	struct msg_limit_verdict v;
	int i;

	v = limit_check(s, "user", "alice", "127.0.0.1", 0, 0);
	ck_assert(v.allow);
	ck_assert_str_eq(v.code, "ok");
	ck_assert_int_eq(v.limit, 42);
	ck_assert_int_eq(v.remaining, 41);
	ck_assert_int_eq(v.retry_after_s, 0);
	ck_assert_int_eq(v.reset_s, 2);
	ck_assert_str_eq(v.reservation_id, "");
	ck_assert(!v.degraded);
	for (i = 0; i < 41; i++)
		ck_assert(
		    limit_check(s, "user", "alice", "127.0.0.1", 0, 0).allow);
	v = limit_check(s, "user", "alice", "127.0.0.1", 0, 0);
	ck_assert(!v.allow);
	ck_assert_str_eq(v.code, "rate_limit_minute");
	ck_assert_int_eq(v.remaining, 0);
	ck_assert_int_ge(v.retry_after_s, 1);
	ck_assert_int_le(v.retry_after_s, 2);
	/* The session of the same name is another subject. */
	ck_assert(limit_check(s, "session", "alice", "127.0.0.1", 0, 0).allow);
	rl_server_free(s);
}
END_TEST

START_TEST(test_money)
{
	struct rl_server *s = server(env_small);
	struct msg_limit_verdict v;
	struct msg_quota_resp q;
	struct msg_ack a;
	char rsv[PROTO_ID_MAX + 1];

	v = limit_check(
	    s, "session", "sess-0123456789abcdef", "127.0.0.1", 600000, 0);
	ck_assert(v.allow);
	ck_assert_int_eq(v.reservation_id[0], 'm');
	ck_assert_int_eq(strlen(v.reservation_id), 27);
	SET(rsv, v.reservation_id);
	q = quota(s, "session", "sess-0123456789abcdef");
	ck_assert_int_eq(q.cost_limit_micro_usd, 1000000);
	ck_assert_int_eq(q.cost_reserved_micro_usd, 600000);
	ck_assert_int_eq(q.cost_used_micro_usd, 0);
	ck_assert_int_eq(q.minute_limit, 42);
	ck_assert_int_eq(q.minute_used, 1);
	ck_assert_int_eq(q.hour_used, 1);
	ck_assert(!q.degraded);
	v = limit_check(
	    s, "session", "sess-0123456789abcdef", "127.0.0.1", 600000, 0);
	ck_assert(!v.allow);
	ck_assert_str_eq(v.code, "daily_cost_limit");
	ck_assert_int_eq(v.limit, 1000000);
	ck_assert_int_eq(v.remaining, 400000);
	ck_assert_str_eq(v.reservation_id, "");

	a = limit_settle(s, "session", "sess-0123456789abcdef", rsv, 250000);
	ck_assert(a.ok);
	ck_assert_str_eq(a.code, "ok");
	ck_assert_str_eq(a.message, "settled");
	ck_assert_str_eq(a.request_id, "req-settle");
	a = limit_settle(s, "session", "sess-0123456789abcdef", rsv, 250000);
	ck_assert(a.ok);
	ck_assert_ptr_nonnull(strstr(a.message, "duplicate"));
	q = quota(s, "session", "sess-0123456789abcdef");
	ck_assert_int_eq(q.cost_used_micro_usd, 250000);
	ck_assert_int_eq(q.cost_reserved_micro_usd, 0);
	/* Unknown reservation: the cost counts anyway. */
	a = limit_settle(s, "session", "sess-0123456789abcdef", "res_1", 400);
	ck_assert(a.ok);
	ck_assert_ptr_nonnull(strstr(a.message, "unknown"));
	q = quota(s, "session", "sess-0123456789abcdef");
	ck_assert_int_eq(q.cost_used_micro_usd, 250400);
	/* A reservation id with no token. */
	a = limit_settle(s, "session", "sess-0123456789abcdef", "m", 1);
	ck_assert(!a.ok);
	ck_assert_str_eq(a.code, "bad_request");
	rl_server_free(s);
}
END_TEST

START_TEST(test_threat_and_blocks)
{
	struct rl_server *s = server(env_small);
	struct msg_block_list bl = {.request_id = "adm", .max = 10};
	struct msg_unblock ub;
	union proto_msg r;
	struct msg_ack a;
	json_t *doc, *e;
	char *buf;
	int i;

	for (i = 0; i < 9; i++) {
		a = threat(s, "", "", "192.0.2.66", 10, "auth_failure");
		ck_assert(a.ok);
		ck_assert_str_eq(a.code, "ok");
	}
	/* 90 points, decaying by a hair since: 11 more pass 100. */
	a = threat(s, "", "", "192.0.2.66", 11, "auth_failure");
	ck_assert_str_eq(a.code, "blocked");
	ck_assert(!limit_check(s, "user", "bob", "192.0.2.66", 0, 0).allow);
	ck_assert_str_eq(
	    limit_check(s, "user", "bob", "192.0.2.66", 0, 0).code, "blocked");
	ck_assert(limit_check(s, "user", "bob", "192.0.2.67", 0, 0).allow);
	/* A subject blocked by its own score. */
	a = threat(s, "user", "eve", "192.0.2.70", 100, "prompt_injection");
	ck_assert_str_eq(a.code, "blocked");

	buf = call(s, MSG_BLOCK_LIST, &bl, MSG_BLOCK_LIST_RESP, &r);
	ck_assert_int_eq(r.block_list_resp.total, 3); /* IP, eve, eve's IP */
	ck_assert(!r.block_list_resp.degraded);
	doc = json_loadb(
	    r.block_list_resp.payload, r.block_list_resp.payload_len, 0, NULL);
	ck_assert_ptr_nonnull(doc);
	ck_assert(json_is_array(doc));
	ck_assert_int_eq(json_array_size(doc), 3);
	e = json_array_get(doc, 0);
	ck_assert_str_eq(json_string_value(json_object_get(e, "kind")), "ip");
	ck_assert_str_eq(
	    json_string_value(json_object_get(e, "id")), "192.0.2.66");
	ck_assert_str_eq(
	    json_string_value(json_object_get(e, "reason")), "auth_failure");
	ck_assert_int_eq(
	    json_integer_value(json_object_get(e, "retry_after_s")), 900);
	ck_assert_int_gt(
	    json_integer_value(json_object_get(e, "until")), 1700000000);
	json_decref(doc);
	free(buf);

	memset(&ub, 0, sizeof(ub));
	SET(ub.request_id, "adm2");
	SET(ub.kind, "ip");
	SET(ub.id, "192.0.2.66");
	free(call(s, MSG_UNBLOCK, &ub, MSG_ACK, &r));
	ck_assert(r.ack.ok);
	ck_assert_str_eq(r.ack.code, "ok");
	ck_assert(limit_check(s, "user", "bob", "192.0.2.66", 0, 0).allow);
	free(call(s, MSG_UNBLOCK, &ub, MSG_ACK, &r));
	ck_assert(!r.ack.ok);
	ck_assert_str_eq(r.ack.code, "not_found");
	SET(ub.kind, "user");
	SET(ub.id, "eve");
	free(call(s, MSG_UNBLOCK, &ub, MSG_ACK, &r));
	ck_assert(r.ack.ok);
	rl_server_free(s);
}
END_TEST

START_TEST(test_status_and_bad)
{
	struct rl_server *s = server(env_small);
	static const char *const bad[] = {
	    "garbage",
	    "{\"v\":1,\"type\":\"ping\",\"request_id\":\"x\"}\n",
	    "{\"v\":1,\"type\":\"cancel\",\"request_id\":\"r\"}\n",
	    "{\"v\":1,\"type\":\"limit_check\",\"request_id\":\"r\"}\n",
	};
	char state[32], *rep;
	size_t len, i;
	union proto_msg r;
	json_t *doc;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(
		    rl_server_handle(s, bad[i], strlen(bad[i]), &rep, &len), 0);
		ck_assert_int_eq(msg_ack_decode(rep, len, &r.ack), 0);
		ck_assert(!r.ack.ok);
		ck_assert_str_eq(r.ack.code, "bad_request");
		free(rep);
	}
	doc = status(s, state, sizeof(state));
	ck_assert_str_eq(state, "up");
	ck_assert_str_eq(
	    json_string_value(json_object_get(doc, "backend")), "memory");
	ck_assert_str_eq(
	    json_string_value(json_object_get(doc, "redis")), "disabled");
	ck_assert_str_eq(
	    json_string_value(json_object_get(doc, "limits")), "enforced");
	ck_assert_int_eq(
	    json_integer_value(json_object_get(doc, "per_minute")), 42);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(doc, "per_ip_minute")), 126);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(doc, "bad_requests")), 4);
	json_decref(doc);
	ck_assert_uint_eq(rl_server_bad_requests(s), 4);
	ck_assert_uint_eq(rl_server_requests(s), 5);
	ck_assert(!rl_server_degraded(s));
	rl_server_free(s);
}
END_TEST

/* A loopback port nobody listens on. */
static int
closed_port(void)
{
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	ck_assert_int_ge(fd, 0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

/* Redis configured and down: every answer comes from the in-process
 * share (1/2 of each limit with 2 replicas), marked degraded. */
START_TEST(test_redis_down)
{
	char url[64], state[32];
	char *env[] = {"REDIS_ENABLED=true", url,
	    "AI_PROXY_RATELIMITER_REPLICAS=2",
	    "AI_PROXY_RATE_LIMIT_PER_MINUTE=10",
	    "AI_PROXY_COST_LIMIT_DAILY=1.00", NULL};
	struct rl_server *s;
	struct msg_limit_verdict v;
	struct msg_quota_resp q;
	struct msg_ack a;
	json_t *doc;
	int i;

	snprintf(
	    url, sizeof(url), "REDIS_URL=redis://127.0.0.1:%d", closed_port());
	s = server(env);
	ck_assert(rl_server_degraded(s));
	for (i = 0; i < 5; i++) {
		v = limit_check(s, "user", "carol", "127.0.0.1", 100000, 0);
		ck_assert(v.allow);
		ck_assert(v.degraded);
		ck_assert_int_eq(v.limit, 5);
		ck_assert_int_eq(v.reservation_id[0], 'm');
	}
	v = limit_check(s, "user", "carol", "127.0.0.1", 100000, 0);
	ck_assert(!v.allow);
	ck_assert_str_eq(v.code, "rate_limit_minute");
	ck_assert(v.degraded);
	q = quota(s, "user", "carol");
	ck_assert(q.degraded);
	ck_assert_int_eq(q.minute_limit, 5);
	ck_assert_int_eq(q.cost_limit_micro_usd, 500000);
	ck_assert_int_eq(q.cost_reserved_micro_usd, 500000);
	a = limit_settle(s, "user", "carol", "rREDISTOKEN", 1234);
	ck_assert(a.ok);
	a = threat(s, "user", "carol", "127.0.0.1", 1, "invalid_request");
	ck_assert(a.ok);
	doc = status(s, state, sizeof(state));
	ck_assert_str_eq(state, "degraded");
	ck_assert_str_eq(
	    json_string_value(json_object_get(doc, "backend")), "redis");
	ck_assert_str_eq(
	    json_string_value(json_object_get(doc, "redis")), "down");
	ck_assert_int_eq(
	    json_integer_value(json_object_get(doc, "pending_settles")), 1);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(doc, "degraded_decisions")), 6);
	json_decref(doc);
	rl_server_free(s);
}
END_TEST

START_TEST(test_bad_redis_url)
{
	char *env[] = {"REDIS_ENABLED=true", "REDIS_URL=http://x", NULL};
	struct cfg c;
	char err[128];

	ck_assert_int_eq(cfg_load(&c, CFG_RL, env, NULL, err, sizeof(err)), 0);
	ck_assert_ptr_null(rl_server_new(&c));
	cfg_free(&c);
}
END_TEST

struct url_case {
	const char *url;
	int rv;
	const char *host;
	int port;
	const char *user;
	const char *password;
	int db;
};

static const struct url_case url_cases[] = {
    {"redis://127.0.0.1:6379", 0, "127.0.0.1", 6379, "", "", 0},
    {"redis://localhost", 0, "localhost", 6379, "", "", 0},
    {"redis://redis.internal:7000/3", 0, "redis.internal", 7000, "", "", 3},
    {"redis://:s3cret@10.0.0.5:6380", 0, "10.0.0.5", 6380, "", "s3cret", 0},
    {"redis://app:pw:with:colons@h:1/0", 0, "h", 1, "app", "pw:with:colons", 0},
    {"redis://[::1]:6390/2", 0, "::1", 6390, "", "", 2},
    {"redis://[::1]", 0, "::1", 6379, "", "", 0},
    {"redis://h/", 0, "h", 6379, "", "", 0},
    {"http://127.0.0.1:6379", -EINVAL, NULL, 0, NULL, NULL, 0},
    {"rediss://127.0.0.1:6379", -EINVAL, NULL, 0, NULL, NULL, 0},
    {"redis://", -EINVAL, NULL, 0, NULL, NULL, 0},
    {"redis://h:0", -EINVAL, NULL, 0, NULL, NULL, 0},
    {"redis://h:65536", -EINVAL, NULL, 0, NULL, NULL, 0},
    {"redis://h:12x", -EINVAL, NULL, 0, NULL, NULL, 0},
    {"redis://h:", -EINVAL, NULL, 0, NULL, NULL, 0},
    {"redis://h/db", -EINVAL, NULL, 0, NULL, NULL, 0},
    {"redis://[::1:6379", -EINVAL, NULL, 0, NULL, NULL, 0},
    {"redis://h o:1", -EINVAL, NULL, 0, NULL, NULL, 0},
};

START_TEST(test_url)
{
	const struct url_case *c = &url_cases[_i];
	struct rl_redis_url u;

	ck_assert_msg(rl_redis_url_parse(c->url, &u) == c->rv, "%s", c->url);
	if (c->rv != 0)
		return;
	ck_assert_str_eq(u.host, c->host);
	ck_assert_int_eq(u.port, c->port);
	ck_assert_str_eq(u.user, c->user);
	ck_assert_str_eq(u.password, c->password);
	ck_assert_int_eq(u.db, c->db);
}
END_TEST

static Suite *
rl_server_suite(void)
{
	Suite *s = suite_create("rl_server");
	TCase *tc;

	tc = tcase_create("memory");
	tcase_add_test(tc, test_verdicts);
	tcase_add_test(tc, test_money);
	tcase_add_test(tc, test_threat_and_blocks);
	tcase_add_test(tc, test_status_and_bad);
	suite_add_tcase(s, tc);

	tc = tcase_create("redis_down");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_redis_down);
	tcase_add_test(tc, test_bad_redis_url);
	suite_add_tcase(s, tc);

	tc = tcase_create("url");
	tcase_add_loop_test(
	    tc, test_url, 0, (int)(sizeof(url_cases) / sizeof(url_cases[0])));
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(rl_server_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
