/*
 * Streams through the whole path: the SSE body the client gets is the
 * mock's own stream byte for byte (compared with the same request sent to
 * the mock directly), plus the final aiproxy event on the envelope
 * routes; mid-stream faults (drop, stall, error event) end with the
 * provider's error event; an upstream error before the first byte is a
 * JSON error; a client leaving mid-stream cancels the upstream call.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "clock.h"
#include "models.h"
#include "suite.h"

static struct suite S;
static struct model_table *T;

#define TIMEOUT_S 2

/* POSTs body to the mock itself, as the worker would. */
static void
mock_direct(const char *path, const char *body, struct h_resp *r)
{
	const char *const anth[] = {"Content-Type: application/json",
	    "x-api-key: " SUITE_ANTHROPIC_KEY, "anthropic-version: 2023-06-01",
	    NULL};
	const char *const oai[] = {"Content-Type: application/json",
	    "Authorization: Bearer " SUITE_OPENAI_KEY, NULL};
	char url[256];

	snprintf(url, sizeof(url), "%s%s", S.mock.url, path);
	ck_assert_int_eq(
	    h_http("POST", url, strcmp(path, "/v1/messages") == 0 ? anth : oai,
		body, strlen(body), 20000, r),
	    0);
	ck_assert_int_eq(r->status, 200);
}

static void
gw_stream(const char *path, const char *body, const char *rid, struct h_resp *r)
{
	char hdr[128], v[128];
	const char *const h[] = {hdr, NULL};
	const char *missing;

	snprintf(hdr, sizeof(hdr), "X-Request-ID: %s", rid);
	ck_assert_int_eq(suite_post(&S, path, body, h, r), 0);
	ck_assert_msg(r->status == 200, "status %ld: %s", r->status, r->body);
	missing = suite_missing_security_header(r);
	ck_assert_msg(missing == NULL, "missing %s", missing);
	ck_assert_ptr_nonnull(h_resp_header(r, "Content-Type", v, sizeof(v)));
	ck_assert_str_eq(v, "text/event-stream");
	h_resp_header(r, "X-Request-ID", v, sizeof(v));
	ck_assert_str_eq(v, rid);
}

#define TEXT "Stream me some words please, quick brown fox jumps"

static const char *const anth_body =
    "{\"model\":\"claude-3-haiku-20240307\",\"max_tokens\":100,\"stream\":"
    "true,\"messages\":[{\"role\":\"user\",\"content\":\"" TEXT "\"}]}";
static const char *const oai_body =
    "{\"model\":\"gpt-4o-mini-2024-07-18\",\"max_tokens\":100,\"stream\":true,"
    "\"stream_options\":{\"include_usage\":true},\"messages\":[{\"role\":"
    "\"user\",\"content\":\"" TEXT "\"}]}";

static void
assert_same_stream(struct h_resp *gw, struct h_resp *direct, size_t gw_len)
{
	char *a = strndup(gw->body, gw_len), *b = strdup(direct->body);

	suite_normalize(a);
	suite_normalize(b);
	ck_assert_msg(strcmp(a, b) == 0,
	    "streams differ:\n--- gateway\n%s\n"
	    "--- mock\n%s",
	    a, b);
	free(a);
	free(b);
}

START_TEST(test_dropin_anthropic_byte_exact)
{
	static const char *const names[] = {"message_start",
	    "content_block_start", "ping", "content_block_delta",
	    "content_block_stop", "message_delta", "message_stop"};
	struct h_resp g, d;
	struct h_sse_event *ev;
	size_t n, k = 0;

	gw_stream("/v1/messages", anth_body, "st-anth", &g);
	mock_direct("/v1/messages", anth_body, &d);
	assert_same_stream(&g, &d, g.body_len);
	ck_assert_int_eq(h_sse_parse(g.body, g.body_len, &ev, &n), 0);
	ck_assert_uint_ge(n, 8);
	/* The grammar, event by event. */
	for (size_t i = 0; i < n; i++) {
		json_t *j = json_loads(ev[i].data, 0, NULL);

		ck_assert_ptr_nonnull(ev[i].event);
		ck_assert_ptr_nonnull(j);
		ck_assert_str_eq(
		    json_string_value(json_object_get(j, "type")), ev[i].event);
		if (strcmp(ev[i].event, names[k]) != 0 &&
		    k + 1 < sizeof(names) / sizeof(names[0]) &&
		    strcmp(ev[i].event, names[k + 1]) == 0)
			k++;
		ck_assert_msg(strcmp(ev[i].event, names[k]) == 0,
		    "event %zu is %s", i, ev[i].event);
		json_decref(j);
	}
	ck_assert_str_eq(ev[n - 1].event, "message_stop");
	h_sse_free(ev, n);
	h_resp_free(&g);
	h_resp_free(&d);
}
END_TEST

