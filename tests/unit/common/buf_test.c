/*
 * buf: growth, the maximum (-EMSGSIZE and the buffer unchanged), printf,
 * JSON string escaping, consume, steal.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "buf.h"
#include "unit_common.h"

static void
assert_terminated(const struct buf *b)
{
	ck_assert_ptr_nonnull(b->data);
	ck_assert_uint_lt(b->len, b->cap);
	ck_assert_int_eq(b->data[b->len], '\0');
	ck_assert_uint_le(b->len, b->max);
}

START_TEST(test_init_empty)
{
	struct buf b;

	buf_init(&b, 100);
	ck_assert_ptr_null(b.data);
	ck_assert_uint_eq(b.len, 0);
	ck_assert_uint_eq(b.max, 100);
	/* An empty append still gives a terminated string. */
	ck_assert_int_eq(buf_append(&b, "", 0), 0);
	assert_terminated(&b);
	ck_assert_str_eq(b.data, "");
	buf_free(&b);
	ck_assert_ptr_null(b.data);
	/* Freeing twice, or an untouched buffer, is harmless. */
	buf_free(&b);
	buf_init(&b, 10);
	buf_free(&b);
}
END_TEST

START_TEST(test_growth)
{
	struct buf b;
	size_t last_cap = 0, grows = 0;

	buf_init(&b, 1u << 20);
	for (size_t i = 0; i < 100000; i++) {
		char c = (char)('a' + i % 26);

		ck_assert_int_eq(buf_append(&b, &c, 1), 0);
		if (b.cap != last_cap) {
			grows++;
			last_cap = b.cap;
		}
	}
	ck_assert_uint_eq(b.len, 100000);
	assert_terminated(&b);
	for (size_t i = 0; i < 100000; i++)
		ck_assert_int_eq(b.data[i], 'a' + (int)(i % 26));
	/* Geometric growth, not one realloc per byte. */
	ck_assert_uint_le(grows, 20);
	buf_free(&b);
}
END_TEST

START_TEST(test_reserve)
{
	struct buf b;

	buf_init(&b, 1000);
	ck_assert_int_eq(buf_reserve(&b, 600), 0);
	ck_assert_uint_ge(b.cap, 601);
	ck_assert_uint_le(b.cap, 1001);
	ck_assert_uint_eq(b.len, 0);
	ck_assert_int_eq(buf_reserve(&b, 1000), 0);
	ck_assert_int_eq(buf_reserve(&b, 1001), -EMSGSIZE);
	ck_assert_int_eq(buf_reserve(&b, SIZE_MAX), -EMSGSIZE);
	/* Capacity never exceeds max + 1 (the terminator). */
	ck_assert_uint_le(b.cap, 1001);
	buf_free(&b);
}
END_TEST

/* ---- the maximum ---- */

enum op { OP_APPEND, OP_STR, OP_PRINTF, OP_JSON, OP_RESERVE };

static const struct max_case {
	size_t max;
	const char *prefill;
	enum op op;
	const char *arg;
	int rv;
	const char *after; /* contents when rv == 0 */
} max_cases[] = {
    {16, "0123456789", OP_APPEND, "abcdef", 0, "0123456789abcdef"},
    {16, "0123456789", OP_APPEND, "abcdefg", -EMSGSIZE, NULL},
    {16, "0123456789abcdef", OP_APPEND, "x", -EMSGSIZE, NULL},
    {16, "0123456789abcdef", OP_APPEND, "", 0, "0123456789abcdef"},
    {0, "", OP_APPEND, "x", -EMSGSIZE, NULL},
    {0, "", OP_APPEND, "", 0, ""},
    {16, "0123456789", OP_STR, "abcdefg", -EMSGSIZE, NULL},
    {16, "0123456789", OP_PRINTF, "%s", 0, "0123456789%s"},
    {16, "0123456789", OP_PRINTF, "%d-%d", -EMSGSIZE, NULL},
    {16, "01234567", OP_JSON, "a\"b", 0, "01234567\"a\\\"b\""},
    {16, "0123456789", OP_JSON, "a\"b", 0, "0123456789\"a\\\"b\""},
    {16, "0123456789", OP_JSON, "a\"bc", -EMSGSIZE, NULL},
    {16, "0123456789", OP_JSON, "\x01", -EMSGSIZE, NULL},
    {8, "", OP_JSON, "abcdefg", -EMSGSIZE, NULL},
    {300, "", OP_APPEND, NULL, -EMSGSIZE, NULL}, /* 301 bytes */
    {16, "0123456789", OP_RESERVE, "abcdefg", -EMSGSIZE, NULL},
};

