/*
 * Usage from provider JSON bodies (both providers, cache fields, clamping,
 * bad input) and the cost of a call with the real config/models.json.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "models.h"
#include "pw_unit.h"
#include "pw_usage.h"

struct body_case {
	const char *name;
	enum pw_prov prov;
	const char *body;
	int rv;
	int64_t input, output, cache_read, w5m, w1h;
};

static const struct body_case body_cases[] = {
    {"claude reference", PW_PROV_CLAUDE,
	"{\"id\":\"msg_01\",\"type\":\"message\",\"usage\":{\"input_tokens\":"
	"412,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":"
	"1536,\"cache_creation\":{\"ephemeral_5m_input_tokens\":0,"
	"\"ephemeral_1h_input_tokens\":0},\"output_tokens\":11,"
	"\"service_tier\":\"standard\"}}",
	0, 412, 11, 1536, 0, 0},
    {"claude split", PW_PROV_CLAUDE,
	"{\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":300,"
	"\"cache_creation\":{\"ephemeral_5m_input_tokens\":100,"
	"\"ephemeral_1h_input_tokens\":200},\"output_tokens\":5}}",
	0, 10, 5, 0, 100, 200},
    {"claude total only", PW_PROV_CLAUDE,
	"{\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":300,"
	"\"cache_read_input_tokens\":null,\"cache_creation\":null,"
	"\"output_tokens\":5}}",
	0, 10, 5, 0, 300, 0},
    {"claude clamped", PW_PROV_CLAUDE,
	"{\"usage\":{\"input_tokens\":-5,\"output_tokens\":99999999999}}", 0, 0,
	1000000000, 0, 0, 0},
    {"claude float ignored", PW_PROV_CLAUDE,
	"{\"usage\":{\"input_tokens\":1.5,\"output_tokens\":2}}", 0, 0, 2, 0, 0,
	0},
    {"openai plain", PW_PROV_OPENAI,
	"{\"id\":\"chatcmpl-1\",\"usage\":{\"prompt_tokens\":82,"
	"\"completion_tokens\":17,\"total_tokens\":99,"
	"\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0}}}",
	0, 82, 17, 0, 0, 0},
    {"openai cached", PW_PROV_OPENAI,
	"{\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":100,"
	"\"prompt_tokens_details\":{\"cached_tokens\":400}}}",
	0, 600, 100, 400, 0, 0},
    {"openai cached above prompt", PW_PROV_OPENAI,
	"{\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":1,"
	"\"prompt_tokens_details\":{\"cached_tokens\":40}}}",
	0, 0, 1, 10, 0, 0},
    {"openai no details", PW_PROV_OPENAI,
	"{\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,"
	"\"prompt_tokens_details\":null}}",
	0, 7, 3, 0, 0, 0},
    {"no usage", PW_PROV_OPENAI, "{\"id\":\"x\"}", -EPROTO, 0, 0, 0, 0, 0},
    {"usage null", PW_PROV_CLAUDE, "{\"usage\":null}", -EPROTO, 0, 0, 0, 0, 0},
    {"usage empty", PW_PROV_CLAUDE, "{\"usage\":{}}", -EPROTO, 0, 0, 0, 0, 0},
    {"not json", PW_PROV_CLAUDE, "{\"usage\":{\"input_tokens\":1", -EPROTO, 0,
	0, 0, 0, 0},
    {"not an object", PW_PROV_OPENAI, "[1,2]", -EPROTO, 0, 0, 0, 0, 0},
    {"claude fields on openai", PW_PROV_OPENAI,
	"{\"usage\":{\"input_tokens\":5,\"output_tokens\":6}}", -EPROTO, 0, 0,
	0, 0, 0},
};

START_TEST(test_body)
{
	const struct body_case *c = &body_cases[_i];
	struct pw_usage u;
	int rv;

	memset(&u, 0x5a, sizeof(u));
	rv = pw_usage_from_body(c->prov, c->body, strlen(c->body), &u);
	ck_assert_msg(rv == c->rv, "%s: rv %d, want %d", c->name, rv, c->rv);
	if (rv != 0) {
		/* Untouched on failure. */
		ck_assert_int_eq(u.tokens.input, 0x5a5a5a5a5a5a5a5aLL);
		return;
	}
	ck_assert(u.seen);
	ck_assert_msg(u.tokens.input == c->input, "%s: input %lld", c->name,
	    (long long)u.tokens.input);
	ck_assert_msg(u.tokens.output == c->output, "%s: output %lld", c->name,
	    (long long)u.tokens.output);
	ck_assert_msg(u.tokens.cache_read == c->cache_read,
	    "%s: cache_read %lld", c->name, (long long)u.tokens.cache_read);
	ck_assert_msg(u.tokens.cache_write_5m == c->w5m, "%s: 5m %lld", c->name,
	    (long long)u.tokens.cache_write_5m);
	ck_assert_msg(u.tokens.cache_write_1h == c->w1h, "%s: 1h %lld", c->name,
	    (long long)u.tokens.cache_write_1h);
}
END_TEST

