/*
 * gw_validate: every rejection (status, stable code, the field named),
 * and the upstream body built for the accepted requests (model resolved,
 * max_tokens defaulted, include_usage for OpenAI streams, fields kept or
 * dropped per route).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gw_unit.h"
#include "gw_validate.h"

static struct model_table *models;
static struct gw_vcfg vcfg;

static void
setup(void)
{
	models = gw_unit_models();
	vcfg.models = models;
	vcfg.default_model = "claude-3-sonnet";
	vcfg.max_tokens = 4000;
	vcfg.default_max_tokens = 1024;
	vcfg.max_body_bytes = 4096;
}

static void
teardown(void)
{
	models_free(models);
	models = NULL;
}

static const struct gw_route *
route(enum gw_route_id id)
{
	static const char *const paths[GW_R_MAX] = {
	    [GW_R_CLAUDE_CHAT] = "/api/v1/ai-proxy/claude/chat",
	    [GW_R_OPENAI_CHAT] = "/api/v1/ai-proxy/openai/chat",
	    [GW_R_CHAT_COMPLETIONS] = "/v1/chat/completions",
	    [GW_R_MESSAGES] = "/v1/messages",
	};
	const struct gw_route *r = gw_route_lookup(paths[id], NULL, 0);

	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(r->id, id);
	return r;
}

#define C  GW_R_CLAUDE_CHAT
#define O  GW_R_OPENAI_CHAT
#define CC GW_R_CHAT_COMPLETIONS
#define M  GW_R_MESSAGES
#define UM "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

/* A rejected body: the status, code, param and a piece of the message. */
static const struct reject_case {
	enum gw_route_id route;
	const char *body;
	int status;
	const char *code;
	const char *param;   /* NULL: not checked */
	const char *message; /* substring, NULL: not checked */
} rejects[] = {
    /* not JSON / not an object */
    {C, "", 400, "invalid_json", NULL, NULL},
    {C, "not json", 400, "invalid_json", NULL, NULL},
    {C, "[1,2]", 400, "invalid_json", NULL, "object"},
    {O, "\"text\"", 400, "invalid_json", NULL, NULL},
    {C, "{\"a\":1,}", 400, "invalid_json", NULL, NULL},
    {C, "{" UM "} trailing", 400, "invalid_json", NULL, NULL},
    {C, "{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}", 400,
	"invalid_json", NULL, NULL},
    {M, "{\"model\":\"x\",\"model\":\"y\"}", 400, "invalid_json", NULL, NULL},
    {CC, "null", 400, "invalid_json", NULL, NULL},
    /* nesting */
    {C,
	"{\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
	"]]]}",
	400, "json_too_deep", NULL, "32"},
    /* messages */
    {C, "{}", 400, "invalid_messages", "messages", "non-empty"},
    {C, "{\"messages\":[]}", 400, "invalid_messages", "messages", NULL},
    {O, "{\"messages\":\"hi\"}", 400, "invalid_messages", "messages", NULL},
    {C, "{\"messages\":[1]}", 400, "invalid_messages", "messages",
	"messages[0]"},
    {C, "{\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}", 400,
	"invalid_messages", "messages", "messages[0].role"},
    {C,
	"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":"
	"\"tool\",\"content\":\"x\"}]}",
	400, "invalid_messages", "messages", "messages[1].role"},
    {O, "{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", 400,
	"invalid_messages", "messages", "messages[0].role"},
    {C, "{\"messages\":[{\"role\":\"user\"}]}", 400, "invalid_messages",
	"messages", "messages[0].content"},
    {C, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400,
	"invalid_messages", "messages", "messages[0].content"},
    {C, "{\"messages\":[{\"role\":\"user\",\"content\":[1]}]}", 400,
	"invalid_messages", "messages", NULL},
    {O, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"a\"}]}]}",
	400, "invalid_messages", "messages", NULL},
    {M,
	"{\"model\":\"claude-3-haiku\",\"max_tokens\":5,\"messages\":[{"
	"\"role\":\"user\",\"content\":[{\"type\":7}]}]}",
	400, "invalid_messages", "messages", NULL},
    {O, "{\"messages\":[{\"role\":\"user\",\"content\":null}]}", 400,
	"invalid_messages", "messages", NULL},
    {C, "{\"messages\":[{\"role\":\"assistant\",\"content\":null}]}", 400,
	"invalid_messages", "messages", NULL},
    {O, "{\"messages\":[{\"role\":7,\"content\":\"x\"}]}", 400,
	"invalid_messages", "messages", NULL},
    /* max_tokens */
    {C, "{" UM ",\"max_tokens\":0}", 400, "invalid_max_tokens", "max_tokens",
	"4000"},
    {C, "{" UM ",\"max_tokens\":-5}", 400, "invalid_max_tokens", "max_tokens",
	NULL},
    {C, "{" UM ",\"max_tokens\":1.5}", 400, "invalid_max_tokens", "max_tokens",
	NULL},
    {C, "{" UM ",\"max_tokens\":\"10\"}", 400, "invalid_max_tokens",
	"max_tokens", NULL},
    {C, "{" UM ",\"max_tokens\":null}", 400, "invalid_max_tokens", "max_tokens",
	NULL},
    {C, "{" UM ",\"max_tokens\":4001}", 400, "max_tokens_too_large",
	"max_tokens", "4000"},
    {O, "{" UM ",\"max_tokens\":100000}", 400, "max_tokens_too_large",
	"max_tokens", "4000"},
    {CC, "{\"model\":\"gpt-4o-mini\"," UM ",\"max_completion_tokens\":4001}",
	400, "max_tokens_too_large", "max_completion_tokens", "4000"},
    {CC, "{\"model\":\"gpt-4o-mini\"," UM ",\"max_completion_tokens\":0}", 400,
	"invalid_max_tokens", "max_completion_tokens", NULL},
    {M, "{\"model\":\"claude-3-haiku\"," UM "}", 400, "invalid_max_tokens",
	"max_tokens", "required"},
    {M, "{\"model\":\"claude-3-haiku\"," UM ",\"max_tokens\":9999}", 400,
	"max_tokens_too_large", "max_tokens", "4000"},
    /* temperature */
    {C, "{" UM ",\"temperature\":1.5}", 400, "invalid_temperature",
	"temperature", "1"},
    {C, "{" UM ",\"temperature\":-0.1}", 400, "invalid_temperature",
	"temperature", NULL},
    {O, "{" UM ",\"temperature\":2.5}", 400, "invalid_temperature",
	"temperature", "2"},
    {O, "{" UM ",\"temperature\":\"hot\"}", 400, "invalid_temperature",
	"temperature", NULL},
    {M,
	"{\"model\":\"claude-3-haiku\"," UM
	",\"max_tokens\":5,\"temperature\":2}",
	400, "invalid_temperature", "temperature", NULL},
    /* model */
    {C, "{" UM ",\"model\":\"claude-9-imaginary\"}", 400, "unknown_model",
	"model", NULL},
    {CC, "{" UM ",\"model\":\"gpt-9\"}", 400, "unknown_model", "model", NULL},
    {C, "{" UM ",\"model\":5}", 400, "invalid_model", "model", NULL},
    {C, "{" UM ",\"model\":\"gpt-4o\"}", 400, "model_provider_mismatch",
	"model", NULL},
    {O, "{" UM ",\"model\":\"claude-3-haiku\"}", 400, "model_provider_mismatch",
	"model", NULL},
    {M, "{" UM ",\"model\":\"gpt-4o\",\"max_tokens\":5}", 400,
	"model_provider_mismatch", "model", NULL},
    {CC, "{" UM ",\"model\":\"claude-3-haiku\"}", 400,
	"model_provider_mismatch", "model", NULL},
    {CC, "{" UM "}", 400, "invalid_model", "model", "required"},
    {M, "{" UM ",\"max_tokens\":5}", 400, "invalid_model", "model", NULL},
    /* stream */
    {C, "{" UM ",\"stream\":\"yes\"}", 400, "invalid_stream", "stream", NULL},
    {CC, "{\"model\":\"gpt-4o\"," UM ",\"stream\":1}", 400, "invalid_stream",
	"stream", NULL},
};

