/*
 * models: the shipped table (config/models.json), aliases, exact integer
 * costs rounded up, the worst case reserved before a call, and malformed
 * tables rejected.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "models.h"
#include "unit_common.h"

static struct model_table *table;

static void
table_setup(void)
{
	char *path = uc_source_path("config/models.json");
	char err[512] = "";
	int rv;

	rv = models_load(path, &table, err, sizeof(err));
	ck_assert_msg(rv == 0, "models_load(%s): %d %s", path, rv, err);
	free(path);
}

static void
table_teardown(void)
{
	models_free(table);
	table = NULL;
}

static const struct model *
must_find(const char *name)
{
	const struct model *m = models_lookup(table, name);

	ck_assert_msg(m != NULL, "%s not in the table", name);
	return m;
}

/* ---- the shipped table ---- */

static const struct {
	const char *name;
	const char *id; /* NULL: unknown */
	const char *provider;
} lookups[] = {
    {"claude-3-sonnet", "claude-3-sonnet-20240229", "claude"},
    {"claude-3-sonnet-20240229", "claude-3-sonnet-20240229", "claude"},
    {"gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai"},
    {"gpt-4o-mini-2024-07-18", "gpt-4o-mini-2024-07-18", "openai"},
    {"claude-3-opus-latest", "claude-3-opus-20240229", "claude"},
    {"claude-3-haiku", "claude-3-haiku-20240307", "claude"},
    {"gpt-4", "gpt-4-0613", "openai"},
    {"claude-3", NULL, NULL},
    {"gpt-4o-mini-", NULL, NULL},
    {"CLAUDE-3-SONNET", NULL, NULL},
    {"claude-3-sonnet ", NULL, NULL},
    {"", NULL, NULL},
    {"gpt-99", NULL, NULL},
};

START_TEST(test_lookup)
{
	const struct model *m = models_lookup(table, lookups[_i].name);

	if (lookups[_i].id == NULL) {
		ck_assert_ptr_null(m);
		return;
	}
	ck_assert_msg(m != NULL, "%s unknown", lookups[_i].name);
	ck_assert_str_eq(m->id, lookups[_i].id);
	ck_assert_str_eq(m->provider, lookups[_i].provider);
}
END_TEST

/* Every shipped model is priced (a model without a price must not be
 * billed at zero), findable by its id, and within bounds. */
START_TEST(test_table_sane)
{
	size_t n = models_count(table);

	ck_assert_uint_ge(n, 20);
	for (size_t i = 0; i < n; i++) {
		const struct model *m = models_at(table, i);

		ck_assert_ptr_nonnull(m);
		ck_assert_msg(m->in > 0 && m->out > 0, "%s: unpriced", m->id);
		ck_assert_msg(m->cache_read >= 0 && m->cache_write_5m >= 0 &&
				  m->cache_write_1h >= 0,
		    "%s: negative cache price", m->id);
		ck_assert_msg(strcmp(m->provider, "claude") == 0 ||
				  strcmp(m->provider, "openai") == 0,
		    "%s: provider %s", m->id, m->provider);
		ck_assert_ptr_eq(models_lookup(table, m->id), m);
	}
	ck_assert_ptr_null(models_at(table, n));
}
END_TEST

START_TEST(test_prices)
{
	const struct model *m;

	/* USD per 1M tokens -> micro-USD per 1M tokens. */
	m = must_find("claude-3-sonnet");
	ck_assert_int_eq(m->in, 3000000);
	ck_assert_int_eq(m->out, 15000000);
	/* No cache prices listed: billed at the input price. */
	ck_assert_int_eq(m->cache_write_5m, 3000000);
	ck_assert_int_eq(m->cache_write_1h, 3000000);
	ck_assert_int_eq(m->cache_read, 3000000);
	m = must_find("gpt-4o-mini");
	ck_assert_int_eq(m->in, 150000);
	ck_assert_int_eq(m->out, 600000);
	ck_assert_int_eq(m->cache_read, 75000);
	ck_assert_int_eq(m->cache_write_5m, 150000);
	m = must_find("claude-3-opus");
	ck_assert_int_eq(m->cache_write_5m, 18750000);
	ck_assert_int_eq(m->cache_write_1h, 30000000);
	ck_assert_int_eq(m->cache_read, 1500000);
	m = must_find("gpt-5-nano");
	ck_assert_int_eq(m->cache_read, 5000);
}
END_TEST

/* ---- costs, worked by hand ---- */

