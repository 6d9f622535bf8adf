/*
 * The reply table: upstream status -> (status, error code), curl results ->
 * failures -> replies, retry-after parsing, the error event that closes a
 * broken stream, UTF-8 clipping and the endpoint URLs.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pw_engine.h"
#include "pw_map.h"
#include "pw_unit.h"

struct http_case {
	long upstream;
	int status;
	const char *code;
};

static const struct http_case http_cases[] = {
    {200, 200, ""},
    {201, 200, ""},
    {400, 400, "upstream_bad_request"},
    {401, 502, "upstream_auth"},
    {403, 502, "upstream_auth"},
    {404, 404, "upstream_bad_request"},
    {413, 413, "upstream_bad_request"},
    {422, 422, "upstream_bad_request"},
    {429, 429, "upstream_rate_limited"},
    {500, 502, "upstream_error"},
    {502, 503, "upstream_unavailable"},
    {503, 503, "upstream_unavailable"},
    {529, 503, "upstream_unavailable"},
    {504, 504, "upstream_timeout"},
    {408, 504, "upstream_timeout"},
    {409, 503, "upstream_unavailable"},
    {402, 502, "upstream_error"},
    {418, 502, "upstream_error"},
    {501, 502, "upstream_error"},
    {599, 502, "upstream_error"},
    {301, 502, "upstream_error"},
    {100, 502, "upstream_error"},
};

START_TEST(test_http)
{
	const struct http_case *c = &http_cases[_i];
	struct pw_outcome o = pw_map_http(c->upstream);

	ck_assert_msg(o.status == c->status, "%ld: status %d, want %d",
	    c->upstream, o.status, c->status);
	ck_assert_str_eq(o.code, c->code);
	ck_assert_ptr_nonnull(o.message);
}
END_TEST

struct curl_case {
	CURLcode rc;
	bool got_bytes;
	enum pw_fail fail;
};

static const struct curl_case curl_cases[] = {
    {CURLE_OK, true, PW_FAIL_NONE},
    {CURLE_OPERATION_TIMEDOUT, false, PW_FAIL_TIMEOUT},
    {CURLE_OPERATION_TIMEDOUT, true, PW_FAIL_TIMEOUT},
    {CURLE_COULDNT_CONNECT, false, PW_FAIL_UNREACHABLE},
    {CURLE_COULDNT_RESOLVE_HOST, false, PW_FAIL_UNREACHABLE},
    {CURLE_PEER_FAILED_VERIFICATION, false, PW_FAIL_UNREACHABLE},
    {CURLE_SSL_CONNECT_ERROR, false, PW_FAIL_UNREACHABLE},
    {CURLE_GOT_NOTHING, false, PW_FAIL_UNREACHABLE},
    {CURLE_RECV_ERROR, false, PW_FAIL_UNREACHABLE},
    {CURLE_RECV_ERROR, true, PW_FAIL_BROKEN},
    {CURLE_SEND_ERROR, false, PW_FAIL_UNREACHABLE},
    {CURLE_PARTIAL_FILE, true, PW_FAIL_BROKEN},
    {CURLE_HTTP2_STREAM, true, PW_FAIL_BROKEN},
    {CURLE_OUT_OF_MEMORY, true, PW_FAIL_INTERNAL},
};

START_TEST(test_curl)
{
	const struct curl_case *c = &curl_cases[_i];

	ck_assert_msg(pw_map_curl(c->rc, c->got_bytes) == c->fail,
	    "curl %d (bytes %d): %s, want %s", (int)c->rc, c->got_bytes,
	    pw_fail_str(pw_map_curl(c->rc, c->got_bytes)),
	    pw_fail_str(c->fail));
}
END_TEST

struct fail_case {
	enum pw_fail fail;
	bool streamed;
	int status;
	const char *code;
};

static const struct fail_case fail_cases[] = {
    {PW_FAIL_NONE, false, 200, ""},
    {PW_FAIL_TIMEOUT, false, 504, "upstream_timeout"},
    {PW_FAIL_TIMEOUT, true, 502, "upstream_stream_error"},
    {PW_FAIL_UNREACHABLE, false, 502, "upstream_unreachable"},
    {PW_FAIL_BROKEN, false, 502, "upstream_error"},
    {PW_FAIL_BROKEN, true, 502, "upstream_stream_error"},
    {PW_FAIL_TOO_LARGE, false, 502, "upstream_response_too_large"},
    {PW_FAIL_TOO_LARGE, true, 502, "upstream_stream_error"},
    {PW_FAIL_CANCELLED, false, 499, "cancelled"},
    {PW_FAIL_CANCELLED, true, 499, "cancelled"},
    {PW_FAIL_STOPPING, false, 503, "worker_stopping"},
    {PW_FAIL_STOPPING, true, 502, "upstream_stream_error"},
    {PW_FAIL_INTERNAL, false, 500, "internal_error"},
};

START_TEST(test_fail)
{
	const struct fail_case *c = &fail_cases[_i];
	struct pw_outcome o = pw_map_fail(c->fail, c->streamed);

	ck_assert_msg(o.status == c->status, "%s/%d: %d", pw_fail_str(c->fail),
	    c->streamed, o.status);
	ck_assert_str_eq(o.code, c->code);
}
END_TEST

/* 2023-11-14T22:13:20Z */
#define NOW ((time_t)1700000000)

