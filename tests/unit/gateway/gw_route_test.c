/*
 * gw_route: path -> route (404 when none), methods (405 and Allow), the
 * error shape per path, and request id handling.
 */
#include <string.h>

#include "gw_route.h"
#include "gw_unit.h"
#include "ids.h"

static const struct {
	const char *path;
	int id; /* -1: no route (404) */
	const char *param;
} lookups[] = {
    {"/api/v1/ai-proxy/claude/chat", GW_R_CLAUDE_CHAT, NULL},
    {"/api/v1/ai-proxy/openai/chat", GW_R_OPENAI_CHAT, NULL},
    {"/api/v1/ai-proxy/openai/chat/", GW_R_OPENAI_CHAT, NULL},
    {"/v1/chat/completions", GW_R_CHAT_COMPLETIONS, NULL},
    {"/v1/messages", GW_R_MESSAGES, NULL},
    {"/v1/models", GW_R_MODELS, NULL},
    {"/health", GW_R_HEALTH, NULL},
    {"/health/", GW_R_HEALTH, NULL},
    {"/health/detailed", GW_R_HEALTH_DETAILED, NULL},
    {"/api/v1/ai-proxy/circuit-breaker/claude/reset", GW_R_BREAKER_RESET,
	"claude"},
    {"/api/v1/ai-proxy/circuit-breaker/whatever/reset", GW_R_BREAKER_RESET,
	"whatever"},
    {"/api/v1/ai-proxy/cache/clear", GW_R_CACHE_CLEAR, NULL},
    {"/api/v1/ai-proxy/admin/blocked", GW_R_BLOCKED, NULL},
    {"/api/v1/ai-proxy/admin/blocked/", GW_R_BLOCKED, NULL},
    {"/api/v1/ai-proxy/admin/blocked/session/anon:127.0.0.1", GW_R_UNBLOCK,
	"session/anon:127.0.0.1"},
    {"/api/v1/ai-proxy/admin/blocked/user/a/b", GW_R_UNBLOCK, "user/a/b"},
    {"/api/v1/ai-proxy/admin/blocked/ip/::1/", GW_R_UNBLOCK, "ip/::1"},
    {"/api/v1/ai-proxy/admin/blockedx", -1, NULL},
    {"/api/v1/ai-proxy/circuit-breaker//reset", -1, NULL},
    {"/api/v1/ai-proxy/circuit-breaker/a/b/reset", -1, NULL},
    {"/api/v1/ai-proxy/gemini/chat", -1, NULL},
    {"/", -1, NULL},
    {"", -1, NULL},
    {"/healthz", -1, NULL},
    {"/health/detailed/x", -1, NULL},
    {"/v1/messages/count_tokens", -1, NULL},
    {"/V1/MESSAGES", -1, NULL},
    {"//health", -1, NULL},
};

START_TEST(test_lookup)
{
	char param[64] = "";
	const struct gw_route *r =
	    gw_route_lookup(lookups[_i].path, param, sizeof(param));

	if (lookups[_i].id < 0) {
		ck_assert_msg(r == NULL, "%s should be 404", lookups[_i].path);
		return;
	}
	ck_assert_msg(r != NULL, "%s not found", lookups[_i].path);
	ck_assert_int_eq(r->id, lookups[_i].id);
	if (lookups[_i].param != NULL)
		ck_assert_str_eq(param, lookups[_i].param);
}
END_TEST

