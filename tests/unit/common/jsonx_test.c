/*
 * jsonx: nesting depth of arrays and objects, brackets inside strings and
 * escaped quotes ignored, deeper than max -> -1.
 */
#include <stdlib.h>
#include <string.h>

#include "jsonx.h"
#include "unit_common.h"

static const struct {
	const char *text;
	int max;
	int depth;
} depth_cases[] = {
    {"", 8, 0},
    {"1", 8, 0},
    {"\"str\"", 8, 0},
    {"{}", 8, 1},
    {"[]", 8, 1},
    {"[[[]]]", 8, 3},
    {"{\"a\":[{\"b\":[]}]}", 8, 4},
    {"[1,[2],[3,[4]]]", 8, 3},
    {"[[],[],[]]", 8, 2},
    {"{\"a\":{},\"b\":{\"c\":{}}}", 8, 3},
    /* Brackets inside strings do not count. */
    {"\"[[[[[[[[[[\"", 2, 0},
    {"{\"a\":\"}{[[[\"}", 1, 1},
    {"[\"]]]]\",[\"[[[[\"]]", 8, 2},
    /* An escaped quote does not end the string. */
    {"[\"\\\"[[[\"]", 1, 1},
    {"[\"\\\\\\\"[[\",[]]", 8, 2},
    /* An escaped backslash does: the brackets after it count. */
    {"[\"\\\\\",[[]]]", 8, 3},
    {"{\"k\\\\\":[[{}]]}", 8, 4},
    /* Whitespace and an unterminated string. */
    {" [ \n [ \t ] ] ", 8, 2},
    {"[\"abc", 8, 1},
    /* At the limit, and past it. */
    {"[[[]]]", 3, 3},
    {"[[[]]]", 2, -1},
    {"[]", 0, -1},
    {"0", 0, 0},
    {"{\"a\":[{\"b\":[]}]}", 3, -1},
    /* Closing brackets first must not buy extra depth for what follows. */
    {"]]]][[[[[]]]]]", 3, -1},
    {"}}}}{{{{{", 3, -1},
};

START_TEST(test_depth)
{
	const char *t = depth_cases[_i].text;

	ck_assert_msg(jsonx_depth(t, strlen(t), depth_cases[_i].max) ==
			  depth_cases[_i].depth,
	    "jsonx_depth(%s, max %d) = %d, want %d", t, depth_cases[_i].max,
	    jsonx_depth(t, strlen(t), depth_cases[_i].max),
	    depth_cases[_i].depth);
}
END_TEST

/* Only len bytes are read (a body is not NUL-terminated). */
START_TEST(test_len_respected)
{
	static const char t[] = "[[[[]]]]";

	ck_assert_int_eq(jsonx_depth(t, 2, 8), 2);
	ck_assert_int_eq(jsonx_depth(t, 0, 8), 0);
	ck_assert_int_eq(jsonx_depth("[\"\0[[[\"]", 8, 2), 1);
}
END_TEST

static char *
nested(size_t depth, char open, char close)
{
	char *s = malloc(2 * depth + 1);

	ck_assert_ptr_nonnull(s);
	memset(s, open, depth);
	memset(s + depth, close, depth);
	s[2 * depth] = '\0';
	return s;
}

START_TEST(test_deep)
{
	char *s = nested(100000, '[', ']');

	ck_assert_int_eq(jsonx_depth(s, strlen(s), 64), -1);
	free(s);
	s = nested(64, '[', ']');
	ck_assert_int_eq(jsonx_depth(s, strlen(s), 64), 64);
	ck_assert_int_eq(jsonx_depth(s, strlen(s), 63), -1);
	free(s);
	s = nested(65, '{', '}');
	ck_assert_int_eq(jsonx_depth(s, strlen(s), 64), -1);
	free(s);
}
END_TEST

Suite *
jsonx_suite(void)
{
	Suite *s = suite_create("jsonx");
	TCase *tc = tcase_create("depth");

	tcase_add_loop_test(
	    tc, test_depth, 0, sizeof(depth_cases) / sizeof(depth_cases[0]));
	tcase_add_test(tc, test_len_respected);
	tcase_add_test(tc, test_deep);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return uc_run(jsonx_suite());
}
