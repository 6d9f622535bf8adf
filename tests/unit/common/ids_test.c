/*
 * ids: id_new's shape (prefix, length, alphabet), uniqueness and order;
 * id_valid's accepted set; id_random.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ids.h"
#include "unit_common.h"

#define BODY_LEN 26
/* Crockford base32: no I, L, O, U. */
static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static void
assert_shape(const char *id, const char *prefix)
{
	size_t plen = strlen(prefix);

	ck_assert_uint_eq(strlen(id), plen + BODY_LEN);
	ck_assert_msg(
	    strncmp(id, prefix, plen) == 0, "%s lacks %s", id, prefix);
	for (size_t i = plen; id[i] != '\0'; i++)
		ck_assert_msg(strchr(alphabet, id[i]) != NULL,
		    "%s: '%c' not in the alphabet", id, id[i]);
	ck_assert_msg(id_valid(id), "%s not valid", id);
}

static const char *const prefixes[] = {"req_", "evt_", "w1-", "", "x"};

START_TEST(test_new_shape)
{
	char id[ID_MAX + 1];

	id_new(prefixes[_i], id, sizeof(id));
	assert_shape(id, prefixes[_i]);
}
END_TEST

START_TEST(test_new_null_prefix)
{
	char id[ID_MAX + 1];

	id_new(NULL, id, sizeof(id));
	assert_shape(id, "");
}
END_TEST

/* A short buffer gets a truncated, terminated id, never an overflow. */
START_TEST(test_new_short_buffer)
{
	char id[8];

	memset(id, 'Q', sizeof(id));
	id_new("req_", id, 5);
	ck_assert_str_eq(id, "req_");
	ck_assert_int_eq(id[5], 'Q');
}
END_TEST

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

#define NIDS 10000

START_TEST(test_unique_and_ordered)
{
	char(*ids)[ID_MAX + 1] = calloc(NIDS, sizeof(*ids));
	char **sorted = calloc(NIDS, sizeof(*sorted));

	ck_assert_ptr_nonnull(ids);
	ck_assert_ptr_nonnull(sorted);
	for (size_t i = 0; i < NIDS; i++) {
		id_new("req_", ids[i], sizeof(ids[i]));
		assert_shape(ids[i], "req_");
		sorted[i] = ids[i];
		/* The time part (10 characters) never goes backwards. */
		if (i > 0)
			ck_assert_msg(
			    strncmp(ids[i - 1] + 4, ids[i] + 4, 10) <= 0,
			    "%s after %s", ids[i], ids[i - 1]);
	}
	qsort(sorted, NIDS, sizeof(*sorted), cmp_str);
	for (size_t i = 1; i < NIDS; i++)
		ck_assert_msg(strcmp(sorted[i - 1], sorted[i]) != 0,
		    "duplicate id %s", sorted[i]);
	free(sorted);
	free(ids);
}
END_TEST

/* The random part uses all of the alphabet (no stuck bits). */
START_TEST(test_random_part_spread)
{
	char id[ID_MAX + 1];
	bool seen[BODY_LEN][32];

	memset(seen, 0, sizeof(seen));
	for (int n = 0; n < 2000; n++) {
		id_new("", id, sizeof(id));
		for (size_t i = 10; i < BODY_LEN; i++)
			seen[i][strchr(alphabet, id[i]) - alphabet] = true;
	}
	for (size_t i = 10; i < BODY_LEN; i++)
		for (size_t c = 0; c < 32; c++)
			ck_assert_msg(seen[i][c],
			    "position %zu never shows '%c' in 2000 ids", i,
			    alphabet[c]);
}
END_TEST

static const struct {
	const char *s;
	bool ok;
} valid_cases[] = {
    {"a", true},
    {"req_01JD8X3Q2M4N5P6R7S8T9V0W1X", true},
    {"abc.DEF_123:x-y", true},
    {"0123456789012345678901234567890123456789012345678901234567890123", true},
    {"01234567890123456789012345678901234567890123456789012345678901234",
	false},
    {"", false},
    {NULL, false},
    {"has space", false},
    {"slash/id", false},
    {"quote\"id", false},
    {"back\\slash", false},
    {"new\nline", false},
    {"tab\t", false},
    {"semi;colon", false},
    {"caf\xc3\xa9", false},
    {"percent%20", false},
    {"plus+", false},
};

START_TEST(test_valid)
{
	ck_assert_msg(id_valid(valid_cases[_i].s) == valid_cases[_i].ok,
	    "id_valid(\"%s\") != %d",
	    valid_cases[_i].s ? valid_cases[_i].s : "(null)",
	    valid_cases[_i].ok);
}
END_TEST

START_TEST(test_random)
{
	unsigned char a[32], b[32];

	memset(a, 0, sizeof(a));
	memset(b, 0, sizeof(b));
	ck_assert_int_eq(id_random(a, sizeof(a)), 0);
	ck_assert_int_eq(id_random(b, sizeof(b)), 0);
	ck_assert(memcmp(a, b, sizeof(a)) != 0);
	ck_assert_int_eq(id_random(a, 0), 0);
}
END_TEST

Suite *
ids_suite(void)
{
	Suite *s = suite_create("ids");
	TCase *tc;

	tc = tcase_create("new");
	tcase_add_loop_test(
	    tc, test_new_shape, 0, sizeof(prefixes) / sizeof(prefixes[0]));
	tcase_add_test(tc, test_new_null_prefix);
	tcase_add_test(tc, test_new_short_buffer);
	tcase_add_test(tc, test_unique_and_ordered);
	tcase_add_test(tc, test_random_part_spread);
	suite_add_tcase(s, tc);

	tc = tcase_create("valid");
	tcase_add_loop_test(
	    tc, test_valid, 0, sizeof(valid_cases) / sizeof(valid_cases[0]));
	tcase_add_test(tc, test_random);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return uc_run(ids_suite());
}
