/*
 * mock_upstream_test: drives a real aiproxy-mock-upstream through the
 * harness and checks both providers' wire formats, the deterministic
 * usage rules of README.md, every fault and the /_mock routes.
 */
#include "harness.h"

#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define T_TIMEOUT_MS 5000
#define A_KEY        "test-anthropic-key"
#define O_KEY        "test-openai-key"
#define A_AUTH       "x-api-key: " A_KEY
#define O_AUTH       "Authorization: Bearer " O_KEY

static struct h_mock mock;

static void
setup(void)
{
	ck_assert_int_eq(h_mock_start(&mock, NULL, NULL), 0);
}

static void
teardown(void)
{
	h_mock_stop(&mock);
}

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* POSTs body to path; returns h_http's result. */
static int
post(const char *path, const char *h1, const char *h2, const char *body,
    int timeout_ms, struct h_resp *r)
{
	const char *hdrs[4] = {"Content-Type: application/json", h1, h2, NULL};
	char url[256];

	if (h1 == NULL)
		hdrs[1] = NULL;
	else if (h2 == NULL)
		hdrs[2] = NULL;
	snprintf(url, sizeof(url), "%s%s", mock.url, path);
	return h_http("POST", url, hdrs, body, strlen(body), timeout_ms, r);
}

static json_t *
parse(const char *s)
{
	json_error_t err;
	json_t *j = json_loads(s, 0, &err);

	ck_assert_msg(j != NULL, "bad JSON (%s): %s", err.text, s);
	return j;
}

static long long
jint(json_t *o, const char *path)
{
	json_t *v = json_object_get(o, path);

	ck_assert_msg(json_is_integer(v), "%s is not an integer", path);
	return json_integer_value(v);
}

static const char *
jstr(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	ck_assert_msg(s != NULL, "%s is not a string", key);
	return s;
}

static json_t *
mock_requests(void)
{
	struct h_resp r;
	char url[256];
	json_t *j;

	snprintf(url, sizeof(url), "%s/_mock/requests", mock.url);
	ck_assert_int_eq(
	    h_http("GET", url, NULL, NULL, 0, T_TIMEOUT_MS, &r), 0);
	ck_assert_int_eq(r.status, 200);
	j = parse(r.body);
	h_resp_free(&r);
	ck_assert(json_is_array(j));
	return j;
}

static int
set_config(const char *body, struct h_resp *r)
{
	char url[256];

	snprintf(url, sizeof(url), "%s/_mock/config", mock.url);
	return h_http("POST", url, NULL, body, strlen(body), T_TIMEOUT_MS, r);
}

/* Polls the request log until entry seq has the wanted outcome. */
static bool
wait_outcome(long long seq, const char *want, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;
	struct timespec nap = {0, 20 * 1000000L};
	json_t *log, *e;
	size_t i;
	bool ok = false;

	while (!ok && now_ms() < deadline) {
		log = mock_requests();
		json_array_foreach(log, i, e) {
			if (json_integer_value(json_object_get(e, "seq")) ==
				seq &&
			    strcmp(json_string_value(
				       json_object_get(e, "outcome")),
				want) == 0)
				ok = true;
		}
		json_decref(log);
		if (!ok)
			nanosleep(&nap, NULL);
	}
	return ok;
}

/* ---- Anthropic ---- */

/* T = 9 (system) + 5 (text block) + 8 (tool_result) + 11 = 33 -> 9. */
#define A_BODY_USAGE                                                           \
	"{\"model\":\"claude-test\",\"max_tokens\":100,\"system\":[{\"type\":" \
	"\"text\",\"text\":\"Be terse.\"}],\"messages\":[{\"role\":\"user\","  \
	"\"content\":[{\"type\":\"text\",\"text\":\"first\"}]},{\"role\":"     \
	"\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t1\","     \
	"\"name\":\"x\",\"input\":{}}]},{\"role\":\"user\",\"content\":[{"     \
	"\"type\":\"tool_result\",\"tool_use_id\":\"t1\",\"content\":\"18 C, " \
	"c\"},{\"type\":\"text\",\"text\":\"Hello world\"}]}]}"