START_TEST(test_dropin_openai_byte_exact)
{
	struct h_resp g, d;
	struct h_sse_event *ev;
	size_t n;
	json_t *j;

	gw_stream("/v1/chat/completions", oai_body, "st-oai", &g);
	mock_direct("/v1/chat/completions", oai_body, &d);
	assert_same_stream(&g, &d, g.body_len);
	ck_assert_int_eq(h_sse_parse(g.body, g.body_len, &ev, &n), 0);
	ck_assert_uint_ge(n, 3);
	ck_assert_str_eq(ev[n - 1].data, "[DONE]");
	/* The usage chunk (include_usage) just before [DONE]. */
	j = json_loads(ev[n - 2].data, 0, NULL);
	ck_assert_ptr_nonnull(j);
	ck_assert_uint_eq(json_array_size(json_object_get(j, "choices")), 0);
	ck_assert(json_is_object(json_object_get(j, "usage")));
	json_decref(j);
	h_sse_free(ev, n);
	h_resp_free(&g);
	h_resp_free(&d);
}
END_TEST

static int64_t
expected_cost(const char *model, const char *text)
{
	struct model_usage u;
	char reply[128];
	int64_t words = 0;
	bool in = false;

	memset(&u, 0, sizeof(u));
	u.input = (int64_t)strlen(text) / 4 + 1;
	snprintf(reply, sizeof(reply), "Mock reply to: %.48s", text);
	for (const char *p = reply; *p != '\0'; p++) {
		if (*p != ' ' && !in)
			words++;
		in = *p != ' ';
	}
	u.output = words;
	return models_cost(models_lookup(T, model), &u);
}

