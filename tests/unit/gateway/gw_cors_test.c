/*
 * gw_cors: the verdict for each Origin against the configured list.
 */
#include <errno.h>
#include <string.h>

#include "gw_cors.h"
#include "gw_unit.h"

static const struct {
	const char *list;
	const char *origin;
	enum gw_cors_verdict want;
} cases[] = {
    {"https://a.example", NULL, GW_CORS_NONE},
    {"https://a.example", "", GW_CORS_NONE},
    {"https://a.example", "https://a.example", GW_CORS_ALLOW},
    {"https://a.example", "HTTPS://A.EXAMPLE", GW_CORS_ALLOW},
    {"https://a.example", "https://b.example", GW_CORS_DENY},
    {"https://a.example", "https://a.example.evil.com", GW_CORS_DENY},
    {"https://a.example", "http://a.example", GW_CORS_DENY},
    {" https://a.example/ , http://localhost:3000", "http://localhost:3000",
	GW_CORS_ALLOW},
    {" https://a.example/ , http://localhost:3000", "https://a.example",
	GW_CORS_ALLOW},
    {"", "https://a.example", GW_CORS_DENY},
    {NULL, "https://a.example", GW_CORS_DENY},
    {",,", "https://a.example", GW_CORS_DENY},
    {"*", "https://anything.example", GW_CORS_ALLOW_ANY},
    {"*,https://a.example", "https://a.example", GW_CORS_ALLOW},
    {"*,https://a.example", "https://b.example", GW_CORS_ALLOW_ANY},
    {"https://a.example", "null", GW_CORS_DENY},
    {"*", "null", GW_CORS_DENY},
    {"https://a.example", "https://a.example\r\nSet-Cookie: x", GW_CORS_DENY},
};

START_TEST(test_verdict)
{
	struct gw_cors *c = NULL;

	ck_assert_int_eq(gw_cors_new(cases[_i].list, &c), 0);
	ck_assert_msg(gw_cors_check(c, cases[_i].origin) == cases[_i].want,
	    "case %d: list \"%s\" origin \"%s\"", _i,
	    cases[_i].list ? cases[_i].list : "(null)",
	    cases[_i].origin ? cases[_i].origin : "(null)");
	gw_cors_free(c);
}
END_TEST

START_TEST(test_count_and_limits)
{
	struct gw_cors *c = NULL;
	char big[600];

	ck_assert_int_eq(gw_cors_new("https://a, https://b,*", &c), 0);
	ck_assert_uint_eq(gw_cors_count(c), 3);
	gw_cors_free(c);
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ck_assert_int_eq(gw_cors_new(big, &c), -EINVAL);
	gw_cors_free(NULL);
}
END_TEST

Suite *
gw_cors_suite(void)
{
	Suite *s = suite_create("gw_cors");
	TCase *tc = tcase_create("verdict");

	tcase_add_loop_test(
	    tc, test_verdict, 0, (int)(sizeof(cases) / sizeof(cases[0])));
	tcase_add_test(tc, test_count_and_limits);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return gw_unit_run(gw_cors_suite());
}