struct ra_case {
	const char *ms, *s;
	int rv;
	int64_t want;
};

static const struct ra_case ra_cases[] = {
    {"250", NULL, 0, 250},
    {"250.2", "9", 0, 251}, /* ms wins, rounded up */
    {"0", NULL, 0, 0},
    {"abc", "2", 0, 2000}, /* a bad ms header falls back */
    {NULL, "2", 0, 2000},
    {NULL, "1.5", 0, 1500},
    {NULL, " 3 ", 0, 3000},
    {NULL, "0.0001", 0, 1},
    {NULL, "100000000", 0, 86400000}, /* clamped */
    {NULL, "Tue, 14 Nov 2023 22:13:30 GMT", 0, 10000},
    {NULL, "Tue, 14 Nov 2023 22:00:00 GMT", 0, 0}, /* past */
    {NULL, "-1", -ENOENT, 0},
    {NULL, "", -ENOENT, 0},
    {NULL, "inf", -ENOENT, 0},
    {NULL, "nan", -ENOENT, 0},
    {NULL, "5s", -ENOENT, 0},
    {NULL, "not a date", -ENOENT, 0},
    {"-5", NULL, -ENOENT, 0},
    {NULL, NULL, -ENOENT, 0},
};

START_TEST(test_retry_after)
{
	const struct ra_case *c = &ra_cases[_i];
	int64_t v = -42;
	int rv = pw_retry_after_parse(c->ms, c->s, NOW, &v);

	ck_assert_msg(rv == c->rv, "ms=%s s=%s: rv %d", c->ms ? c->ms : "-",
	    c->s ? c->s : "-", rv);
	if (rv == 0)
		ck_assert_msg(v == c->want, "ms=%s s=%s: %lld, want %lld",
		    c->ms ? c->ms : "-", c->s ? c->s : "-", (long long)v,
		    (long long)c->want);
	else
		ck_assert_int_eq(v, -42);
}
END_TEST

START_TEST(test_error_event_bytes)
{
	struct buf b;

	buf_init(&b, 4096);
	ck_assert_int_eq(
	    pw_error_event(PW_PROV_CLAUDE, "connection lost", true, &b), 0);
	ck_assert_str_eq(b.data,
	    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":"
	    "\"api_error\",\"message\":\"connection lost\"}}\n\n");
	buf_reset(&b);
	ck_assert_int_eq(
	    pw_error_event(PW_PROV_OPENAI, "say \"hi\"", false, &b), 0);
	ck_assert_str_eq(b.data,
	    "\n\ndata: {\"error\":{\"message\":\"say \\\"hi\\\"\",\"type\":"
	    "\"server_error\",\"param\":null,\"code\":\"upstream_error\"}}"
	    "\n\n");
	buf_free(&b);
}
END_TEST

/* The error event, appended to a stream cut anywhere, is seen by an SSE
 * reader as one error event (and the prefix only when needed). */