START_TEST(test_reject)
{
	const struct reject_case *c = &rejects[_i];
	struct gw_chat chat;
	struct gw_verr err;
	int rv;

	memset(&chat, 0, sizeof(chat));
	rv = gw_validate_chat(
	    &vcfg, route(c->route), c->body, strlen(c->body), &chat, &err);
	ck_assert_msg(rv == -EINVAL, "case %d (%s): rv %d", _i, c->body, rv);
	ck_assert_ptr_null(chat.upstream);
	ck_assert_int_eq(err.status, c->status);
	ck_assert_msg(strcmp(err.code, c->code) == 0,
	    "case %d: code %s, want %s (%s)", _i, err.code, c->code,
	    err.message);
	if (c->param != NULL) {
		ck_assert_ptr_nonnull(err.param);
		ck_assert_str_eq(err.param, c->param);
	}
	if (c->message != NULL)
		ck_assert_msg(strstr(err.message, c->message) != NULL,
		    "case %d: message \"%s\" lacks \"%s\"", _i, err.message,
		    c->message);
	ck_assert_uint_gt(strlen(err.message), 0);
}
END_TEST

START_TEST(test_body_too_large)
{
	struct gw_chat chat;
	struct gw_verr err;
	char *big = malloc(5000);

	memset(big, ' ', 5000);
	ck_assert_int_eq(
	    gw_validate_chat(&vcfg, route(C), big, 5000, &chat, &err), -EINVAL);
	ck_assert_int_eq(err.status, 413);
	ck_assert_str_eq(err.code, "body_too_large");
	free(big);
}
END_TEST

