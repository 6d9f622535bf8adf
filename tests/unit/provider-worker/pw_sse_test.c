/*
 * The SSE tokenizer and the stream usage side-parser: whole feeds, byte by
 * byte, random splits, every line ending, comments, multi-line data,
 * overlong lines, event boundaries, error events, unfinished events.
 */
#include <stdlib.h>
#include <string.h>

#include "pw_sse.h"
#include "pw_unit.h"
#include "pw_usage.h"

/* ---- the tokenizer ---- */

#define MAX_EVENTS 32

struct rec {
	size_t n;
	char event[MAX_EVENTS][64];
	char data[MAX_EVENTS][256];
	size_t data_len[MAX_EVENTS];
};

static void
rec_event(void *arg, const char *event, const char *data, size_t len)
{
	struct rec *r = arg;

	ck_assert_uint_lt(r->n, MAX_EVENTS);
	ck_assert_uint_lt(len, sizeof(r->data[0]));
	snprintf(r->event[r->n], sizeof(r->event[0]), "%s", event);
	memcpy(r->data[r->n], data, len);
	r->data[r->n][len] = '\0';
	/* The callback's data is NUL-terminated at len. */
	ck_assert_int_eq(data[len], '\0');
	r->data_len[r->n] = len;
	r->n++;
}

static void
feed_split(struct pw_sse *s, const char *in, size_t len, uint64_t seed)
{
	uint64_t st = seed;
	size_t off = 0;

	while (off < len) {
		size_t k = seed == 0 ? 1 : 1 + pw_unit_rand(&st) % 17;

		if (k > len - off)
			k = len - off;
		pw_sse_feed(s, in + off, k);
		off += k;
	}
}

static const char grammar[] = ": comment\n"
			      "event: a\n"
			      "data: one\n"
			      "\n"
			      "data:two\n"
			      "data:  three\n"
			      "id: 7\n"
			      "retry: 100\n"
			      "\n"
			      "event: empty-data\n"
			      "data\n"
			      "\n"
			      "event: no-data\n"
			      "\n"
			      "event: b\n"
			      "data: x:y: z\n"
			      "unknown: field\n"
			      "\n";

static void
check_grammar(const struct rec *r)
{
	ck_assert_uint_eq(r->n, 4);
	ck_assert_str_eq(r->event[0], "a");
	ck_assert_str_eq(r->data[0], "one");
	/* No "event:" line: the name is "". One leading space is eaten,
	 * not two; lines join with '\n'. */
	ck_assert_str_eq(r->event[1], "");
	ck_assert_str_eq(r->data[1], "two\n three");
	/* "data" with no colon is a data line with an empty value. */
	ck_assert_str_eq(r->event[2], "empty-data");
	ck_assert_uint_eq(r->data_len[2], 0);
	/* An event without data is not dispatched; "no-data" is gone and
	 * does not leak into the next one. */
	ck_assert_str_eq(r->event[3], "b");
	ck_assert_str_eq(r->data[3], "x:y: z");
}

static const char *const eols[] = {"\n", "\r\n", "\r"};

/* Loop: 3 line endings x (whole, byte by byte, 40 random splits). */
START_TEST(test_grammar_splits)
{
	const char *eol = eols[_i % 3];
	int mode = _i / 3;
	char *in = pw_unit_eol(grammar, eol);
	struct pw_sse s;
	struct rec r;

	memset(&r, 0, sizeof(r));
	pw_sse_init(&s, 1024, rec_event, &r);
	if (mode == 0)
		pw_sse_feed(&s, in, strlen(in));
	else
		feed_split(&s, in, strlen(in), (uint64_t)(mode - 1));
	check_grammar(&r);
	ck_assert(pw_sse_at_boundary(&s));
	ck_assert_uint_eq(s.events, 4);
	pw_sse_free(&s);
	free(in);
}
END_TEST

START_TEST(test_crlf_split_between_feeds)
{
	struct pw_sse s;
	struct rec r;

	memset(&r, 0, sizeof(r));
	pw_sse_init(&s, 1024, rec_event, &r);
	/* "\r" ends one feed, "\n" starts the next: one line end, not a
	 * blank line (which would dispatch early). */
	pw_sse_feed(&s, "data: a\r", 8);
	pw_sse_feed(&s, "\ndata: b\r", 9);
	ck_assert_uint_eq(r.n, 0);
	pw_sse_feed(&s, "\n\r\n", 3);
	ck_assert_uint_eq(r.n, 1);
	ck_assert_str_eq(r.data[0], "a\nb");
	pw_sse_free(&s);
}
END_TEST

START_TEST(test_boundary)
{
	struct pw_sse s;
	struct rec r;

	memset(&r, 0, sizeof(r));
	pw_sse_init(&s, 1024, rec_event, &r);
	ck_assert(pw_sse_at_boundary(&s));
	pw_sse_feed(&s, "event: x", 8);
	ck_assert(!pw_sse_at_boundary(&s)); /* inside a line */
	pw_sse_feed(&s, "\n", 1);
	ck_assert(!pw_sse_at_boundary(&s)); /* fields wait for a blank */
	pw_sse_feed(&s, "data: 1\n\n", 9);
	ck_assert(pw_sse_at_boundary(&s));
	pw_sse_feed(&s, ": only a comment\n", 17);
	ck_assert(pw_sse_at_boundary(&s));
	ck_assert_uint_eq(r.n, 1);
	pw_sse_free(&s);
}
END_TEST

