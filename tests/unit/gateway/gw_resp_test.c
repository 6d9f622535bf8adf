/*
 * gw_resp: exact cost printing, the success envelope (data verbatim),
 * every error shape, the stream events, the model lists.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gw_resp.h"
#include "gw_unit.h"

static const struct {
	int64_t micro;
	const char *str;
} costs[] = {
    {0, "0"},
    {1, "0.000001"},
    {10, "0.00001"},
    {100, "0.0001"},
    {123, "0.000123"},
    {1000, "0.001"},
    {120000, "0.12"},
    {1000000, "1"},
    {1500000, "1.5"},
    {1234567, "1.234567"},
    {10000001, "10.000001"},
    {999999999999LL, "999999.999999"},
    {1000000000000LL, "1000000"},
};

START_TEST(test_cost_str)
{
	char out[32];

	gw_cost_str(costs[_i].micro, out, sizeof(out));
	ck_assert_str_eq(out, costs[_i].str);
}
END_TEST

START_TEST(test_cost_str_parses_exactly)
{
	/* Every printed cost reads back as the same decimal amount. */
	for (int64_t v = 0; v < 3000000; v += 7919) {
		char out[32], *end;
		double d;

		gw_cost_str(v, out, sizeof(out));
		d = strtod(out, &end);
		ck_assert_int_eq(*end, '\0');
		ck_assert_int_eq((int64_t)(d * 1e6 + 0.5), v);
	}
}
END_TEST

static json_t *
parse(const struct buf *b)
{
	json_error_t e;
	json_t *j = json_loadb(b->data, b->len, 0, &e);

	ck_assert_msg(j != NULL, "not JSON: %s (%s)", b->data, e.text);
	return j;
}

START_TEST(test_envelope_ok_verbatim)
{
	const char *data = "{ \"id\" : \"msg_1\",\n \"n\": 1.50 }";
	struct buf b;
	json_t *j;

	buf_init(&b, 1 << 20);
	ck_assert_int_eq(gw_fmt_envelope_ok(&b, data, strlen(data), 123, 42,
			     "req_abc", "claude", "claude-3-haiku-20240307"),
	    0);
	/* The provider body is inserted byte for byte. */
	ck_assert_ptr_nonnull(strstr(b.data, "\"data\":{ \"id\" : \"msg_1\",\n "
					     "\"n\": 1.50 },"));
	ck_assert_ptr_nonnull(strstr(b.data, "\"cost\":0.000123,"));
	j = parse(&b);
	ck_assert(json_is_true(json_object_get(j, "success")));
	ck_assert(json_is_null(json_object_get(j, "error")));
	ck_assert(json_is_null(json_object_get(j, "message")));
	ck_assert(json_is_false(json_object_get(j, "cached")));
	ck_assert_int_eq(
	    json_integer_value(json_object_get(j, "response_time_ms")), 42);
	ck_assert_str_eq(
	    json_string_value(json_object_get(j, "request_id")), "req_abc");
	ck_assert_str_eq(
	    json_string_value(json_object_get(j, "provider")), "claude");
	ck_assert_str_eq(json_string_value(json_object_get(j, "model")),
	    "claude-3-haiku-20240307");
	ck_assert_str_eq(json_string_value(
			     json_object_get(json_object_get(j, "data"), "id")),
	    "msg_1");
	json_decref(j);
	buf_free(&b);
}
END_TEST

START_TEST(test_envelope_error)
{
	struct buf b;
	json_t *j;

	buf_init(&b, 1 << 20);
	ck_assert_int_eq(
	    gw_fmt_error(&b, GW_SHAPE_ENVELOPE, 400, "invalid_messages",
		"messages[2].role \"x\"", "messages", "req_1", 7),
	    0);
	j = parse(&b);
	ck_assert(json_is_false(json_object_get(j, "success")));
	ck_assert(json_is_null(json_object_get(j, "data")));
	ck_assert_str_eq(
	    json_string_value(json_object_get(j, "error")), "invalid_messages");
	ck_assert_str_eq(json_string_value(json_object_get(j, "message")),
	    "messages[2].role \"x\"");
	ck_assert(json_is_false(json_object_get(j, "cached")));
	ck_assert_int_eq(json_integer_value(json_object_get(j, "cost")), 0);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(j, "response_time_ms")), 7);
	ck_assert_str_eq(
	    json_string_value(json_object_get(j, "request_id")), "req_1");
	json_decref(j);
	buf_free(&b);
}
END_TEST