/* {"messages":[...],"metadata":[[...1...]]} nesting depth levels deep. */
static void
deep_body(char *out, size_t outlen, int depth)
{
	size_t off;

	off = (size_t)snprintf(out, outlen, "{" UM ",\"metadata\":");
	for (int i = 1; i < depth && off < outlen - 1; i++)
		out[off++] = '[';
	out[off++] = '1';
	for (int i = 1; i < depth && off < outlen - 1; i++)
		out[off++] = ']';
	snprintf(out + off, outlen - off, "}");
}

START_TEST(test_depth_32_allowed)
{
	struct gw_chat chat;
	struct gw_verr err;
	char body[512];
	int rv;

	deep_body(body, sizeof(body), 32);
	rv = gw_validate_chat(&vcfg, route(C), body, strlen(body), &chat, &err);
	ck_assert_msg(rv == 0, "rv %d %s", rv, err.code);
	free(chat.upstream);
	deep_body(body, sizeof(body), 33);
	rv = gw_validate_chat(&vcfg, route(C), body, strlen(body), &chat, &err);
	ck_assert_int_eq(rv, -EINVAL);
	ck_assert_str_eq(err.code, "json_too_deep");
	ck_assert_int_eq(err.status, 400);
}
END_TEST

/* Validates body on route r (must pass) and returns the upstream JSON. */
static json_t *
accept_body(enum gw_route_id r, const char *body, struct gw_chat *chat)
{
	struct gw_verr err;
	json_error_t jerr;
	json_t *up;
	int rv;

	rv = gw_validate_chat(&vcfg, route(r), body, strlen(body), chat, &err);
	ck_assert_msg(
	    rv == 0, "rejected %s: %s %s", body, err.code, err.message);
	ck_assert_ptr_nonnull(chat->upstream);
	ck_assert_uint_eq(chat->upstream_len, strlen(chat->upstream));
	up = json_loadb(chat->upstream, chat->upstream_len, 0, &jerr);
	ck_assert_ptr_nonnull(up);
	free(chat->upstream);
	chat->upstream = NULL;
	return up;
}