START_TEST(test_prov_names)
{
	ck_assert_int_eq(pw_prov_from_str("claude"), PW_PROV_CLAUDE);
	ck_assert_int_eq(pw_prov_from_str("openai"), PW_PROV_OPENAI);
	ck_assert_int_eq(pw_prov_from_str("Claude"), PW_PROV_MAX);
	ck_assert_int_eq(pw_prov_from_str(""), PW_PROV_MAX);
	ck_assert_int_eq(pw_prov_from_str(NULL), PW_PROV_MAX);
	ck_assert_str_eq(pw_prov_str(PW_PROV_OPENAI), "openai");
}
END_TEST

/* ---- cost with the real model table ---- */

struct cost_case {
	const char *model; /* id or alias */
	enum pw_prov prov;
	const char *body;
	int64_t micro_usd;
};

/*
 * Expected values by hand from config/models.json (USD per 1M tokens):
 * sonnet 4.5: in 3, out 15, 5m 3.75, 1h 6, read 0.30;
 * gpt-4o-mini: in 0.15, out 0.60, cached 0.075; haiku 3: in 0.25, out
 * 1.25, 5m 0.30, 1h 0.50, read 0.03.
 */
static const struct cost_case cost_cases[] = {
    /* 1000*3 + 500*15 + 2000*0.3 + 100*3.75 + 100*6 = 12075 */
    {"claude-sonnet-4-5-20250929", PW_PROV_CLAUDE,
	"{\"usage\":{\"input_tokens\":1000,\"output_tokens\":500,"
	"\"cache_read_input_tokens\":2000,\"cache_creation_input_tokens\":200,"
	"\"cache_creation\":{\"ephemeral_5m_input_tokens\":100,"
	"\"ephemeral_1h_input_tokens\":100}}}",
	12075},
    /* alias; 1M input at 3 + 1M output at 15 = 18 USD */
    {"claude-sonnet-4-5", PW_PROV_CLAUDE,
	"{\"usage\":{\"input_tokens\":1000000,\"output_tokens\":1000000}}",
	18000000},
    /* 600*0.15 + 400*0.075 + 100*0.6 = 90 + 30 + 60 = 180 */
    {"gpt-4o-mini", PW_PROV_OPENAI,
	"{\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":100,"
	"\"prompt_tokens_details\":{\"cached_tokens\":400}}}",
	180},
    /* 1 token at 0.15 micro-USD rounds up to 1: never under-bills */
    {"gpt-4o-mini-2024-07-18", PW_PROV_OPENAI,
	"{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":0}}", 1},
    /* 25*0.25 + 6*1.25 + 7*0.03 + 3*0.30 + 2*0.50 = 6.25 + 7.5 + 0.21 +
     * 0.9 + 1.0 = 15.86 -> 16 */
    {"claude-3-haiku-20240307", PW_PROV_CLAUDE,
	"{\"usage\":{\"input_tokens\":25,\"output_tokens\":6,"
	"\"cache_read_input_tokens\":7,\"cache_creation\":{"
	"\"ephemeral_5m_input_tokens\":3,\"ephemeral_1h_input_tokens\":2}}}",
	16},
    /* claude-3-sonnet has no cache prices: cache at the input price.
     * 10*3 + 10*3 + 10*15 = 210 -> 0.00021 USD = 210 micro */
    {"claude-3-sonnet", PW_PROV_CLAUDE,
	"{\"usage\":{\"input_tokens\":10,\"output_tokens\":10,"
	"\"cache_read_input_tokens\":10}}",
	210},
    {"gpt-4o", PW_PROV_OPENAI,
	"{\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":0}}", 0},
};