START_TEST(test_openai_error)
{
	struct buf b;
	json_t *j, *e;

	buf_init(&b, 1 << 20);
	ck_assert_int_eq(
	    gw_fmt_error(&b, GW_SHAPE_OPENAI, 400, "invalid_temperature", "bad",
		"temperature", "req_1", 0),
	    0);
	j = parse(&b);
	ck_assert_uint_eq(json_object_size(j), 1);
	e = json_object_get(j, "error");
	ck_assert_uint_eq(json_object_size(e), 4);
	ck_assert_str_eq(
	    json_string_value(json_object_get(e, "message")), "bad");
	ck_assert_str_eq(json_string_value(json_object_get(e, "type")),
	    "invalid_request_error");
	ck_assert_str_eq(
	    json_string_value(json_object_get(e, "param")), "temperature");
	ck_assert_str_eq(json_string_value(json_object_get(e, "code")),
	    "invalid_temperature");
	json_decref(j);
	/* No param: null; a message from the table when none is given. */
	buf_reset(&b);
	ck_assert_int_eq(gw_fmt_error(&b, GW_SHAPE_OPENAI, 503, "no_workers",
			     NULL, NULL, "req_1", 0),
	    0);
	j = parse(&b);
	e = json_object_get(j, "error");
	ck_assert(json_is_null(json_object_get(e, "param")));
	ck_assert_str_eq(
	    json_string_value(json_object_get(e, "type")), "server_error");
	ck_assert_str_eq(json_string_value(json_object_get(e, "message")),
	    gw_code_message("no_workers"));
	json_decref(j);
	buf_free(&b);
}
END_TEST

static const struct {
	int status;
	const char *type;
} anthropic_types[] = {
    {400, "invalid_request_error"},
    {401, "authentication_error"},
    {403, "permission_error"},
    {404, "not_found_error"},
    {405, "invalid_request_error"},
    {413, "request_too_large"},
    {429, "rate_limit_error"},
    {500, "api_error"},
    {502, "api_error"},
    {503, "overloaded_error"},
    {504, "api_error"},
    {529, "overloaded_error"},
};

START_TEST(test_anthropic_error)
{
	struct buf b;
	json_t *j, *e;

	buf_init(&b, 1 << 20);
	ck_assert_int_eq(
	    gw_fmt_error(&b, GW_SHAPE_ANTHROPIC, anthropic_types[_i].status,
		"code", "msg", "p", "req_9", 0),
	    0);
	j = parse(&b);
	ck_assert_str_eq(
	    json_string_value(json_object_get(j, "type")), "error");
	ck_assert_str_eq(
	    json_string_value(json_object_get(j, "request_id")), "req_9");
	e = json_object_get(j, "error");
	ck_assert_uint_eq(json_object_size(e), 2);
	ck_assert_str_eq(json_string_value(json_object_get(e, "type")),
	    anthropic_types[_i].type);
	ck_assert_str_eq(
	    json_string_value(json_object_get(e, "message")), "msg");
	json_decref(j);
	buf_free(&b);
}
END_TEST

START_TEST(test_aiproxy_event)
{
	struct buf b;

	buf_init(&b, 4096);
	ck_assert_int_eq(gw_fmt_aiproxy_event(&b, "req_1", 2500, 31), 0);
	ck_assert_str_eq(b.data,
	    "event: aiproxy\ndata: {\"request_id\":\"req_1\",\"cost\":0.0025,"
	    "\"cached\":false,\"response_time_ms\":31}\n\n");
	buf_free(&b);
}
END_TEST

