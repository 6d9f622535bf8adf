/*
 * gw_limit_worst_case: the reservation covers the dearer of the model
 * asked for and the model a non-streamed call may fail over to.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "gw_unit.h"
#include "models.h"

static struct model_table *T;

#define MAP "claude-3-haiku=gpt-4o,*=gpt-4o-mini,*=claude-3-haiku"

/* What the gateway finds at start for model m under map. */
#define FB(map, m)                                                             \
	models_fallback(T, (map), (m),                                         \
	    strcmp((m)->provider, "claude") == 0 ? "openai" : "claude")

START_TEST(test_fallback_dearer_is_reserved)
{
	const struct model *haiku = models_lookup(T, "claude-3-haiku");
	const struct model *gpt4o = models_lookup(T, "gpt-4o");
	int64_t own, fb;

	ck_assert_ptr_nonnull(haiku);
	ck_assert_ptr_nonnull(gpt4o);
	own = models_worst_case(haiku, 1000, 500);
	fb = models_worst_case(gpt4o, 1000, 500);
	ck_assert_int_gt(fb, own);
	ck_assert_int_eq(
	    gw_limit_worst_case(haiku, FB(MAP, haiku), false, 1000, 500), fb);
	/* Streams are not carried across: the model's own worst case. */
	ck_assert_int_eq(
	    gw_limit_worst_case(haiku, FB(MAP, haiku), true, 1000, 500), own);
	/* No map, or one naming nothing for it. */
	ck_assert_int_eq(
	    gw_limit_worst_case(haiku, FB("", haiku), false, 1000, 500), own);
	ck_assert_int_eq(
	    gw_limit_worst_case(haiku, FB(NULL, haiku), false, 1000, 500), own);
}
END_TEST

START_TEST(test_cheaper_fallback_keeps_own)
{
	const struct model *opus = models_lookup(T, "claude-3-opus");
	const struct model *gpt4 = models_lookup(T, "gpt-4");

	ck_assert_ptr_nonnull(opus);
	ck_assert_ptr_nonnull(gpt4);
	/* opus -> "*" = gpt-4o-mini, far cheaper: opus's own. */
	ck_assert_int_eq(
	    gw_limit_worst_case(opus, FB(MAP, opus), false, 2000, 100),
	    models_worst_case(opus, 2000, 100));
	/* gpt-4 -> "*" = claude-3-haiku, cheaper: gpt-4's own. */
	ck_assert_int_eq(
	    gw_limit_worst_case(gpt4, FB(MAP, gpt4), false, 2000, 100),
	    models_worst_case(gpt4, 2000, 100));
}
END_TEST

START_TEST(test_models_fallback_lookup)
{
	const struct model *haiku = models_lookup(T, "claude-3-haiku");
	const struct model *sonnet = models_lookup(T, "claude-3-5-sonnet");
	const struct model *gpt4o = models_lookup(T, "gpt-4o");

	/* Its own entry first, by alias or exact id. */
	ck_assert_ptr_eq(models_fallback(T, MAP, haiku, "openai"), gpt4o);
	ck_assert_ptr_eq(models_fallback(T, "claude-3-haiku-20240307=gpt-4o",
			     haiku, "openai"),
	    gpt4o);
	/* Else the first "*" of the wanted provider. */
	ck_assert_ptr_eq(models_fallback(T, MAP, sonnet, "openai"),
	    models_lookup(T, "gpt-4o-mini"));
	ck_assert_ptr_eq(models_fallback(T, MAP, gpt4o, "claude"), haiku);
	/* Nothing for that provider, an unknown model, an empty map. */
	ck_assert_ptr_null(
	    models_fallback(T, "claude-3-haiku=gpt-4o", sonnet, "openai"));
	ck_assert_ptr_null(
	    models_fallback(T, "*=no-such-model", sonnet, "openai"));
	ck_assert_ptr_null(models_fallback(T, "", sonnet, "openai"));
	ck_assert_ptr_null(models_fallback(T, NULL, sonnet, "openai"));
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("gw_limit");
	TCase *tc = tcase_create("worst_case");
	int rv;

	T = gw_unit_models();
	tcase_add_test(tc, test_fallback_dearer_is_reserved);
	tcase_add_test(tc, test_cheaper_fallback_keeps_own);
	tcase_add_test(tc, test_models_fallback_lookup);
	suite_add_tcase(s, tc);
	rv = gw_unit_run(s);
	models_free(T);
	return rv;
}