static const struct cost_case {
	const char *model;
	struct model_usage u; /* input, output, cache_read, cw5m, cw1h */
	int64_t micro_usd;
} cost_cases[] = {
    /* 1000 x 3 + 500 x 15 = 10500 USD per 1M = 0.0105 USD */
    {"claude-3-sonnet", {1000, 500, 0, 0, 0}, 10500},
    {"claude-3-sonnet", {0, 0, 0, 0, 0}, 0},
    /* 0.15 micro-USD rounds up to 1 */
    {"gpt-4o-mini", {1, 0, 0, 0, 0}, 1},
    /* 20 x 0.15 = 3 exactly: no rounding */
    {"gpt-4o-mini", {20, 0, 0, 0, 0}, 3},
    /* 21 x 0.15 = 3.15 -> 4 */
    {"gpt-4o-mini", {21, 0, 0, 0, 0}, 4},
    {"gpt-4o-mini", {0, 1, 0, 0, 0}, 1},
    /* 1000 x 0.15 + 7 x 0.6 + 3 x 0.075 = 154.425 -> 155 */
    {"gpt-4o-mini", {1000, 7, 3, 0, 0}, 155},
    /* 100 x 15 + 10 x 75 + 1000 x 1.5 + 200 x 18.75 + 300 x 30 = 16500 */
    {"claude-3-opus", {100, 10, 1000, 200, 300}, 16500},
    /* 0.03 -> 1 */
    {"claude-3-haiku", {0, 0, 1, 0, 0}, 1},
    /* 1M 1h-cache-write tokens at 0.50 USD */
    {"claude-3-haiku", {0, 0, 0, 0, 1000000}, 500000},
    /* 4 x 0.25 = 1 exactly; 5 x 0.25 = 1.25 -> 2 */
    {"claude-3-haiku", {4, 0, 0, 0, 0}, 1},
    {"claude-3-haiku", {5, 0, 0, 0, 0}, 2},
    /* No listed cache price: billed at input (3 USD) */
    {"claude-3-sonnet", {0, 0, 0, 1000, 0}, 3000},
    {"claude-3-sonnet", {0, 0, 0, 0, 1000}, 3000},
    /* 200 x 0.005 = 1 exactly; 201 -> 1.005 -> 2 */
    {"gpt-5-nano", {0, 0, 200, 0, 0}, 1},
    {"gpt-5-nano", {0, 0, 201, 0, 0}, 2},
    /* A billion output tokens at 15 USD per 1M: 15000 USD */
    {"claude-3-sonnet", {0, 1000000000, 0, 0, 0}, 15000000000LL},
};

START_TEST(test_cost)
{
	const struct cost_case *cc = &cost_cases[_i];

	ck_assert_int_eq(
	    models_cost(must_find(cc->model), &cc->u), cc->micro_usd);
}
END_TEST

static const struct {
	const char *model;
	int64_t input, max_tokens;
	int64_t micro_usd;
} worst_cases[] = {
    /* 1000 x 0.15 + 4000 x 0.6 = 2550 */
    {"gpt-4o-mini", 1000, 4000, 2550},
    /* 0.75 -> 1 */
    {"gpt-4o-mini", 1, 1, 1},
    {"gpt-4o-mini", 0, 0, 0},
    {"claude-3-sonnet", 1, 1, 18},
    /* 1000 x 15 + 1000 x 75 = 90000 */
    {"gpt-4-0613", 1000, 1000, 90000},
};

START_TEST(test_worst_case)
{
	ck_assert_int_eq(models_worst_case(must_find(worst_cases[_i].model),
			     worst_cases[_i].input, worst_cases[_i].max_tokens),
	    worst_cases[_i].micro_usd);
}
END_TEST

/*
 * The worst case is what the gateway reserves before the call ("money must
 * not overshoot"), so no outcome of that call may cost more: however the
 * provider splits the prompt between plain input, cache reads and cache
 * writes, and whatever it generates up to max_tokens.
 */
START_TEST(test_worst_case_bounds_cost)
{
	const int64_t prompt = 1000, max_tokens = 100;
	char bad[2048] = "";
	size_t nbad = 0;

	for (size_t i = 0; i < models_count(table); i++) {
		const struct model *m = models_at(table, i);
		int64_t worst = models_worst_case(m, prompt, max_tokens);
		struct model_usage u[4] = {
		    {prompt, max_tokens, 0, 0, 0},
		    {0, max_tokens, prompt, 0, 0},
		    {0, max_tokens, 0, prompt, 0},
		    {0, max_tokens, 0, 0, prompt},
		};

		for (size_t k = 0; k < 4; k++) {
			int64_t cost = models_cost(m, &u[k]);

			if (cost > worst) {
				size_t off = strlen(bad);

				snprintf(bad + off, sizeof(bad) - off,
				    " %s(%lld>%lld)", m->id, (long long)cost,
				    (long long)worst);
				nbad++;
				break;
			}
		}
	}
	ck_assert_msg(nbad == 0,
	    "cost exceeds the reserved worst case for %zu "
	    "models:%s",
	    nbad, bad);
}
END_TEST