START_TEST(test_envelope_claude_defaults)
{
	struct gw_chat chat;
	json_t *up = accept_body(C,
	    "{" UM ",\"session_id\":\"s1\",\"system\":"
	    "\"be brief\"}",
	    &chat);

	ck_assert_str_eq(chat.provider, "claude");
	ck_assert_str_eq(chat.api, "messages");
	ck_assert_str_eq(chat.model->id, "claude-3-sonnet-20240229");
	ck_assert(!chat.stream);
	ck_assert_int_eq(chat.max_tokens, 1024);
	ck_assert_str_eq(json_string_value(json_object_get(up, "model")),
	    "claude-3-sonnet-20240229");
	ck_assert_int_eq(
	    json_integer_value(json_object_get(up, "max_tokens")), 1024);
	/* Known fields forwarded, unknown ones dropped on this route. */
	ck_assert_str_eq(
	    json_string_value(json_object_get(up, "system")), "be brief");
	ck_assert_ptr_null(json_object_get(up, "session_id"));
	ck_assert_ptr_nonnull(json_object_get(up, "messages"));
	json_decref(up);
}
END_TEST

START_TEST(test_envelope_openai_default_model)
{
	struct gw_chat chat;
	json_t *up = accept_body(O, "{" UM ",\"temperature\":1.5}", &chat);

	/* DEFAULT_AI_MODEL is a claude model: the first OpenAI model. */
	ck_assert_str_eq(chat.provider, "openai");
	ck_assert_str_eq(chat.api, "chat_completions");
	ck_assert_str_eq(chat.model->provider, "openai");
	ck_assert_str_eq(
	    json_string_value(json_object_get(up, "model")), chat.model->id);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(up, "max_completion_tokens")),
	    1024);
	ck_assert(json_real_value(json_object_get(up, "temperature")) == 1.5);
	json_decref(up);
}
END_TEST

START_TEST(test_alias_resolves)
{
	struct gw_chat chat;
	json_t *up = accept_body(C,
	    "{" UM ",\"model\":\"claude-3-haiku\",\"max_tokens\":4000,"
	    "\"temperature\":0}",
	    &chat);

	ck_assert_str_eq(chat.model->id, "claude-3-haiku-20240307");
	ck_assert_int_eq(chat.max_tokens, 4000);
	ck_assert_str_eq(json_string_value(json_object_get(up, "model")),
	    "claude-3-haiku-20240307");
	ck_assert_int_eq(
	    json_integer_value(json_object_get(up, "max_tokens")), 4000);
	json_decref(up);
}
END_TEST

START_TEST(test_dropin_forwards_unknown)
{
	struct gw_chat chat;
	json_t *up = accept_body(M,
	    "{\"model\":\"claude-3-5-haiku\",\"max_tokens\":16," UM
	    ",\"future_field\":{\"a\":[1,2]},\"stream\":true}",
	    &chat);

	ck_assert(chat.stream);
	ck_assert_str_eq(chat.model->id, "claude-3-5-haiku-20241022");
	ck_assert_ptr_nonnull(json_object_get(up, "future_field"));
	ck_assert(json_is_true(json_object_get(up, "stream")));
	/* No stream_options for Anthropic. */
	ck_assert_ptr_null(json_object_get(up, "stream_options"));
	json_decref(up);
}
END_TEST