START_TEST(test_max)
{
	const struct max_case *mc = &max_cases[_i];
	char big[302];
	struct buf b;
	char *before;
	size_t before_len;
	int rv = 0;

	buf_init(&b, mc->max);
	ck_assert_int_eq(buf_append_str(&b, mc->prefill), 0);
	before = strdup(b.data);
	before_len = b.len;
	switch (mc->op) {
	case OP_APPEND:
		if (mc->arg == NULL) {
			memset(big, 'z', 301);
			rv = buf_append(&b, big, 301);
		} else {
			rv = buf_append(&b, mc->arg, strlen(mc->arg));
		}
		break;
	case OP_STR:
		rv = buf_append_str(&b, mc->arg);
		break;
	case OP_PRINTF:
		if (strcmp(mc->arg, "%s") == 0)
			rv = buf_printf(&b, "%s", "%s");
		else
			rv = buf_printf(&b, "%d-%d", 1234, 5678);
		break;
	case OP_JSON:
		rv = buf_append_json_str(&b, mc->arg, strlen(mc->arg));
		break;
	case OP_RESERVE:
		rv = buf_reserve(&b, strlen(mc->arg));
		break;
	}
	ck_assert_int_eq(rv, mc->rv);
	if (rv == 0 && mc->op != OP_RESERVE) {
		ck_assert_str_eq(b.data, mc->after);
		ck_assert_uint_eq(b.len, strlen(mc->after));
	} else {
		/* Unchanged. */
		ck_assert_uint_eq(b.len, before_len);
		ck_assert_str_eq(b.data, before);
	}
	assert_terminated(&b);
	free(before);
	buf_free(&b);
}
END_TEST

/* SIZE_MAX means no bound: growth must not wrap max + 1 to 0. */
START_TEST(test_unbounded)
{
	char chunk[500];
	struct buf b;

	memset(chunk, 'u', sizeof(chunk));
	buf_init(&b, SIZE_MAX);
	for (int i = 0; i < 20; i++)
		ck_assert_int_eq(buf_append(&b, chunk, sizeof(chunk)), 0);
	ck_assert_uint_eq(b.len, 20 * sizeof(chunk));
	ck_assert_uint_gt(b.cap, b.len);
	for (size_t i = 0; i < b.len; i++)
		ck_assert_int_eq(b.data[i], 'u');
	assert_terminated(&b);
	buf_free(&b);
}
END_TEST

/* ---- printf ---- */

START_TEST(test_printf)
{
	struct buf b;
	char want[600];

	buf_init(&b, 4096);
	ck_assert_int_eq(buf_printf(&b, "%d-%s", 42, "x"), 0);
	ck_assert_int_eq(buf_printf(&b, "%c%05.1f", '|', 2.25), 0);
	ck_assert_int_eq(buf_printf(&b, "%s", ""), 0);
	ck_assert_str_eq(b.data, "42-x|002.2");
	ck_assert_uint_eq(b.len, strlen("42-x|002.2"));
	/* Output larger than the first allocation. */
	ck_assert_int_eq(buf_printf(&b, "%0500d", 7), 0);
	ck_assert_uint_eq(b.len, 10 + 500);
	snprintf(want, sizeof(want), "42-x|002.2%0500d", 7);
	ck_assert_str_eq(b.data, want);
	assert_terminated(&b);
	buf_free(&b);
}
END_TEST

/* ---- JSON strings ---- */

static const struct {
	const char *in;
	size_t n;
	const char *out;
} json_cases[] = {
    {"", 0, "\"\""},
    {"plain", 5, "\"plain\""},
    {"a\"b", 3, "\"a\\\"b\""},
    {"back\\slash", 10, "\"back\\\\slash\""},
    {"\n\r\t", 3, "\"\\n\\r\\t\""},
    {"\x01\x1f", 2, "\"\\u0001\\u001f\""},
    {"\b\f", 2, "\"\\u0008\\u000c\""},
    {"a\0b", 3, "\"a\\u0000b\""},
    {"/", 1, "\"/\""},
    {"\xc3\xa9\xe6\x97\xa5", 5, "\"\xc3\xa9\xe6\x97\xa5\""},
    {"stop here", 4, "\"stop\""},
};