/* ---- malformed tables ---- */

#define M_OK "\"id\":\"m-1\",\"provider\":\"claude\",\"input\":1,\"output\":2"

static const struct {
	const char *what;
	const char *json;
} bad_tables[] = {
    {"missing input",
	"{\"models\":[{\"id\":\"m\",\"provider\":\"claude\",\"output\":2}]}"},
    {"missing output",
	"{\"models\":[{\"id\":\"m\",\"provider\":\"claude\",\"input\":2}]}"},
    {"null input", "{\"models\":[{\"id\":\"m\",\"provider\":\"claude\","
		   "\"input\":null,\"output\":2}]}"},
    {"negative input", "{\"models\":[{\"id\":\"m\",\"provider\":\"claude\","
		       "\"input\":-1,\"output\":2}]}"},
    {"negative output", "{\"models\":[{\"id\":\"m\",\"provider\":\"claude\","
			"\"input\":1,\"output\":-0.5}]}"},
    {"negative cache read", "{\"models\":[{" M_OK ",\"cache_read\":-0.1}]}"},
    {"negative cache write", "{\"models\":[{" M_OK ",\"cache_write_1h\":-3}]}"},
    {"price as a string", "{\"models\":[{\"id\":\"m\",\"provider\":\"claude\","
			  "\"input\":\"1.0\",\"output\":2}]}"},
    {"price absurdly high", "{\"models\":[{\"id\":\"m\",\"provider\":"
			    "\"claude\",\"input\":1e9,\"output\":2}]}"},
    {"duplicate id", "{\"models\":[{" M_OK "},{" M_OK "}]}"},
    {"duplicate alias across models",
	"{\"models\":[{" M_OK ",\"aliases\":[\"a\"]},"
	"{\"id\":\"m-2\",\"provider\":\"openai\",\"input\":1,\"output\":2,"
	"\"aliases\":[\"a\"]}]}"},
    {"duplicate alias in one model",
	"{\"models\":[{" M_OK ",\"aliases\":[\"a\",\"a\"]}]}"},
    {"alias equal to its id",
	"{\"models\":[{" M_OK ",\"aliases\":[\"m-1\"]}]}"},
    {"alias equal to an earlier id",
	"{\"models\":[{" M_OK "},"
	"{\"id\":\"m-2\",\"provider\":\"openai\",\"input\":1,\"output\":2,"
	"\"aliases\":[\"m-1\"]}]}"},
    {"id equal to an earlier alias",
	"{\"models\":[{" M_OK ",\"aliases\":[\"m-2\"]},"
	"{\"id\":\"m-2\",\"provider\":\"openai\",\"input\":1,\"output\":2}]}"},
    {"bad provider", "{\"models\":[{\"id\":\"m\",\"provider\":\"google\","
		     "\"input\":1,\"output\":2}]}"},
    {"provider case", "{\"models\":[{\"id\":\"m\",\"provider\":\"Claude\","
		      "\"input\":1,\"output\":2}]}"},
    {"missing provider",
	"{\"models\":[{\"id\":\"m\",\"input\":1,\"output\":2}]}"},
    {"provider not a string", "{\"models\":[{\"id\":\"m\",\"provider\":1,"
			      "\"input\":1,\"output\":2}]}"},
    {"missing id",
	"{\"models\":[{\"provider\":\"claude\",\"input\":1,\"output\":2}]}"},
    {"empty id", "{\"models\":[{\"id\":\"\",\"provider\":\"claude\","
		 "\"input\":1,\"output\":2}]}"},
    {"id too long",
	"{\"models\":[{\"id\":\"0123456789012345678901234567890123456789"
	"0123456789012345678901234\",\"provider\":\"claude\","
	"\"input\":1,\"output\":2}]}"},
    {"id not a string", "{\"models\":[{\"id\":7,\"provider\":\"claude\","
			"\"input\":1,\"output\":2}]}"},
    {"aliases not an array", "{\"models\":[{" M_OK ",\"aliases\":\"a\"}]}"},
    {"alias not a string", "{\"models\":[{" M_OK ",\"aliases\":[1]}]}"},
    {"empty alias", "{\"models\":[{" M_OK ",\"aliases\":[\"\"]}]}"},
    {"model not an object", "{\"models\":[\"m-1\"]}"},
    {"empty models", "{\"models\":[]}"},
    {"models not an array", "{\"models\":{\"m-1\":{}}}"},
    {"no models key", "{\"model\":[{" M_OK "}]}"},
    {"top level array", "[{" M_OK "}]"},
    {"duplicate key", "{\"models\":[{" M_OK ",\"input\":5}]}"},
    {"not JSON", "{\"models\":[{" M_OK "}"},
    {"empty file", ""},
};