START_TEST(test_methods)
{
	const struct gw_route *r;
	char allow[64];

	r = gw_route_lookup("/v1/messages", NULL, 0);
	ck_assert(gw_route_allows(r, GW_M_POST));
	ck_assert(!gw_route_allows(r, GW_M_GET));
	ck_assert(!gw_route_allows(r, GW_M_OTHER));
	gw_route_allow_str(r, allow, sizeof(allow));
	ck_assert_str_eq(allow, "POST, OPTIONS");
	ck_assert_int_eq(r->shape, GW_SHAPE_ANTHROPIC);
	ck_assert(r->chat);
	ck_assert_ptr_null(r->provider);

	r = gw_route_lookup("/health", NULL, 0);
	ck_assert(gw_route_allows(r, GW_M_GET));
	ck_assert(gw_route_allows(r, GW_M_HEAD));
	ck_assert(!gw_route_allows(r, GW_M_POST));
	gw_route_allow_str(r, allow, sizeof(allow));
	ck_assert_str_eq(allow, "GET, HEAD, OPTIONS");

	r = gw_route_lookup("/api/v1/ai-proxy/cache/clear", NULL, 0);
	ck_assert(r->admin);
	ck_assert(gw_route_allows(r, GW_M_DELETE));
	ck_assert(!gw_route_allows(r, GW_M_POST));
	gw_route_allow_str(r, allow, sizeof(allow));
	ck_assert_str_eq(allow, "DELETE, OPTIONS");

	r = gw_route_lookup("/api/v1/ai-proxy/admin/blocked", NULL, 0);
	ck_assert(r->admin);
	gw_route_allow_str(r, allow, sizeof(allow));
	ck_assert_str_eq(allow, "GET, OPTIONS");
	r = gw_route_lookup(
	    "/api/v1/ai-proxy/admin/blocked/ip/1.2.3.4", NULL, 0);
	ck_assert(r->admin);
	gw_route_allow_str(r, allow, sizeof(allow));
	ck_assert_str_eq(allow, "DELETE, OPTIONS");

	r = gw_route_lookup("/api/v1/ai-proxy/claude/chat", NULL, 0);
	ck_assert_str_eq(r->provider, "claude");
	ck_assert_int_eq(r->shape, GW_SHAPE_ENVELOPE);
	r = gw_route_lookup("/v1/chat/completions", NULL, 0);
	ck_assert_int_eq(r->shape, GW_SHAPE_OPENAI);
	/* A tiny buffer is still terminated. */
	gw_route_allow_str(r, allow, 3);
	ck_assert_uint_lt(strlen(allow), 3);
}
END_TEST

START_TEST(test_method_bits)
{
	ck_assert_uint_eq(gw_method_bit("GET"), GW_M_GET);
	ck_assert_uint_eq(gw_method_bit("POST"), GW_M_POST);
	ck_assert_uint_eq(gw_method_bit("DELETE"), GW_M_DELETE);
	ck_assert_uint_eq(gw_method_bit("OPTIONS"), GW_M_OPTIONS);
	ck_assert_uint_eq(gw_method_bit("HEAD"), GW_M_HEAD);
	ck_assert_uint_eq(gw_method_bit("get"), GW_M_OTHER);
	ck_assert_uint_eq(gw_method_bit("PATCH"), GW_M_OTHER);
	ck_assert_uint_eq(gw_method_bit(NULL), GW_M_OTHER);
}
END_TEST

START_TEST(test_shape_for_path)
{
	ck_assert_int_eq(
	    gw_route_shape_for_path("/v1/messages/x"), GW_SHAPE_ANTHROPIC);
	ck_assert_int_eq(
	    gw_route_shape_for_path("/v1/embeddings"), GW_SHAPE_OPENAI);
	ck_assert_int_eq(
	    gw_route_shape_for_path("/api/v1/nope"), GW_SHAPE_ENVELOPE);
	ck_assert_int_eq(gw_route_shape_for_path("/"), GW_SHAPE_ENVELOPE);
}
END_TEST

START_TEST(test_request_id)
{
	char id[ID_MAX + 1], id2[ID_MAX + 1];
	char long_id[80];

	ck_assert(gw_request_id("client-id_1.2:3", id, sizeof(id)));
	ck_assert_str_eq(id, "client-id_1.2:3");
	/* Invalid client ids are replaced by a fresh "req_" id. */
	memset(long_id, 'a', 65);
	long_id[65] = '\0';
	static const char *const bad[] = {NULL, "", "has space", "quo\"te",
	    "new\nline", "slash/x", "\xc3\xa9"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert(!gw_request_id(bad[i], id, sizeof(id)));
		ck_assert_int_eq(strncmp(id, "req_", 4), 0);
		ck_assert(id_valid(id));
	}
	ck_assert(!gw_request_id(long_id, id, sizeof(id)));
	ck_assert(id_valid(id));
	memset(long_id, 'a', 64);
	long_id[64] = '\0';
	ck_assert(gw_request_id(long_id, id, sizeof(id)));
	/* Fresh ids differ. */
	gw_request_id(NULL, id, sizeof(id));
	gw_request_id(NULL, id2, sizeof(id2));
	ck_assert_str_ne(id, id2);
}
END_TEST

Suite *
gw_route_suite(void)
{
	Suite *s = suite_create("gw_route");
	TCase *tc = tcase_create("routes");

	tcase_add_loop_test(
	    tc, test_lookup, 0, (int)(sizeof(lookups) / sizeof(lookups[0])));
	tcase_add_test(tc, test_methods);
	tcase_add_test(tc, test_method_bits);
	tcase_add_test(tc, test_shape_for_path);
	tcase_add_test(tc, test_request_id);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return gw_unit_run(gw_route_suite());
}