START_TEST(test_error_event_after_cut)
{
	enum pw_prov p = (enum pw_prov)(_i % 2);
	const char *src =
	    p == PW_PROV_CLAUDE ? pw_claude_stream : pw_openai_stream;
	size_t cut = (size_t)(_i / 2) * 37 % strlen(src);
	struct pw_stream_usage su;
	struct buf ev;

	pw_stream_usage_init(&su, p);
	pw_stream_usage_feed(&su, src, cut);
	buf_init(&ev, 4096);
	ck_assert_int_eq(pw_error_event(p,
			     "the connection to the provider "
			     "broke",
			     pw_sse_at_boundary(&su.sse), &ev),
	    0);
	pw_stream_usage_feed(&su, ev.data, ev.len);
	ck_assert_msg(su.error_seen, "cut at %zu", cut);
	ck_assert_str_eq(
	    su.error_message, "the connection to the provider broke");
	ck_assert(pw_sse_at_boundary(&su.sse));
	buf_free(&ev);
	pw_stream_usage_free(&su);
}
END_TEST

struct utf8_case {
	const char *in, *want;
};

static const struct utf8_case utf8_cases[] = {
    {"plain", "plain"},
    {"caf\xc3\xa9", "caf\xc3\xa9"},
    {"cut \xe2\x82", "cut "},  /* truncated at the end */
    {"bad \xff x", "bad ? x"}, /* invalid byte */
    {"\xc0\xaf", "??"},        /* overlong */
    {"\xed\xa0\x80", "???"},   /* surrogate */
    {"\xf0\x9f\x98\x80!", "\xf0\x9f\x98\x80!"},
    {"mid \xe2\x82 x", "mid ?? x"},
};

START_TEST(test_utf8_clip)
{
	char s[64];

	snprintf(s, sizeof(s), "%s", utf8_cases[_i].in);
	pw_utf8_clip(s);
	ck_assert_str_eq(s, utf8_cases[_i].want);
}
END_TEST

struct url_case {
	const char *base;
	enum pw_prov p;
	const char *want;
};

static const struct url_case url_cases[] = {
    {"https://api.anthropic.com", PW_PROV_CLAUDE,
	"https://api.anthropic.com/v1/messages"},
    {"https://api.openai.com", PW_PROV_OPENAI,
	"https://api.openai.com/v1/chat/completions"},
    {"https://api.openai.com/v1", PW_PROV_OPENAI,
	"https://api.openai.com/v1/chat/completions"},
    {"http://127.0.0.1:9000/", PW_PROV_CLAUDE,
	"http://127.0.0.1:9000/v1/messages"},
    {"http://h/prefix/v1/", PW_PROV_CLAUDE, "http://h/prefix/v1/messages"},
};

START_TEST(test_endpoint_url)
{
	char *u = NULL;

	ck_assert_int_eq(
	    pw_endpoint_url(url_cases[_i].base, url_cases[_i].p, &u), 0);
	ck_assert_str_eq(u, url_cases[_i].want);
	free(u);
}
END_TEST

#define N(a) (int)(sizeof(a) / sizeof((a)[0]))

Suite *
pw_map_suite(void)
{
	Suite *s = suite_create("pw_map");
	TCase *tc;

	tc = tcase_create("status");
	tcase_add_loop_test(tc, test_http, 0, N(http_cases));
	tcase_add_loop_test(tc, test_curl, 0, N(curl_cases));
	tcase_add_loop_test(tc, test_fail, 0, N(fail_cases));
	suite_add_tcase(s, tc);

	tc = tcase_create("retry_after");
	tcase_add_loop_test(tc, test_retry_after, 0, N(ra_cases));
	suite_add_tcase(s, tc);

	tc = tcase_create("error_event");
	tcase_add_test(tc, test_error_event_bytes);
	tcase_add_loop_test(tc, test_error_event_after_cut, 0, 2 * 60);
	suite_add_tcase(s, tc);

	tc = tcase_create("text");
	tcase_add_loop_test(tc, test_utf8_clip, 0, N(utf8_cases));
	tcase_add_loop_test(tc, test_endpoint_url, 0, N(url_cases));
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return pw_unit_run(pw_map_suite());
}
