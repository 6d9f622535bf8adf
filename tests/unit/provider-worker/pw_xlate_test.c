/*
 * pw_xlate: Anthropic requests carried to OpenAI, OpenAI answers brought
 * back in Anthropic's shape (cross-provider failover).
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pw_unit.h"
#include "pw_usage.h"
#include "pw_xlate.h"

static json_t *
xreq(const char *in, int want)
{
	char *out = NULL;
	size_t len = 0;
	json_t *j;

	ck_assert_int_eq(pw_xlate_req_claude_to_openai(
			     in, strlen(in), "gpt-4o-mini", &out, &len),
	    want);
	if (want != 0)
		return NULL;
	ck_assert_uint_eq(len, strlen(out));
	j = json_loads(out, 0, NULL);
	free(out);
	ck_assert_ptr_nonnull(j);
	return j;
}

START_TEST(test_req_text)
{
	json_t *j = xreq(
	    "{\"model\":\"claude-3-haiku-20240307\",\"max_tokens\":50,"
	    "\"system\":[{\"type\":\"text\",\"text\":\"be \"},{\"type\":"
	    "\"text\",\"text\":\"brief\"}],\"temperature\":0.5,"
	    "\"stop_sequences\":[\"END\"],\"messages\":[{\"role\":\"user\","
	    "\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":[{"
	    "\"type\":\"text\",\"text\":\"yo\"}]},{\"role\":\"user\","
	    "\"content\":\"again\"}]}",
	    0);
	json_t *m = json_object_get(j, "messages");

	ck_assert_str_eq(
	    json_string_value(json_object_get(j, "model")), "gpt-4o-mini");
	ck_assert_int_eq(
	    json_integer_value(json_object_get(j, "max_tokens")), 50);
	ck_assert(json_is_real(json_object_get(j, "temperature")));
	ck_assert_str_eq(
	    json_string_value(json_array_get(json_object_get(j, "stop"), 0)),
	    "END");
	ck_assert_uint_eq(json_array_size(m), 4);
	ck_assert_str_eq(
	    json_string_value(json_object_get(json_array_get(m, 0), "role")),
	    "system");
	ck_assert_str_eq(
	    json_string_value(json_object_get(json_array_get(m, 0), "content")),
	    "be brief");
	ck_assert_str_eq(
	    json_string_value(json_object_get(json_array_get(m, 2), "content")),
	    "yo");
	ck_assert_str_eq(
	    json_string_value(json_object_get(json_array_get(m, 3), "role")),
	    "user");
	json_decref(j);
}
END_TEST

START_TEST(test_req_refused)
{
	/* Streams, tools and images are not carried over. */
	xreq("{\"stream\":true,\"max_tokens\":5,\"messages\":[{\"role\":"
	     "\"user\",\"content\":\"hi\"}]}",
	    -ENOTSUP);
	xreq("{\"tools\":[],\"max_tokens\":5,\"messages\":[{\"role\":"
	     "\"user\",\"content\":\"hi\"}]}",
	    -ENOTSUP);
	xreq("{\"max_tokens\":5,\"messages\":[{\"role\":\"user\","
	     "\"content\":[{\"type\":\"image\",\"source\":{}}]}]}",
	    -ENOTSUP);
	xreq("[1]", -EINVAL);
	xreq("{\"max_tokens\":5,\"messages\":[{\"role\":\"system\","
	     "\"content\":\"x\"}]}",
	    -EINVAL);
}
END_TEST

START_TEST(test_resp)
{
	static const char in[] =
	    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"model\":"
	    "\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
	    "\"assistant\",\"content\":\"Hello\"},\"finish_reason\":"
	    "\"length\"}],\"usage\":{\"prompt_tokens\":9,"
	    "\"completion_tokens\":2,\"total_tokens\":11}}";
	struct pw_usage u;
	struct buf b;
	json_t *j;

	buf_init(&b, 1 << 20);
	ck_assert_int_eq(pw_xlate_resp_openai_to_claude(in, strlen(in), &b), 0);
	j = json_loadb(b.data, b.len, 0, NULL);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(
	    json_string_value(json_object_get(j, "type")), "message");
	ck_assert_str_eq(
	    json_string_value(json_object_get(j, "stop_reason")), "max_tokens");
	ck_assert_str_eq(
	    json_string_value(json_object_get(
		json_array_get(json_object_get(j, "content"), 0), "text")),
	    "Hello");
	json_decref(j);
	/* Anthropic's usage reader finds the same tokens. */
	ck_assert_int_eq(
	    pw_usage_from_body(PW_PROV_CLAUDE, b.data, b.len, &u), 0);
	ck_assert_int_eq(u.tokens.input, 9);
	ck_assert_int_eq(u.tokens.output, 2);
	ck_assert_int_eq(pw_xlate_resp_openai_to_claude("{}", 2, &b), -EINVAL);
	buf_free(&b);
}
END_TEST