START_TEST(test_overlong)
{
	struct pw_sse s;
	struct rec r;
	char big[300];

	memset(&r, 0, sizeof(r));
	memset(big, 'x', sizeof(big));
	pw_sse_init(&s, 100, rec_event, &r);
	/* A data line longer than the bound, fed in pieces: that event is
	 * dropped, the next one still comes through. */
	pw_sse_feed(&s, "event: big\ndata: ", 17);
	pw_sse_feed(&s, big, 150);
	pw_sse_feed(&s, big, 150);
	pw_sse_feed(&s, "\n\nevent: small\ndata: ok\n\n", 25);
	ck_assert_uint_eq(r.n, 1);
	ck_assert_str_eq(r.event[0], "small");
	ck_assert_str_eq(r.data[0], "ok");
	ck_assert_uint_eq(s.skipped, 1);
	/* Data lines that fit alone but not together. */
	pw_sse_feed(&s, "data: ", 6);
	pw_sse_feed(&s, big, 60);
	pw_sse_feed(&s, "\ndata: ", 7);
	pw_sse_feed(&s, big, 60);
	pw_sse_feed(&s, "\n\n", 2);
	ck_assert_uint_eq(r.n, 1);
	ck_assert_uint_eq(s.skipped, 2);
	pw_sse_free(&s);
}
END_TEST

START_TEST(test_unfinished_event_dropped)
{
	struct pw_sse s;
	struct rec r;

	memset(&r, 0, sizeof(r));
	pw_sse_init(&s, 1024, rec_event, &r);
	pw_sse_feed(&s, "data: done\n\ndata: cut\n", 22);
	ck_assert_uint_eq(r.n, 1);
	ck_assert(!pw_sse_at_boundary(&s));
	pw_sse_free(&s);
}
END_TEST

/* ---- usage from streams ---- */

static void
check_claude(const struct pw_stream_usage *u)
{
	ck_assert(u->usage.seen);
	ck_assert_int_eq(u->usage.tokens.input, 25);
	ck_assert_int_eq(u->usage.tokens.cache_read, 7);
	ck_assert_int_eq(u->usage.tokens.cache_write_5m, 3);
	ck_assert_int_eq(u->usage.tokens.cache_write_1h, 2);
	/* Cumulative: the last message_delta wins (not 1 + 4 + 6). */
	ck_assert_int_eq(u->usage.tokens.output, 6);
	ck_assert(!u->error_seen);
	ck_assert(u->done_seen);
}

static void
check_openai(const struct pw_stream_usage *u)
{
	ck_assert(u->usage.seen);
	ck_assert_int_eq(u->usage.tokens.input, 5);
	ck_assert_int_eq(u->usage.tokens.cache_read, 4);
	ck_assert_int_eq(u->usage.tokens.output, 2);
	ck_assert_int_eq(u->usage.tokens.cache_write_5m, 0);
	ck_assert(!u->error_seen);
	ck_assert(u->done_seen);
}

static void
run_stream(enum pw_prov p, const char *eol, uint64_t mode)
{
	const char *src =
	    p == PW_PROV_CLAUDE ? pw_claude_stream : pw_openai_stream;
	char *in = pw_unit_eol(src, eol);
	size_t len = strlen(in), off = 0;
	struct pw_stream_usage u;
	uint64_t st = mode;

	pw_stream_usage_init(&u, p);
	if (mode == 0) {
		pw_stream_usage_feed(&u, in, len);
	} else if (mode == 1) {
		for (size_t i = 0; i < len; i++)
			pw_stream_usage_feed(&u, in + i, 1);
	} else {
		while (off < len) {
			size_t k = 1 + pw_unit_rand(&st) % 97;

			if (k > len - off)
				k = len - off;
			pw_stream_usage_feed(&u, in + off, k);
			off += k;
		}
	}
	if (p == PW_PROV_CLAUDE)
		check_claude(&u);
	else
		check_openai(&u);
	ck_assert(pw_sse_at_boundary(&u.sse));
	pw_stream_usage_free(&u);
	free(in);
}

/* Loop: provider x 3 line endings x (whole, bytes, 60 random splits). */
#define SPLIT_MODES 62

START_TEST(test_stream_usage)
{
	enum pw_prov p = (enum pw_prov)(_i % 2);
	const char *eol = eols[(_i / 2) % 3];
	uint64_t mode = (uint64_t)(_i / 6);

	run_stream(p, eol, mode);
}
END_TEST