START_TEST(test_cost)
{
	const struct cost_case *c = &cost_cases[_i];
	char *path = pw_unit_source_path("config/models.json");
	struct model_table *t = NULL;
	const struct model *m;
	struct pw_usage u;
	char err[256];

	ck_assert_msg(
	    models_load(path, &t, err, sizeof(err)) == 0, "%s: %s", path, err);
	m = models_lookup(t, c->model);
	ck_assert_msg(m != NULL, "%s not in the table", c->model);
	ck_assert_str_eq(m->provider, pw_prov_str(c->prov));
	ck_assert_int_eq(
	    pw_usage_from_body(c->prov, c->body, strlen(c->body), &u), 0);
	ck_assert_msg(models_cost(m, &u.tokens) == c->micro_usd,
	    "%s: cost %lld, want %lld", c->model,
	    (long long)models_cost(m, &u.tokens), (long long)c->micro_usd);
	models_free(t);
	free(path);
}
END_TEST

START_TEST(test_cost_of_streams)
{
	char *path = pw_unit_source_path("config/models.json");
	struct model_table *t = NULL;
	struct pw_stream_usage su;
	char err[256];

	ck_assert_int_eq(models_load(path, &t, err, sizeof(err)), 0);
	/* The Claude sample stream on sonnet 4.5: 25*3 + 6*15 + 7*0.3 +
	 * 3*3.75 + 2*6 = 75 + 90 + 2.1 + 11.25 + 12 = 190.35 -> 191 */
	pw_stream_usage_init(&su, PW_PROV_CLAUDE);
	pw_stream_usage_feed(&su, pw_claude_stream, strlen(pw_claude_stream));
	ck_assert_int_eq(
	    models_cost(models_lookup(t, "claude-sonnet-4-5-20250929"),
		&su.usage.tokens),
	    191);
	pw_stream_usage_free(&su);
	/* The OpenAI sample on gpt-4o-mini: 5*0.15 + 4*0.075 + 2*0.6 =
	 * 0.75 + 0.3 + 1.2 = 2.25 -> 3 */
	pw_stream_usage_init(&su, PW_PROV_OPENAI);
	pw_stream_usage_feed(&su, pw_openai_stream, strlen(pw_openai_stream));
	ck_assert_int_eq(
	    models_cost(models_lookup(t, "gpt-4o-mini"), &su.usage.tokens), 3);
	pw_stream_usage_free(&su);
	models_free(t);
	free(path);
}
END_TEST

Suite *
pw_usage_suite(void)
{
	Suite *s = suite_create("pw_usage");
	TCase *tc;

	tc = tcase_create("body");
	tcase_add_loop_test(
	    tc, test_body, 0, sizeof(body_cases) / sizeof(body_cases[0]));
	tcase_add_test(tc, test_prov_names);
	suite_add_tcase(s, tc);

	tc = tcase_create("cost");
	tcase_add_loop_test(
	    tc, test_cost, 0, sizeof(cost_cases) / sizeof(cost_cases[0]));
	tcase_add_test(tc, test_cost_of_streams);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return pw_unit_run(pw_usage_suite());
}