START_TEST(test_openai_stream_include_usage)
{
	struct gw_chat chat;
	json_t *up, *so;

	up = accept_body(CC,
	    "{\"model\":\"gpt-4o-mini\"," UM ",\"stream\":true,\"n\":1}",
	    &chat);
	ck_assert(chat.stream);
	so = json_object_get(up, "stream_options");
	ck_assert(json_is_true(json_object_get(so, "include_usage")));
	ck_assert_int_eq(
	    json_integer_value(json_object_get(up, "max_completion_tokens")),
	    1024);
	json_decref(up);
	/* An existing stream_options is kept and completed. */
	up = accept_body(CC,
	    "{\"model\":\"gpt-4o-mini\"," UM ",\"stream\":true,"
	    "\"stream_options\":{\"include_usage\":false,\"x\":1},"
	    "\"max_tokens\":10}",
	    &chat);
	so = json_object_get(up, "stream_options");
	ck_assert(json_is_true(json_object_get(so, "include_usage")));
	ck_assert_int_eq(json_integer_value(json_object_get(so, "x")), 1);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(up, "max_tokens")), 10);
	ck_assert_ptr_null(json_object_get(up, "max_completion_tokens"));
	json_decref(up);
	/* Not streaming: no stream_options added. */
	up = accept_body(
	    CC, "{\"model\":\"gpt-4o-mini\"," UM ",\"stream\":false}", &chat);
	ck_assert(!chat.stream);
	ck_assert_ptr_null(json_object_get(up, "stream_options"));
	json_decref(up);
}
END_TEST

START_TEST(test_openai_message_shapes)
{
	struct gw_chat chat;
	json_t *up = accept_body(CC,
	    "{\"model\":\"gpt-4o\",\"messages\":["
	    "{\"role\":\"developer\",\"content\":\"terse\"},"
	    "{\"role\":\"system\",\"content\":[{\"type\":\"text\",\"text\":"
	    "\"x\"}]},"
	    "{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_"
	    "url\":"
	    "{\"url\":\"data:,\"}}]},"
	    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[]},"
	    "{\"role\":\"tool\",\"tool_call_id\":\"c\",\"content\":\"r\"}],"
	    "\"max_tokens\":null,\"temperature\":null,\"stream\":null}",
	    &chat);

	ck_assert_int_eq(chat.max_tokens, 1024);
	json_decref(up);
}
END_TEST

START_TEST(test_max_tokens_default_capped)
{
	struct gw_chat chat;
	json_t *up;

	vcfg.default_max_tokens = 9000; /* above the limit */
	up = accept_body(C, "{" UM "}", &chat);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(up, "max_tokens")), 4000);
	json_decref(up);
}
END_TEST

START_TEST(test_default_model)
{
	const struct model *m = gw_default_model(&vcfg, "claude");

	ck_assert_str_eq(m->id, "claude-3-sonnet-20240229");
	m = gw_default_model(&vcfg, "openai");
	ck_assert_str_eq(m->provider, "openai");
	vcfg.default_model = "gpt-4o";
	ck_assert_str_eq(
	    gw_default_model(&vcfg, "openai")->id, "gpt-4o-2024-08-06");
	ck_assert_str_eq(gw_default_model(&vcfg, "claude")->provider, "claude");
}
END_TEST

Suite *
gw_validate_suite(void)
{
	Suite *s = suite_create("gw_validate");
	TCase *tc = tcase_create("reject");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(
	    tc, test_reject, 0, (int)(sizeof(rejects) / sizeof(rejects[0])));
	tcase_add_test(tc, test_body_too_large);
	tcase_add_test(tc, test_depth_32_allowed);
	suite_add_tcase(s, tc);
	tc = tcase_create("accept");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_envelope_claude_defaults);
	tcase_add_test(tc, test_envelope_openai_default_model);
	tcase_add_test(tc, test_alias_resolves);
	tcase_add_test(tc, test_dropin_forwards_unknown);
	tcase_add_test(tc, test_openai_stream_include_usage);
	tcase_add_test(tc, test_openai_message_shapes);
	tcase_add_test(tc, test_max_tokens_default_capped);
	tcase_add_test(tc, test_default_model);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return gw_unit_run(gw_validate_suite());
}