START_TEST(test_claude_error_event)
{
	static const char in[] =
	    "event: message_start\n"
	    "data: {\"type\":\"message_start\",\"message\":{\"usage\":"
	    "{\"input_tokens\":10,\"output_tokens\":1}}}\n\n"
	    "event: error\n"
	    "data: "
	    "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
	    "\"message\":\"Overloaded\"}}\n\n";
	struct pw_stream_usage u;

	pw_stream_usage_init(&u, PW_PROV_CLAUDE);
	for (size_t i = 0; i < sizeof(in) - 1; i++)
		pw_stream_usage_feed(&u, in + i, 1);
	ck_assert(u.error_seen);
	ck_assert_str_eq(u.error_message, "Overloaded");
	/* Tokens seen before the error still count. */
	ck_assert_int_eq(u.usage.tokens.input, 10);
	ck_assert_int_eq(u.usage.tokens.output, 1);
	ck_assert(!u.done_seen);
	pw_stream_usage_free(&u);
}
END_TEST

START_TEST(test_claude_unnamed_events)
{
	/* No "event:" lines: the JSON "type" decides. */
	static const char in[] =
	    "data: {\"type\":\"message_start\",\"message\":{\"usage\":"
	    "{\"input_tokens\":3,\"cache_creation_input_tokens\":8,"
	    "\"output_tokens\":1}}}\n\n"
	    "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9,"
	    "\"input_tokens\":4}}\n\n";
	struct pw_stream_usage u;

	pw_stream_usage_init(&u, PW_PROV_CLAUDE);
	pw_stream_usage_feed(&u, in, sizeof(in) - 1);
	/* message_delta may repeat input counts; they replace. Cache writes
	 * without a split count as 5m. */
	ck_assert_int_eq(u.usage.tokens.input, 4);
	ck_assert_int_eq(u.usage.tokens.output, 9);
	ck_assert_int_eq(u.usage.tokens.cache_write_5m, 8);
	ck_assert_int_eq(u.usage.tokens.cache_write_1h, 0);
	pw_stream_usage_free(&u);
}
END_TEST

START_TEST(test_openai_error_chunk)
{
	static const char in[] =
	    "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],"
	    "\"error\":null}\n\n"
	    "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\","
	    "\"param\":null,\"code\":null}}\n\n";
	struct pw_stream_usage u;

	pw_stream_usage_init(&u, PW_PROV_OPENAI);
	pw_stream_usage_feed(&u, in, 60);
	/* "error": null is not an error. */
	ck_assert(!u.error_seen);
	pw_stream_usage_feed(&u, in + 60, sizeof(in) - 1 - 60);
	ck_assert(u.error_seen);
	ck_assert_str_eq(u.error_message, "boom");
	ck_assert(!u.usage.seen);
	pw_stream_usage_free(&u);
}
END_TEST

START_TEST(test_openai_cut_before_usage_blank_line)
{
	/* The usage chunk arrives but the stream is cut before its blank
	 * line: an unfinished event, not counted. */
	static const char in[] =
	    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,"
	    "\"completion_tokens\":2}}\n";
	struct pw_stream_usage u;

	pw_stream_usage_init(&u, PW_PROV_OPENAI);
	pw_stream_usage_feed(&u, in, sizeof(in) - 1);
	ck_assert(!u.usage.seen);
	pw_stream_usage_feed(&u, "\n", 1);
	ck_assert(u.usage.seen);
	ck_assert_int_eq(u.usage.tokens.input, 9);
	pw_stream_usage_free(&u);
}
END_TEST

START_TEST(test_garbage_never_crashes)
{
	uint64_t st = 12345;
	char junk[4096];

	for (int round = 0; round < 50; round++) {
		struct pw_stream_usage u;

		for (size_t i = 0; i < sizeof(junk); i++) {
			/* Mostly SSE-ish bytes, some binary. */
			static const char alpha[] = "data: {}\"event:\r\n[] ";
			uint64_t r = pw_unit_rand(&st);

			junk[i] = r % 8 == 0
				      ? (char)(r >> 8)
				      : alpha[(r >> 8) % (sizeof(alpha) - 1)];
		}
		pw_stream_usage_init(&u, (enum pw_prov)(round % 2));
		feed_split(&u.sse, junk, sizeof(junk), (uint64_t)round + 1);
		pw_stream_usage_free(&u);
	}
}
END_TEST

Suite *
pw_sse_suite(void)
{
	Suite *s = suite_create("pw_sse");
	TCase *tc;

	tc = tcase_create("tokenizer");
	tcase_add_loop_test(tc, test_grammar_splits, 0, 3 * 42);
	tcase_add_test(tc, test_crlf_split_between_feeds);
	tcase_add_test(tc, test_boundary);
	tcase_add_test(tc, test_overlong);
	tcase_add_test(tc, test_unfinished_event_dropped);
	suite_add_tcase(s, tc);

	tc = tcase_create("usage");
	tcase_add_loop_test(tc, test_stream_usage, 0, 6 * SPLIT_MODES);
	tcase_add_test(tc, test_claude_error_event);
	tcase_add_test(tc, test_claude_unnamed_events);
	tcase_add_test(tc, test_openai_error_chunk);
	tcase_add_test(tc, test_openai_cut_before_usage_blank_line);
	tcase_add_test(tc, test_garbage_never_crashes);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return pw_unit_run(pw_sse_suite());
}