START_TEST(test_stream_error_events)
{
	struct buf b;

	buf_init(&b, 4096);
	ck_assert_int_eq(gw_fmt_stream_error(&b, "claude", "lost \"it\""), 0);
	ck_assert_str_eq(b.data,
	    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":"
	    "\"api_error\",\"message\":\"lost \\\"it\\\"\"}}\n\n");
	buf_reset(&b);
	ck_assert_int_eq(gw_fmt_stream_error(&b, "openai", "lost"), 0);
	ck_assert_str_eq(b.data,
	    "data: {\"error\":{\"message\":\"lost\",\"type\":\"server_error\","
	    "\"param\":null,\"code\":\"upstream_error\"}}\n\n");
	buf_free(&b);
}
END_TEST

START_TEST(test_models_lists)
{
	struct model_table *t = gw_unit_models();
	size_t nclaude = 0, nopenai = 0, i;
	struct buf b;
	json_t *j, *m;

	for (i = 0; i < models_count(t); i++) {
		if (strcmp(models_at(t, i)->provider, "claude") == 0)
			nclaude++;
		else
			nopenai++;
	}
	buf_init(&b, 1 << 20);
	ck_assert_int_eq(gw_fmt_models(&b, t, false), 0);
	j = parse(&b);
	ck_assert_str_eq(
	    json_string_value(json_object_get(j, "object")), "list");
	ck_assert_uint_eq(json_array_size(json_object_get(j, "data")), nopenai);
	json_array_foreach(json_object_get(j, "data"), i, m) {
		ck_assert_str_eq(
		    json_string_value(json_object_get(m, "object")), "model");
		ck_assert(json_is_integer(json_object_get(m, "created")));
		ck_assert(json_is_string(json_object_get(m, "owned_by")));
		ck_assert_ptr_nonnull(models_lookup(
		    t, json_string_value(json_object_get(m, "id"))));
	}
	json_decref(j);
	buf_reset(&b);
	ck_assert_int_eq(gw_fmt_models(&b, t, true), 0);
	j = parse(&b);
	ck_assert_uint_eq(json_array_size(json_object_get(j, "data")), nclaude);
	ck_assert(json_is_false(json_object_get(j, "has_more")));
	m = json_array_get(json_object_get(j, "data"), 0);
	ck_assert_str_eq(
	    json_string_value(json_object_get(m, "type")), "model");
	ck_assert_str_eq(json_string_value(json_object_get(j, "first_id")),
	    json_string_value(json_object_get(m, "id")));
	ck_assert(json_is_string(json_object_get(j, "last_id")));
	ck_assert_int_eq(
	    strlen(json_string_value(json_object_get(m, "created_at"))), 20);
	json_decref(j);
	buf_free(&b);
	models_free(t);
}
END_TEST

START_TEST(test_bounded)
{
	struct buf b;
	char data[200];

	memset(data, '1', sizeof(data));
	buf_init(&b, 100);
	ck_assert_int_ne(gw_fmt_envelope_ok(
			     &b, data, sizeof(data), 0, 0, "r", "claude", "m"),
	    0);
	buf_free(&b);
}
END_TEST

Suite *
gw_resp_suite(void)
{
	Suite *s = suite_create("gw_resp");
	TCase *tc = tcase_create("cost");

	tcase_add_loop_test(
	    tc, test_cost_str, 0, (int)(sizeof(costs) / sizeof(costs[0])));
	tcase_add_test(tc, test_cost_str_parses_exactly);
	suite_add_tcase(s, tc);
	tc = tcase_create("bodies");
	tcase_add_test(tc, test_envelope_ok_verbatim);
	tcase_add_test(tc, test_envelope_error);
	tcase_add_test(tc, test_openai_error);
	tcase_add_loop_test(tc, test_anthropic_error, 0,
	    (int)(sizeof(anthropic_types) / sizeof(anthropic_types[0])));
	tcase_add_test(tc, test_aiproxy_event);
	tcase_add_test(tc, test_stream_error_events);
	tcase_add_test(tc, test_models_lists);
	tcase_add_test(tc, test_bounded);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return gw_unit_run(gw_resp_suite());
}