START_TEST(test_map_check)
{
	char *path = pw_unit_source_path("config/models.json");
	struct model_table *m = NULL;
	char err[256];

	ck_assert_int_eq(models_load(path, &m, err, sizeof(err)), 0);
	ck_assert_int_eq(pw_xlate_map_check("", m, err, sizeof(err)), 0);
	ck_assert_int_eq(pw_xlate_map_check(NULL, m, err, sizeof(err)), 0);
	ck_assert_int_eq(
	    pw_xlate_map_check("*=gpt-4o-mini", m, err, sizeof(err)), 0);
	ck_assert_int_eq(
	    pw_xlate_map_check(
		"claude-3-haiku=gpt-4o,*=gpt-4o-mini", m, err, sizeof(err)),
	    0);
	/* Both ways, "*" for each. */
	ck_assert_int_eq(pw_xlate_map_check("*=gpt-4o-mini,*=claude-3-haiku,"
					    "gpt-4o=claude-3-5-sonnet",
			     m, err, sizeof(err)),
	    0);
	ck_assert_int_eq(
	    pw_xlate_map_check("gpt-4o=gpt-4o", m, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "same provider"));
	ck_assert_int_eq(
	    pw_xlate_map_check("*=gpt-9", m, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "is no model"));
	ck_assert_int_eq(pw_xlate_map_check("*", m, err, sizeof(err)), -EINVAL);
	ck_assert_int_eq(
	    pw_xlate_map_check("*=", m, err, sizeof(err)), -EINVAL);
	models_free(m);
	free(path);
}
END_TEST

START_TEST(test_openai_to_claude)
{
	static const char in[] =
	    "{\"model\":\"gpt-4o\",\"temperature\":1.5,\"stop\":\"END\","
	    "\"messages\":[{\"role\":\"system\",\"content\":\"be\"},"
	    "{\"role\":\"developer\",\"content\":\"brief\"},{\"role\":"
	    "\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}]}";
	static const char resp[] =
	    "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\","
	    "\"model\":\"claude-3-haiku-20240307\",\"content\":[{\"type\":"
	    "\"text\",\"text\":\"Hel\"},{\"type\":\"text\",\"text\":\"lo\"}],"
	    "\"stop_reason\":\"max_tokens\",\"usage\":{\"input_tokens\":7,"
	    "\"cache_read_input_tokens\":3,\"output_tokens\":2}}";
	char *out = NULL;
	size_t len = 0;
	struct pw_usage u;
	struct buf b;
	json_t *j;

	ck_assert_int_eq(pw_xlate_req_openai_to_claude(in, strlen(in),
			     "claude-3-haiku-20240307", 77, &out, &len),
	    0);
	j = json_loadb(out, len, 0, NULL);
	free(out);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(
	    json_string_value(json_object_get(j, "system")), "be\nbrief");
	ck_assert_int_eq(
	    json_integer_value(json_object_get(j, "max_tokens")), 77);
	ck_assert(json_real_value(json_object_get(j, "temperature")) == 1.0);
	ck_assert_str_eq(json_string_value(json_array_get(
			     json_object_get(j, "stop_sequences"), 0)),
	    "END");
	ck_assert_uint_eq(json_array_size(json_object_get(j, "messages")), 1);
	json_decref(j);
	{
		static const char n2[] = "{\"n\":2,\"messages\":[]}";
		static const char none[] = "{\"messages\":[]}";

		ck_assert_int_eq(pw_xlate_req_openai_to_claude(
				     n2, strlen(n2), "m", 1, &out, &len),
		    -ENOTSUP);
		ck_assert_int_eq(pw_xlate_req_openai_to_claude(
				     none, strlen(none), "m", 1, &out, &len),
		    -EINVAL);
	}

	buf_init(&b, 1 << 20);
	ck_assert_int_eq(
	    pw_xlate_resp_claude_to_openai(resp, strlen(resp), &b), 0);
	j = json_loadb(b.data, b.len, 0, NULL);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(
	    json_string_value(json_object_get(j, "object")), "chat.completion");
	ck_assert_str_eq(
	    json_string_value(json_object_get(
		json_object_get(
		    json_array_get(json_object_get(j, "choices"), 0),
		    "message"),
		"content")),
	    "Hello");
	json_decref(j);
	ck_assert_int_eq(
	    pw_usage_from_body(PW_PROV_OPENAI, b.data, b.len, &u), 0);
	ck_assert_int_eq(u.tokens.output, 2);
	ck_assert_int_eq(u.tokens.input + u.tokens.cache_read, 10);
	buf_free(&b);
}
END_TEST

Suite *
pw_xlate_suite(void)
{
	Suite *s = suite_create("pw_xlate");
	TCase *tc = tcase_create("xlate");

	tcase_add_test(tc, test_req_text);
	tcase_add_test(tc, test_req_refused);
	tcase_add_test(tc, test_resp);
	tcase_add_test(tc, test_map_check);
	tcase_add_test(tc, test_openai_to_claude);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return pw_unit_run(pw_xlate_suite());
}