START_TEST(test_envelope_streams)
{
	const char *path = _i == 0 ? "/api/v1/ai-proxy/claude/chat"
				   : "/api/v1/ai-proxy/openai/chat";
	const char *body = _i == 0 ? anth_body : oai_body;
	const char *model =
	    _i == 0 ? "claude-3-haiku-20240307" : "gpt-4o-mini-2024-07-18";
	struct h_resp g, d;
	struct h_sse_event *ev;
	const char *last;
	size_t n;
	json_t *j;

	gw_stream(path, body, _i == 0 ? "st-env-c" : "st-env-o", &g);
	mock_direct(
	    _i == 0 ? "/v1/messages" : "/v1/chat/completions", body, &d);
	/* The provider's events, then one aiproxy event. */
	last = strstr(g.body, "event: aiproxy\n");
	ck_assert_ptr_nonnull(last);
	assert_same_stream(&g, &d, (size_t)(last - g.body));
	ck_assert_int_eq(h_sse_parse(last, strlen(last), &ev, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(ev[0].event, "aiproxy");
	j = json_loads(ev[0].data, 0, NULL);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(json_string_value(json_object_get(j, "request_id")),
	    _i == 0 ? "st-env-c" : "st-env-o");
	ck_assert(json_is_false(json_object_get(j, "cached")));
	ck_assert(json_is_integer(json_object_get(j, "response_time_ms")));
	ck_assert_int_eq(
	    (int64_t)(json_number_value(json_object_get(j, "cost")) * 1e6 +
		      0.5),
	    expected_cost(model, TEXT));
	json_decref(j);
	h_sse_free(ev, n);
	h_resp_free(&g);
	h_resp_free(&d);
}
END_TEST

/* A stream that fails mid-way ends with the provider's error event. */
START_TEST(test_midstream_faults)
{
	static const char *const spec[] = {
	    "drop-after=4", "error-event-after=4", "stall-after=4"};
	const char *fault = spec[_i / 2];
	bool anth = _i % 2 == 0;
	char body[512], rid[32];
	struct h_resp g;
	struct h_sse_event *ev;
	int64_t t0 = clock_mono_ms();
	size_t n;

	snprintf(rid, sizeof(rid), "st-fault-%d", _i);
	if (anth)
		snprintf(body, sizeof(body),
		    "{\"model\":\"claude-3-haiku\",\"max_tokens\":100,"
		    "\"stream\":true,\"messages\":[{\"role\":\"user\","
		    "\"content\":\"a b c d e f g h [[mock:%s]]\"}]}",
		    fault);
	else
		snprintf(body, sizeof(body),
		    "{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":"
		    "[{\"role\":\"user\",\"content\":\"a b c d e f g h "
		    "[[mock:%s]]\"}]}",
		    fault);
	gw_stream(
	    anth ? "/v1/messages" : "/v1/chat/completions", body, rid, &g);
	ck_assert_int_lt(clock_mono_ms() - t0, TIMEOUT_S * 1000 + 4000);
	ck_assert_int_eq(h_sse_parse(g.body, g.body_len, &ev, &n), 0);
	ck_assert_uint_ge(n, 2);
	/* The events before the fault came through... */
	if (anth)
		ck_assert_str_eq(ev[0].event, "message_start");
	else
		ck_assert_ptr_nonnull(
		    strstr(ev[0].data, "chat.completion.chunk"));
	/* ...and the last one is an error event. */
	if (anth) {
		ck_assert_ptr_nonnull(ev[n - 1].event);
		ck_assert_str_eq(ev[n - 1].event, "error");
		ck_assert_ptr_nonnull(
		    strstr(ev[n - 1].data, "\"type\":\"error\""));
	} else {
		json_t *j = json_loads(ev[n - 1].data, 0, NULL);

		ck_assert_ptr_nonnull(j);
		ck_assert(json_is_object(json_object_get(j, "error")));
		json_decref(j);
	}
	h_sse_free(ev, n);
	h_resp_free(&g);
}
END_TEST

START_TEST(test_error_before_first_byte)
{
	char v[32];
	struct h_resp r;
	json_t *j;

	ck_assert_int_eq(
	    suite_post(&S, "/api/v1/ai-proxy/claude/chat",
		"{\"stream\":true,\"messages\":[{\"role\":\"user\","
		"\"content\":\"x [[mock:status=429;retry-after=2]]\"}"
		"]}",
		NULL, &r),
	    0);
	ck_assert_int_eq(r.status, 429);
	h_resp_header(&r, "Content-Type", v, sizeof(v));
	ck_assert_str_eq(v, "application/json");
	h_resp_header(&r, "Retry-After", v, sizeof(v));
	ck_assert_str_eq(v, "2");
	j = suite_json(&r);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(json_string_value(json_object_get(j, "error")),
	    "upstream_rate_limited");
	json_decref(j);
	h_resp_free(&r);
	/* Drop-in: the provider's body, JSON. */
	ck_assert_int_eq(suite_post(&S, "/v1/messages",
			     "{\"model\":\"claude-3-haiku\",\"max_tokens\":9,"
			     "\"stream\":true,\"messages\":[{\"role\":\"user\","
			     "\"content\":\"x [[mock:status=529]]\"}]}",
			     NULL, &r),
	    0);
	ck_assert_int_eq(r.status, 503);
	j = suite_json(&r);
	ck_assert_str_eq(json_string_value(json_object_get(
			     json_object_get(j, "error"), "type")),
	    "overloaded_error");
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

/* ---- a raw HTTP client that can leave mid-stream ---- */

static int
raw_post(const char *path, const char *body, const char *rid)
{
	struct sockaddr_in sa;
	char req[4096];
	int fd, n;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)S.http_port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	n = snprintf(req, sizeof(req),
	    "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
	    "application/json\r\nX-Request-ID: %s\r\nContent-Length: %zu\r\n"
	    "\r\n%s",
	    path, rid, strlen(body), body);
	ck_assert_int_eq(write(fd, req, (size_t)n), n);
	return fd;
}

/* Reads until needle was seen (or timeout); returns bytes read. */
static size_t
raw_read_until(
    int fd, const char *needle, int timeout_ms, char *buf, size_t cap)
{
	int64_t end = clock_mono_ms() + timeout_ms;
	size_t len = 0;

	buf[0] = '\0';
	while (clock_mono_ms() < end && len < cap - 1) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t k;

		if (poll(&p, 1, 50) <= 0)
			continue;
		if ((k = read(fd, buf + len, cap - 1 - len)) <= 0)
			break;
		len += (size_t)k;
		buf[len] = '\0';
		if (strstr(buf, needle) != NULL)
			break;
	}
	return len;
}

START_TEST(test_first_byte_early)
{
	/* 12 events 150 ms apart: the first reaches the client long before
	 * the last is sent upstream. */
	const char *body = "{\"model\":\"claude-3-haiku\",\"max_tokens\":50,"
			   "\"stream\":true,\"messages\":[{\"role\":\"user\","
			   "\"content\":\"one two [[mock:chunk-delay-ms=150]]\""
			   "}]}";
	char buf[65536];
	int64_t t0 = clock_mono_ms(), first, all;
	int fd = raw_post("/v1/messages", body, "st-early");

	raw_read_until(fd, "message_start", 5000, buf, sizeof(buf));
	first = clock_mono_ms() - t0;
	ck_assert_ptr_nonnull(strstr(buf, "message_start"));
	raw_read_until(fd, "message_stop", 10000, buf, sizeof(buf));
	all = clock_mono_ms() - t0;
	close(fd);
	ck_assert_msg(
	    first < 500, "first event after %lld ms", (long long)first);
	ck_assert_int_ge(all, 900);
}
END_TEST

START_TEST(test_client_disconnect_cancels)
{
	const char *body = "{\"model\":\"gpt-4o-mini\",\"stream\":true,"
			   "\"messages\":[{\"role\":\"user\",\"content\":\"a b "
			   "c d e f g h i j k l m n o p q r s t u v w x y z "
			   "[[mock:chunk-delay-ms=100]]\"}]}";
	char buf[65536];
	int fd = raw_post("/v1/chat/completions", body, "st-gone");

	raw_read_until(fd, "\"content\":\"Mock \"", 5000, buf, sizeof(buf));
	ck_assert_ptr_nonnull(strstr(buf, "200 OK"));
	close(fd);
	/* The gateway cancels, the worker aborts, the mock sees it. */
	ck_assert_int_eq(
	    suite_mock_wait_outcome(&S, "st-gone", "client_closed", 5000), 0);
	/* The gateway logs after publishing: the worker may be quicker. */
	ck_assert_int_eq(
	    h_wait_file_contains(S.gw.log_path, "cancel published", 5000), 0);
}
END_TEST

START_TEST(test_no_key_in_logs)
{
	size_t n = 0;
	char *logs = suite_logs(&S, &n);

	ck_assert_ptr_nonnull(logs);
	ck_assert_msg(!suite_has_key(logs, n), "a provider key is in a log");
	free(logs);
}
END_TEST

static Suite *
gateway_stream_suite(void)
{
	Suite *s = suite_create("gateway_stream");
	TCase *tc = tcase_create("stream");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_dropin_anthropic_byte_exact);
	tcase_add_test(tc, test_dropin_openai_byte_exact);
	tcase_add_loop_test(tc, test_envelope_streams, 0, 2);
	tcase_add_loop_test(tc, test_midstream_faults, 0, 6);
	tcase_add_test(tc, test_error_before_first_byte);
	tcase_add_test(tc, test_first_byte_early);
	tcase_add_test(tc, test_client_disconnect_cancels);
	tcase_add_test(tc, test_no_key_in_logs);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	struct suite_opts o = {.workers = 1, .timeout_seconds = TIMEOUT_S};
	char path[4096], err[256];
	SRunner *sr;
	int failed, rv;

	snprintf(path, sizeof(path), "%s/config/models.json", h_source_dir());
	if (models_load(path, &T, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s: %s\n", path, err);
		return 1;
	}
	if ((rv = suite_start(&S, &o)) != 0) {
		fprintf(stderr, "suite_start: %d\n", rv);
		models_free(T);
		return 1;
	}
	sr = srunner_create(gateway_stream_suite());
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	suite_stop(&S);
	if (S.gw_exit != 0) {
		fprintf(stderr, "gateway exit status %d\n", S.gw_exit);
		failed++;
	}
	models_free(T);
	return failed == 0 ? 0 : 1;
}