START_TEST(anthropic_message)
{
	struct h_resp r;
	char v[64];
	json_t *j, *u, *c;

	ck_assert_int_eq(
	    post("/v1/messages", A_AUTH, "anthropic-version: 2023-06-01",
		A_BODY_USAGE, T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(h_resp_header(&r, "content-type", v, sizeof(v)),
	    "application/json");
	ck_assert_ptr_nonnull(h_resp_header(&r, "request-id", v, sizeof(v)));
	ck_assert_int_eq(strncmp(v, "req_", 4), 0);
	j = parse(r.body);
	ck_assert_str_eq(jstr(j, "type"), "message");
	ck_assert_str_eq(jstr(j, "role"), "assistant");
	ck_assert_str_eq(jstr(j, "model"), "claude-test");
	ck_assert_str_eq(jstr(j, "stop_reason"), "end_turn");
	ck_assert(json_is_null(json_object_get(j, "stop_sequence")));
	c = json_array_get(json_object_get(j, "content"), 0);
	ck_assert_str_eq(jstr(c, "type"), "text");
	/* Last user message text = "18 C, c" + "Hello world". */
	ck_assert_str_eq(jstr(c, "text"), "Mock reply to: 18 C, cHello world");
	u = json_object_get(j, "usage");
	ck_assert_int_eq(jint(u, "input_tokens"), 33 / 4 + 1);
	ck_assert_int_eq(jint(u, "output_tokens"), 7);
	ck_assert_int_eq(jint(u, "cache_read_input_tokens"), 0);
	ck_assert_int_eq(jint(u, "cache_creation_input_tokens"), 0);
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

START_TEST(anthropic_max_tokens_cut)
{
	struct h_resp r;
	json_t *j;

	ck_assert_int_eq(post("/v1/messages", A_AUTH, NULL,
			     "{\"model\":\"m\",\"max_tokens\":2,\"messages\":[{"
			     "\"role\":\"user\",\"content\":\"a b c\"}]}",
			     T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(r.status, 200);
	j = parse(r.body);
	ck_assert_str_eq(jstr(j, "stop_reason"), "max_tokens");
	ck_assert_str_eq(
	    jstr(json_array_get(json_object_get(j, "content"), 0), "text"),
	    "Mock reply");
	ck_assert_int_eq(jint(json_object_get(j, "usage"), "output_tokens"), 2);
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

START_TEST(anthropic_stream)
{
	static const char *const want[] = {"message_start",
	    "content_block_start", "ping", "content_block_delta",
	    "content_block_delta", "content_block_delta", "content_block_delta",
	    "content_block_delta", "content_block_stop", "message_delta",
	    "message_stop"};
	struct h_sse_event *ev;
	struct h_resp r;
	char text[256] = "", v[64];
	size_t n, i;
	json_t *d;

	ck_assert_int_eq(
	    post("/v1/messages", A_AUTH, "x-mock-cache-read: 7",
		"{\"model\":\"m\",\"max_tokens\":50,\"stream\":true,"
		"\"messages\":[{\"role\":\"user\",\"content\":"
		"\"hello  there\"}]}",
		T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(h_resp_header(&r, "content-type", v, sizeof(v)),
	    "text/event-stream");
	ck_assert_int_eq(strncmp(r.body,
			     "event: message_start\ndata: {\"type\":"
			     "\"message_start\",",
			     46),
	    0);
	ck_assert_ptr_nonnull(
	    strstr(r.body, "\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\n"));
	ck_assert_int_eq(h_sse_parse(r.body, r.body_len, &ev, &n), 0);
	ck_assert_uint_eq(n, sizeof(want) / sizeof(want[0]));
	for (i = 0; i < n; i++) {
		ck_assert_str_eq(ev[i].event, want[i]);
		d = parse(ev[i].data);
		ck_assert_str_eq(jstr(d, "type"), want[i]);
		if (i == 0) {
			json_t *u = json_object_get(
			    json_object_get(d, "message"), "usage");

			ck_assert_int_eq(jint(u, "input_tokens"), 13 / 4 + 1);
			ck_assert_int_eq(jint(u, "cache_read_input_tokens"), 7);
		}
		if (strcmp(want[i], "content_block_delta") == 0) {
			json_t *dl = json_object_get(d, "delta");

			ck_assert_str_eq(jstr(dl, "type"), "text_delta");
			strncat(text, jstr(dl, "text"),
			    sizeof(text) - strlen(text) - 1);
		}
		if (strcmp(want[i], "message_delta") == 0) {
			ck_assert_str_eq(
			    jstr(json_object_get(d, "delta"), "stop_reason"),
			    "end_turn");
			ck_assert_int_eq(
			    jint(json_object_get(d, "usage"), "output_tokens"),
			    5);
		}
		json_decref(d);
	}
	ck_assert_str_eq(text, "Mock reply to: hello  there");
	h_sse_free(ev, n);
	h_resp_free(&r);
}
END_TEST

START_TEST(anthropic_tool_use)
{
	static const char body[] =
	    "{\"model\":\"m\",\"max_tokens\":50,\"stream\":%s,\"messages\":[{"
	    "\"role\":\"user\",\"content\":\"weather?\"}],\"tools\":[{\"name\":"
	    "\"get_weather\",\"input_schema\":{\"type\":\"object\","
	    "\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":["
	    "\"city\"]}}]}";
	struct h_sse_event *ev;
	struct h_resp r;
	char buf[512], args[256] = "";
	size_t n, i, frags = 0;
	json_t *j, *c, *d;

	snprintf(buf, sizeof(buf), body, "false");
	ck_assert_int_eq(
	    post("/v1/messages", A_AUTH, NULL, buf, T_TIMEOUT_MS, &r), 0);
	ck_assert_int_eq(r.status, 200);
	j = parse(r.body);
	ck_assert_str_eq(jstr(j, "stop_reason"), "tool_use");
	c = json_array_get(json_object_get(j, "content"), 0);
	ck_assert_str_eq(jstr(c, "type"), "tool_use");
	ck_assert_str_eq(jstr(c, "name"), "get_weather");
	ck_assert_str_eq(jstr(json_object_get(c, "input"), "city"), "mock");
	json_decref(j);
	h_resp_free(&r);

	snprintf(buf, sizeof(buf), body, "true");
	ck_assert_int_eq(
	    post("/v1/messages", A_AUTH, NULL, buf, T_TIMEOUT_MS, &r), 0);
	ck_assert_int_eq(h_sse_parse(r.body, r.body_len, &ev, &n), 0);
	for (i = 0; i < n; i++) {
		d = parse(ev[i].data);
		if (strcmp(ev[i].event, "content_block_start") == 0)
			ck_assert_str_eq(
			    jstr(json_object_get(d, "content_block"), "type"),
			    "tool_use");
		if (strcmp(ev[i].event, "content_block_delta") == 0) {
			json_t *dl = json_object_get(d, "delta");

			ck_assert_str_eq(jstr(dl, "type"), "input_json_delta");
			if (frags++ == 0)
				ck_assert_str_eq(jstr(dl, "partial_json"), "");
			strncat(args, jstr(dl, "partial_json"),
			    sizeof(args) - strlen(args) - 1);
		}
		if (strcmp(ev[i].event, "message_delta") == 0)
			ck_assert_str_eq(
			    jstr(json_object_get(d, "delta"), "stop_reason"),
			    "tool_use");
		json_decref(d);
	}
	ck_assert_uint_ge(frags, 3);
	j = parse(args);
	ck_assert_str_eq(jstr(j, "city"), "mock");
	json_decref(j);
	h_sse_free(ev, n);
	h_resp_free(&r);
}
END_TEST

/* ---- OpenAI ---- */

START_TEST(openai_completion)
{
	struct h_resp r;
	char v[64];
	json_t *j, *ch, *u;

	/* T = 9 + 2 + 3 = 14 -> 4; cached 10 -> prompt 14. */
	ck_assert_int_eq(
	    post("/v1/chat/completions", O_AUTH, "x-mock-cache-read: 10",
		"{\"model\":\"gpt-test\",\"max_completion_tokens\":3,"
		"\"messages\":[{\"role\":\"system\",\"content\":"
		"\"Be terse.\"},{\"role\":\"user\",\"content\":[{"
		"\"type\":\"text\",\"text\":\"hi\"},{\"type\":"
		"\"image_url\",\"image_url\":{\"url\":\"x\"}},{"
		"\"type\":\"text\",\"text\":\" yo\"}]}]}",
		T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_ptr_nonnull(h_resp_header(&r, "x-request-id", v, sizeof(v)));
	j = parse(r.body);
	ck_assert_str_eq(jstr(j, "object"), "chat.completion");
	ck_assert_str_eq(jstr(j, "model"), "gpt-test");
	ch = json_array_get(json_object_get(j, "choices"), 0);
	ck_assert_str_eq(jstr(ch, "finish_reason"), "length");
	ck_assert_str_eq(
	    jstr(json_object_get(ch, "message"), "content"), "Mock reply to:");
	u = json_object_get(j, "usage");
	ck_assert_int_eq(jint(u, "prompt_tokens"), 14 / 4 + 1 + 10);
	ck_assert_int_eq(jint(u, "completion_tokens"), 3);
	ck_assert_int_eq(jint(u, "total_tokens"), 14 / 4 + 1 + 10 + 3);
	ck_assert_int_eq(
	    jint(json_object_get(u, "prompt_tokens_details"), "cached_tokens"),
	    10);
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

START_TEST(openai_stream)
{
	struct h_sse_event *ev;
	struct h_resp r;
	char text[256] = "";
	size_t n, i;
	json_t *d, *ch;
	int include;

	for (include = 0; include < 2; include++) {
		ck_assert_int_eq(
		    post("/v1/chat/completions", O_AUTH, NULL,
			include ? "{\"model\":\"g\",\"stream\":true,"
				  "\"stream_options\":{\"include_usage\":true},"
				  "\"messages\":[{\"role\":\"user\","
				  "\"content\":\"ab cd\"}]}"
				: "{\"model\":\"g\",\"stream\":true,"
				  "\"messages\":[{\"role\":\"user\","
				  "\"content\":\"ab cd\"}]}",
			T_TIMEOUT_MS, &r),
		    0);
		ck_assert_int_eq(r.status, 200);
		ck_assert_ptr_null(strstr(r.body, "event:"));
		ck_assert_int_eq(h_sse_parse(r.body, r.body_len, &ev, &n), 0);
		/* role, 5 words, finish, [usage], [DONE] */
		ck_assert_uint_eq(n, 8 + (size_t)include);
		ck_assert_str_eq(ev[n - 1].data, "[DONE]");
		text[0] = '\0';
		for (i = 0; i + 1 < n; i++) {
			ck_assert_ptr_null(ev[i].event);
			d = parse(ev[i].data);
			ck_assert_str_eq(
			    jstr(d, "object"), "chat.completion.chunk");
			ch = json_array_get(json_object_get(d, "choices"), 0);
			if (include && i == n - 2) {
				json_t *u = json_object_get(d, "usage");

				ck_assert_uint_eq(
				    json_array_size(
					json_object_get(d, "choices")),
				    0);
				ck_assert_int_eq(jint(u, "prompt_tokens"), 2);
				ck_assert_int_eq(
				    jint(u, "completion_tokens"), 5);
				ck_assert_int_eq(jint(u, "total_tokens"), 7);
			} else {
				json_t *c = json_object_get(
				    json_object_get(ch, "delta"), "content");

				if (include)
					ck_assert(json_is_null(
					    json_object_get(d, "usage")));
				else
					ck_assert_ptr_null(
					    json_object_get(d, "usage"));
				if (i == 0)
					ck_assert_str_eq(
					    jstr(json_object_get(ch, "delta"),
						"role"),
					    "assistant");
				if (json_is_string(c))
					strncat(text, json_string_value(c),
					    sizeof(text) - strlen(text) - 1);
				if (i == n - 2 - (size_t)include)
					ck_assert_str_eq(
					    jstr(ch, "finish_reason"), "stop");
				else
					ck_assert(json_is_null(json_object_get(
					    ch, "finish_reason")));
			}
			json_decref(d);
		}
		ck_assert_str_eq(text, "Mock reply to: ab cd");
		h_sse_free(ev, n);
		h_resp_free(&r);
	}
}
END_TEST

START_TEST(openai_tool_calls)
{
	struct h_sse_event *ev;
	struct h_resp r;
	char args[256] = "";
	size_t n, i;
	json_t *d, *ch, *tc, *j;

	ck_assert_int_eq(
	    post("/v1/chat/completions", O_AUTH, NULL,
		"{\"model\":\"g\",\"stream\":true,\"messages\":[{\"role\":"
		"\"user\",\"content\":\"w\"}],\"tools\":[{\"type\":"
		"\"function\",\"function\":{\"name\":\"lookup\",\"parameters\":"
		"{\"type\":\"object\",\"required\":[\"query\"]}}}]}",
		T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(h_sse_parse(r.body, r.body_len, &ev, &n), 0);
	ck_assert_uint_ge(n, 4);
	for (i = 0; i + 1 < n; i++) {
		d = parse(ev[i].data);
		ch = json_array_get(json_object_get(d, "choices"), 0);
		tc = json_array_get(
		    json_object_get(json_object_get(ch, "delta"), "tool_calls"),
		    0);
		if (i == 0) {
			ck_assert_str_eq(jstr(tc, "type"), "function");
			ck_assert_str_eq(
			    jstr(json_object_get(tc, "function"), "name"),
			    "lookup");
		}
		if (tc != NULL)
			strncat(args,
			    jstr(json_object_get(tc, "function"), "arguments"),
			    sizeof(args) - strlen(args) - 1);
		if (i == n - 2)
			ck_assert_str_eq(
			    jstr(ch, "finish_reason"), "tool_calls");
		json_decref(d);
	}
	j = parse(args);
	ck_assert_str_eq(jstr(j, "query"), "mock");
	json_decref(j);
	h_sse_free(ev, n);
	h_resp_free(&r);

	/* tool_choice none: plain text. */
	ck_assert_int_eq(
	    post("/v1/chat/completions", O_AUTH, NULL,
		"{\"model\":\"g\",\"tool_choice\":\"none\",\"messages\":[{"
		"\"role\":\"user\",\"content\":\"w\"}],\"tools\":[{\"type\":"
		"\"function\",\"function\":{\"name\":\"lookup\"}}]}",
		T_TIMEOUT_MS, &r),
	    0);
	j = parse(r.body);
	ch = json_array_get(json_object_get(j, "choices"), 0);
	ck_assert_str_eq(jstr(ch, "finish_reason"), "stop");
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

/* ---- auth, validation, models ---- */

START_TEST(bad_keys)
{
	struct h_resp r;
	json_t *j;

	ck_assert_int_eq(
	    post("/v1/messages", "x-api-key: wrong", NULL,
		"{\"model\":\"m\",\"max_tokens\":1,\"messages\":[]}",
		T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(r.status, 401);
	j = parse(r.body);
	ck_assert_str_eq(jstr(j, "type"), "error");
	ck_assert_str_eq(
	    jstr(json_object_get(j, "error"), "type"), "authentication_error");
	ck_assert_str_eq(
	    jstr(json_object_get(j, "error"), "message"), "invalid x-api-key");
	ck_assert_int_eq(strncmp(jstr(j, "request_id"), "req_", 4), 0);
	json_decref(j);
	h_resp_free(&r);

	ck_assert_int_eq(
	    post("/v1/chat/completions", "Authorization: Bearer sk-wrong", NULL,
		"{}", T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(r.status, 401);
	ck_assert_str_eq(r.body,
	    "{\"error\":{\"message\":\"Incorrect API key provided.\",\"type\":"
	    "\"invalid_request_error\",\"param\":null,\"code\":"
	    "\"invalid_api_key\"}}");
	ck_assert_ptr_null(strstr(r.body, "sk-wrong"));
	h_resp_free(&r);

	/* The Anthropic key is not an OpenAI key. */
	ck_assert_int_eq(
	    post("/v1/chat/completions", "Authorization: Bearer " A_KEY, NULL,
		"{}", T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(r.status, 401);
	h_resp_free(&r);
}
END_TEST

START_TEST(validation)
{
	struct h_resp r;
	json_t *j;

	ck_assert_int_eq(post("/v1/messages", A_AUTH, NULL,
			     "{\"model\":\"m\",\"messages\":[{\"role\":"
			     "\"user\",\"content\":\"x\"}]}",
			     T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(r.status, 400);
	j = parse(r.body);
	ck_assert_str_eq(
	    jstr(json_object_get(j, "error"), "type"), "invalid_request_error");
	json_decref(j);
	h_resp_free(&r);

	ck_assert_int_eq(
	    post("/v1/chat/completions", O_AUTH, NULL,
		"{\"model\":\"g\",\"messages\":[]}", T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(r.status, 400);
	j = parse(r.body);
	ck_assert_str_eq(
	    jstr(json_object_get(j, "error"), "param"), "messages");
	json_decref(j);
	h_resp_free(&r);

	ck_assert_int_eq(post("/v1/chat/completions", O_AUTH, NULL, "not json",
			     T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(r.status, 400);
	h_resp_free(&r);
}
END_TEST

START_TEST(models)
{
	const char *a_hdrs[] = {A_AUTH, "anthropic-version: 2023-06-01", NULL};
	const char *o_hdrs[] = {O_AUTH, NULL};
	struct h_resp r;
	char url[256];
	json_t *j;

	snprintf(url, sizeof(url), "%s/v1/models", mock.url);
	ck_assert_int_eq(
	    h_http("GET", url, a_hdrs, NULL, 0, T_TIMEOUT_MS, &r), 0);
	ck_assert_int_eq(r.status, 200);
	j = parse(r.body);
	ck_assert_str_eq(
	    jstr(json_array_get(json_object_get(j, "data"), 0), "type"),
	    "model");
	ck_assert(json_is_false(json_object_get(j, "has_more")));
	json_decref(j);
	h_resp_free(&r);

	ck_assert_int_eq(
	    h_http("GET", url, o_hdrs, NULL, 0, T_TIMEOUT_MS, &r), 0);
	ck_assert_int_eq(r.status, 200);
	j = parse(r.body);
	ck_assert_str_eq(jstr(j, "object"), "list");
	ck_assert_str_eq(
	    jstr(json_array_get(json_object_get(j, "data"), 0), "owned_by"),
	    "system");
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

/* ---- faults ---- */

START_TEST(fault_status_headers)
{
	struct h_resp r;
	char v[64];
	json_t *j;

	ck_assert_int_eq(post("/v1/messages", A_AUTH,
			     "x-mock-fault: status=529;retry-after-ms=250",
			     "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{"
			     "\"role\":\"user\",\"content\":\"x\"}]}",
			     T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(r.status, 529);
	ck_assert_str_eq(
	    h_resp_header(&r, "retry-after-ms", v, sizeof(v)), "250");
	ck_assert_ptr_null(h_resp_header(&r, "retry-after", v, sizeof(v)));
	j = parse(r.body);
	ck_assert_str_eq(
	    jstr(json_object_get(j, "error"), "type"), "overloaded_error");
	json_decref(j);
	h_resp_free(&r);

	ck_assert_int_eq(post("/v1/chat/completions", O_AUTH,
			     "x-mock-fault: status=429;retry-after=2",
			     "{\"model\":\"g\",\"stream\":true,\"messages\":[{"
			     "\"role\":\"user\",\"content\":\"x\"}]}",
			     T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(r.status, 429);
	ck_assert_str_eq(h_resp_header(&r, "retry-after", v, sizeof(v)), "2");
	ck_assert_str_eq(h_resp_header(&r, "content-type", v, sizeof(v)),
	    "application/json");
	j = parse(r.body);
	ck_assert_str_eq(
	    jstr(json_object_get(j, "error"), "code"), "rate_limit_exceeded");
	json_decref(j);
	h_resp_free(&r);

	/* The directive in the body works without the header. */
	ck_assert_int_eq(
	    post("/v1/chat/completions", O_AUTH, NULL,
		"{\"model\":\"g\",\"messages\":[{\"role\":\"user\","
		"\"content\":\"hi [[mock:status=500]]\"}]}",
		T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(r.status, 500);
	j = parse(r.body);
	ck_assert_str_eq(
	    jstr(json_object_get(j, "error"), "type"), "server_error");
	json_decref(j);
	h_resp_free(&r);

	/* A bad spec is refused, not ignored. */
	ck_assert_int_eq(
	    post("/v1/chat/completions", O_AUTH, "x-mock-fault: nonsense=1",
		"{\"model\":\"g\",\"messages\":[{\"role\":\"user\","
		"\"content\":\"hi\"}]}",
		T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(r.status, 400);
	h_resp_free(&r);
}
END_TEST

START_TEST(fault_latency)
{
	struct h_resp r;
	long long t0 = now_ms();

	ck_assert_int_eq(
	    post("/v1/messages", A_AUTH, "x-mock-fault: latency-ms=300",
		"{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{"
		"\"role\":\"user\",\"content\":\"x\"}]}",
		T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_int_ge(now_ms() - t0, 300);
	h_resp_free(&r);
}
END_TEST

START_TEST(fault_drop_after)
{
	struct h_resp r;
	int rv;

	rv = post("/v1/messages", A_AUTH, "x-mock-fault: drop-after=3",
	    "{\"model\":\"m\",\"max_tokens\":50,\"stream\":true,\"messages\":[{"
	    "\"role\":\"user\",\"content\":\"one two three\"}]}",
	    T_TIMEOUT_MS, &r);
	if (rv == 0) {
		ck_assert_ptr_null(strstr(r.body, "message_stop"));
		h_resp_free(&r);
	} else {
		ck_assert_int_eq(rv, -ECONNRESET);
	}
	ck_assert(wait_outcome(1, "dropped", T_TIMEOUT_MS));
}
END_TEST

START_TEST(fault_stall)
{
	struct h_resp r;
	long long t0 = now_ms();

	ck_assert_int_eq(
	    post("/v1/chat/completions", O_AUTH, "x-mock-fault: stall-after=2",
		"{\"model\":\"g\",\"stream\":true,\"messages\":[{"
		"\"role\":\"user\",\"content\":\"x\"}]}",
		800, &r),
	    -ETIMEDOUT);
	ck_assert_int_ge(now_ms() - t0, 800);
	ck_assert(wait_outcome(1, "stalled", T_TIMEOUT_MS));
}
END_TEST

START_TEST(fault_error_event)
{
	struct h_sse_event *ev;
	struct h_resp r;
	size_t n;
	json_t *d;

	ck_assert_int_eq(
	    post("/v1/messages", A_AUTH, "x-mock-fault: error-event-after=2",
		"{\"model\":\"m\",\"max_tokens\":50,\"stream\":true,"
		"\"messages\":[{\"role\":\"user\",\"content\":"
		"\"x\"}]}",
		T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_int_eq(h_sse_parse(r.body, r.body_len, &ev, &n), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_str_eq(ev[2].event, "error");
	ck_assert_str_eq(ev[2].data,
	    "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
	    "\"message\":\"Overloaded\"}}");
	h_sse_free(ev, n);
	h_resp_free(&r);

	ck_assert_int_eq(post("/v1/chat/completions", O_AUTH,
			     "x-mock-fault: error-event-after=1",
			     "{\"model\":\"g\",\"stream\":true,\"messages\":[{"
			     "\"role\":\"user\",\"content\":\"x\"}]}",
			     T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(h_sse_parse(r.body, r.body_len, &ev, &n), 0);
	ck_assert_uint_eq(n, 2);
	d = parse(ev[1].data);
	ck_assert_str_eq(
	    jstr(json_object_get(d, "error"), "type"), "server_error");
	json_decref(d);
	ck_assert_ptr_null(strstr(r.body, "[DONE]"));
	h_sse_free(ev, n);
	h_resp_free(&r);
}
END_TEST

START_TEST(fault_fail_first)
{
	const char *body = "{\"model\":\"g\",\"messages\":[{\"role\":\"user\","
			   "\"content\":\"x\"}]}";
	struct h_resp r;
	int i;

	for (i = 0; i < 3; i++) {
		ck_assert_int_eq(post("/v1/chat/completions", O_AUTH,
				     "x-mock-fault: status=503;fail-first=2;"
				     "key=retry-a",
				     body, T_TIMEOUT_MS, &r),
		    0);
		ck_assert_int_eq(r.status, i < 2 ? 503 : 200);
		h_resp_free(&r);
	}
	/* Another key has its own count. */
	ck_assert_int_eq(
	    post("/v1/chat/completions", O_AUTH,
		"x-mock-fault: status=503;fail-first=2;key=retry-b", body,
		T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(r.status, 503);
	h_resp_free(&r);
}
END_TEST

START_TEST(fault_duration)
{
	struct h_resp r;
	long long t0 = now_ms();

	ck_assert_int_eq(
	    post("/v1/messages", A_AUTH, "x-mock-fault: duration-ms=400",
		"{\"model\":\"m\",\"max_tokens\":50,\"stream\":true,"
		"\"messages\":[{\"role\":\"user\",\"content\":"
		"\"x\"}]}",
		T_TIMEOUT_MS, &r),
	    0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_int_ge(now_ms() - t0, 400);
	ck_assert_ptr_nonnull(strstr(r.body, "event: message_stop"));
	h_resp_free(&r);
}
END_TEST

/* ---- /_mock routes and the request log ---- */

START_TEST(config_default_fault)
{
	const char *body = "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{"
			   "\"role\":\"user\",\"content\":\"x\"}]}";
	struct h_resp r;
	int i;

	ck_assert_int_eq(
	    set_config("{\"fault\":\"status=500\",\"count\":2}", &r), 0);
	ck_assert_int_eq(r.status, 200);
	h_resp_free(&r);
	for (i = 0; i < 3; i++) {
		ck_assert_int_eq(
		    post("/v1/messages", A_AUTH, NULL, body, T_TIMEOUT_MS, &r),
		    0);
		ck_assert_int_eq(r.status, i < 2 ? 500 : 200);
		h_resp_free(&r);
	}
	ck_assert_int_eq(
	    set_config("{\"fault\":\"status=502\",\"count\":-1}", &r), 0);
	h_resp_free(&r);
	for (i = 0; i < 2; i++) {
		ck_assert_int_eq(
		    post("/v1/messages", A_AUTH, NULL, body, T_TIMEOUT_MS, &r),
		    0);
		ck_assert_int_eq(r.status, 502);
		h_resp_free(&r);
	}
	ck_assert_int_eq(set_config("{\"fault\":\"\"}", &r), 0);
	h_resp_free(&r);
	ck_assert_int_eq(
	    post("/v1/messages", A_AUTH, NULL, body, T_TIMEOUT_MS, &r), 0);
	ck_assert_int_eq(r.status, 200);
	h_resp_free(&r);
}
END_TEST

START_TEST(request_log)
{
	struct h_resp r;
	char url[256], path[PATH_MAX];
	json_t *log, *e, *h;
	char *file;

	ck_assert_int_eq(post("/v1/messages", A_AUTH, NULL,
			     "{\"model\":\"claude-log\",\"max_tokens\":5,"
			     "\"messages\":[{\"role\":\"user\",\"content\":"
			     "\"x\"}]}",
			     T_TIMEOUT_MS, &r),
	    0);
	h_resp_free(&r);
	ck_assert_int_eq(
	    post("/v1/chat/completions", "Authorization: Bearer sk-secret-bad",
		NULL, "{}", T_TIMEOUT_MS, &r),
	    0);
	h_resp_free(&r);

	log = mock_requests();
	ck_assert_uint_eq(json_array_size(log), 2);
	e = json_array_get(log, 0);
	ck_assert_int_eq(jint(e, "seq"), 1);
	ck_assert_str_eq(jstr(e, "provider"), "anthropic");
	ck_assert_str_eq(jstr(e, "method"), "POST");
	ck_assert_str_eq(jstr(e, "path"), "/v1/messages");
	ck_assert_str_eq(jstr(e, "model"), "claude-log");
	ck_assert_int_eq(jint(e, "status"), 200);
	ck_assert(json_is_false(json_object_get(e, "stream")));
	ck_assert_str_eq(
	    jstr(json_object_get(e, "body"), "model"), "claude-log");
	h = json_object_get(e, "headers");
	ck_assert_str_eq(jstr(h, "x-api-key"), "<ok>");
	ck_assert_str_eq(jstr(h, "authorization"), "<missing>");
	ck_assert_str_eq(jstr(h, "content-type"), "application/json");
	e = json_array_get(log, 1);
	ck_assert_str_eq(jstr(e, "provider"), "openai");
	ck_assert_int_eq(jint(e, "status"), 401);
	ck_assert_str_eq(
	    jstr(json_object_get(e, "headers"), "authorization"), "<bad>");
	json_decref(log);

	/* Keys never appear, neither in the API nor in the -l file. */
	snprintf(url, sizeof(url), "%s/_mock/requests", mock.url);
	ck_assert_int_eq(
	    h_http("GET", url, NULL, NULL, 0, T_TIMEOUT_MS, &r), 0);
	ck_assert_ptr_null(strstr(r.body, A_KEY));
	ck_assert_ptr_null(strstr(r.body, "sk-secret-bad"));
	h_resp_free(&r);
	snprintf(path, sizeof(path), "%s/requests.jsonl", mock.dir);
	ck_assert_int_eq(
	    h_wait_file_contains(path, "\"seq\":2", T_TIMEOUT_MS), 0);
	file = h_read_file(path, NULL);
	ck_assert_ptr_nonnull(file);
	ck_assert_ptr_null(strstr(file, A_KEY));
	ck_assert_ptr_null(strstr(file, "sk-secret-bad"));
	ck_assert_ptr_nonnull(strstr(file, "\"outcome\":\"completed\""));
	free(file);

	ck_assert_int_eq(
	    h_http("DELETE", url, NULL, NULL, 0, T_TIMEOUT_MS, &r), 0);
	h_resp_free(&r);
	log = mock_requests();
	ck_assert_uint_eq(json_array_size(log), 0);
	json_decref(log);
}
END_TEST

START_TEST(client_closed)
{
	struct h_resp r;
	char url[256];
	json_t *j;

	ck_assert_int_eq(
	    post("/v1/messages", A_AUTH, "x-mock-fault: chunk-delay-ms=150",
		"{\"model\":\"m\",\"max_tokens\":50,\"stream\":true,"
		"\"messages\":[{\"role\":\"user\",\"content\":"
		"\"a b c d e f g h\"}]}",
		400, &r),
	    -ETIMEDOUT);
	ck_assert(wait_outcome(1, "client_closed", T_TIMEOUT_MS));
	snprintf(url, sizeof(url), "%s/_mock/stats", mock.url);
	ck_assert_int_eq(
	    h_http("GET", url, NULL, NULL, 0, T_TIMEOUT_MS, &r), 0);
	j = parse(r.body);
	ck_assert_int_eq(jint(j, "requests"), 1);
	ck_assert_int_eq(jint(j, "client_closed"), 1);
	ck_assert_int_ge(jint(j, "open_connections"), 1);
	json_decref(j);
	h_resp_free(&r);
}
END_TEST

static Suite *
mock_upstream_suite(void)
{
	Suite *s = suite_create("mock_upstream");
	TCase *tc;

	tc = tcase_create("anthropic");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, anthropic_message);
	tcase_add_test(tc, anthropic_max_tokens_cut);
	tcase_add_test(tc, anthropic_stream);
	tcase_add_test(tc, anthropic_tool_use);
	suite_add_tcase(s, tc);

	tc = tcase_create("openai");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, openai_completion);
	tcase_add_test(tc, openai_stream);
	tcase_add_test(tc, openai_tool_calls);
	suite_add_tcase(s, tc);

	tc = tcase_create("auth_and_routes");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, bad_keys);
	tcase_add_test(tc, validation);
	tcase_add_test(tc, models);
	suite_add_tcase(s, tc);

	tc = tcase_create("faults");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, fault_status_headers);
	tcase_add_test(tc, fault_latency);
	tcase_add_test(tc, fault_drop_after);
	tcase_add_test(tc, fault_stall);
	tcase_add_test(tc, fault_error_event);
	tcase_add_test(tc, fault_fail_first);
	tcase_add_test(tc, fault_duration);
	suite_add_tcase(s, tc);

	tc = tcase_create("control");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, config_default_fault);
	tcase_add_test(tc, request_log);
	tcase_add_test(tc, client_closed);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(mock_upstream_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