START_TEST(test_json_str)
{
	struct buf b;
	json_t *v;
	json_error_t jerr;

	buf_init(&b, 1024);
	ck_assert_int_eq(
	    buf_append_json_str(&b, json_cases[_i].in, json_cases[_i].n), 0);
	ck_assert_str_eq(b.data, json_cases[_i].out);
	ck_assert_uint_eq(b.len, strlen(json_cases[_i].out));
	/* And it decodes back to the input. */
	v = json_loadb(b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	ck_assert_msg(v != NULL, "%s: %s", b.data, jerr.text);
	ck_assert_uint_eq(json_string_length(v), json_cases[_i].n);
	ck_assert_mem_eq(
	    json_string_value(v), json_cases[_i].in, json_cases[_i].n);
	json_decref(v);
	buf_free(&b);
}
END_TEST

/* Every byte value below 0x80 round-trips. */
START_TEST(test_json_str_all_ascii)
{
	char in[128];
	struct buf b;
	json_t *v;

	for (int i = 0; i < 128; i++)
		in[i] = (char)i;
	buf_init(&b, 4096);
	ck_assert_int_eq(buf_append_json_str(&b, in, sizeof(in)), 0);
	v = json_loadb(b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	ck_assert_ptr_nonnull(v);
	ck_assert_uint_eq(json_string_length(v), sizeof(in));
	ck_assert_mem_eq(json_string_value(v), in, sizeof(in));
	json_decref(v);
	buf_free(&b);
}
END_TEST

/* ---- consume, reset, steal ---- */

START_TEST(test_consume)
{
	struct buf b;

	buf_init(&b, 64);
	ck_assert_int_eq(buf_append_str(&b, "hello world"), 0);
	buf_consume(&b, 0);
	ck_assert_str_eq(b.data, "hello world");
	buf_consume(&b, 6);
	ck_assert_str_eq(b.data, "world");
	ck_assert_uint_eq(b.len, 5);
	assert_terminated(&b);
	/* Room freed by consume can be used again up to max. */
	ck_assert_int_eq(buf_append(&b,
			     "0123456789012345678901234567890123456"
			     "789012345678901234567890",
			     59),
	    0);
	ck_assert_uint_eq(b.len, 64);
	buf_consume(&b, 1000);
	ck_assert_uint_eq(b.len, 0);
	ck_assert_str_eq(b.data, "");
	buf_free(&b);
	/* Consuming an empty, unallocated buffer. */
	buf_init(&b, 8);
	buf_consume(&b, 3);
	ck_assert_uint_eq(b.len, 0);
	buf_free(&b);
}
END_TEST

START_TEST(test_reset)
{
	struct buf b;

	buf_init(&b, 64);
	ck_assert_int_eq(buf_append_str(&b, "abc"), 0);
	buf_reset(&b);
	ck_assert_uint_eq(b.len, 0);
	ck_assert_str_eq(b.data, "");
	ck_assert_int_eq(buf_append_str(&b, "de"), 0);
	ck_assert_str_eq(b.data, "de");
	buf_free(&b);
}
END_TEST

START_TEST(test_steal)
{
	struct buf b;
	size_t len = 0;
	char *p;

	buf_init(&b, 64);
	ck_assert_int_eq(buf_append_str(&b, "stolen"), 0);
	p = buf_steal(&b, &len);
	ck_assert_ptr_nonnull(p);
	ck_assert_str_eq(p, "stolen");
	ck_assert_uint_eq(len, 6);
	ck_assert_ptr_null(b.data);
	ck_assert_uint_eq(b.len, 0);
	free(p);
	/* Usable again, same maximum. */
	ck_assert_int_eq(buf_append_str(&b, "again"), 0);
	ck_assert_str_eq(b.data, "again");
	ck_assert_uint_eq(b.max, 64);
	p = buf_steal(&b, NULL);
	ck_assert_str_eq(p, "again");
	free(p);
	/* An empty buffer gives an empty, freeable string. */
	p = buf_steal(&b, &len);
	ck_assert_ptr_nonnull(p);
	ck_assert_str_eq(p, "");
	ck_assert_uint_eq(len, 0);
	free(p);
	buf_free(&b);
}
END_TEST

Suite *
buf_suite(void)
{
	Suite *s = suite_create("buf");
	TCase *tc;

	tc = tcase_create("growth");
	tcase_add_test(tc, test_init_empty);
	tcase_add_test(tc, test_growth);
	tcase_add_test(tc, test_reserve);
	suite_add_tcase(s, tc);

	tc = tcase_create("max");
	tcase_add_loop_test(
	    tc, test_max, 0, sizeof(max_cases) / sizeof(max_cases[0]));
	tcase_add_test(tc, test_unbounded);
	suite_add_tcase(s, tc);

	tc = tcase_create("format");
	tcase_add_test(tc, test_printf);
	tcase_add_loop_test(
	    tc, test_json_str, 0, sizeof(json_cases) / sizeof(json_cases[0]));
	tcase_add_test(tc, test_json_str_all_ascii);
	suite_add_tcase(s, tc);

	tc = tcase_create("consume");
	tcase_add_test(tc, test_consume);
	tcase_add_test(tc, test_reset);
	tcase_add_test(tc, test_steal);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return uc_run(buf_suite());
}