START_TEST(test_bad_table)
{
	static char sentinel;
	char *path = uc_temp_file(bad_tables[_i].json);
	struct model_table *t = (struct model_table *)(void *)&sentinel;
	char err[512] = "";
	int rv;

	rv = models_load(path, &t, err, sizeof(err));
	ck_assert_msg(
	    rv == -EINVAL, "%s: accepted (%d)", bad_tables[_i].what, rv);
	/* *ret untouched, and the error says which file. */
	ck_assert_ptr_eq(t, (struct model_table *)(void *)&sentinel);
	ck_assert_msg(strstr(err, path) != NULL, "%s: error \"%s\"",
	    bad_tables[_i].what, err);
	unlink(path);
	free(path);
}
END_TEST

START_TEST(test_missing_file)
{
	struct model_table *t = NULL;
	char err[512] = "";

	ck_assert_int_eq(models_load("/nonexistent-aiproxy/models.json", &t,
			     err, sizeof(err)),
	    -EINVAL);
	ck_assert_ptr_null(t);
	ck_assert_ptr_nonnull(strstr(err, "/nonexistent-aiproxy/models.json"));
}
END_TEST

/* A small valid table: optional fields default sensibly. */
START_TEST(test_small_table)
{
	char *path = uc_temp_file(
	    "{\"models\":[{" M_OK ",\"aliases\":[\"m\"],\"created\":5},"
	    "{\"id\":\"o-1\",\"provider\":\"openai\",\"input\":0.5,"
	    "\"output\":1.5,\"cache_read\":0.25,\"cache_write_5m\":0.75}]}");
	struct model_table *t = NULL;
	const struct model *m;
	char err[512] = "";

	ck_assert_int_eq(models_load(path, &t, err, sizeof(err)), 0);
	ck_assert_uint_eq(models_count(t), 2);
	m = models_lookup(t, "m");
	ck_assert_ptr_nonnull(m);
	ck_assert_str_eq(m->id, "m-1");
	ck_assert_int_eq(m->created, 5);
	ck_assert_int_eq(m->in, 1000000);
	ck_assert_int_eq(m->out, 2000000);
	ck_assert_int_eq(m->cache_read, 1000000);
	ck_assert_int_eq(m->cache_write_5m, 1000000);
	ck_assert_int_eq(m->cache_write_1h, 1000000);
	m = models_lookup(t, "o-1");
	ck_assert_ptr_nonnull(m);
	ck_assert_int_eq(m->cache_read, 250000);
	ck_assert_int_eq(m->cache_write_5m, 750000);
	/* 1h write defaults to the 5m write price. */
	ck_assert_int_eq(m->cache_write_1h, 750000);
	ck_assert_ptr_null(models_lookup(t, "m-2"));
	models_free(t);
	models_free(NULL);
	unlink(path);
	free(path);
}
END_TEST

Suite *
models_suite(void)
{
	Suite *s = suite_create("models");
	TCase *tc;

	tc = tcase_create("table");
	tcase_add_checked_fixture(tc, table_setup, table_teardown);
	tcase_add_loop_test(
	    tc, test_lookup, 0, sizeof(lookups) / sizeof(lookups[0]));
	tcase_add_test(tc, test_table_sane);
	tcase_add_test(tc, test_prices);
	suite_add_tcase(s, tc);

	tc = tcase_create("cost");
	tcase_add_checked_fixture(tc, table_setup, table_teardown);
	tcase_add_loop_test(
	    tc, test_cost, 0, sizeof(cost_cases) / sizeof(cost_cases[0]));
	tcase_add_loop_test(tc, test_worst_case, 0,
	    sizeof(worst_cases) / sizeof(worst_cases[0]));
	tcase_add_test(tc, test_worst_case_bounds_cost);
	suite_add_tcase(s, tc);

	tc = tcase_create("malformed");
	tcase_add_loop_test(
	    tc, test_bad_table, 0, sizeof(bad_tables) / sizeof(bad_tables[0]));
	tcase_add_test(tc, test_missing_file);
	tcase_add_test(tc, test_small_table);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return uc_run(models_suite());
}
