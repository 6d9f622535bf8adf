/*
 * log: every line is one valid JSON object with the documented keys,
 * strings are escaped, levels filter, registered secrets never appear and
 * oversized input is truncated without breaking the JSON.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "log.h"
#include "unit_common.h"

/* log.c's line limit; lines must stay within it. */
#define LINE_MAX_BYTES 8192
#define LINES_MAX      1024

static int cap_fd = -1;

static void
cap_setup(void)
{
	char *path = uc_temp_file("");

	cap_fd = open(path, O_RDWR | O_APPEND);
	ck_assert_int_ge(cap_fd, 0);
	unlink(path);
	free(path);
	log_init("logtest", LOG_LVL_DEBUG);
	log_set_fd(cap_fd);
}

static void
cap_teardown(void)
{
	log_set_fd(-1);
	log_clear_secrets();
	close(cap_fd);
	cap_fd = -1;
}

/* Everything logged so far.  Caller frees. */
static char *
cap_read(size_t *ret_len)
{
	off_t end = lseek(cap_fd, 0, SEEK_END);
	size_t off = 0;
	char *out;

	ck_assert_int_ge(end, 0);
	out = malloc((size_t)end + 1);
	ck_assert_ptr_nonnull(out);
	while (off < (size_t)end) {
		ssize_t r =
		    pread(cap_fd, out + off, (size_t)end - off, (off_t)off);

		ck_assert_int_gt(r, 0);
		off += (size_t)r;
	}
	out[off] = '\0';
	*ret_len = off;
	return out;
}

struct lines {
	char *raw;
	size_t len;
	size_t n;
	json_t *obj[LINES_MAX];
	size_t linelen[LINES_MAX];
};

/* Reads the capture and parses each line, which must be a JSON object
 * ending in a newline. */
static void
lines_get(struct lines *l)
{
	size_t start = 0;

	l->raw = cap_read(&l->len);
	l->n = 0;
	ck_assert_msg(l->len == 0 || l->raw[l->len - 1] == '\n',
	    "output does not end with a newline");
	while (start < l->len) {
		char *nl = memchr(l->raw + start, '\n', l->len - start);
		size_t n = (size_t)(nl - (l->raw + start));
		json_error_t jerr;
		json_t *o;

		ck_assert_uint_lt(l->n, LINES_MAX);
		o = json_loadb(
		    l->raw + start, n, JSON_REJECT_DUPLICATES, &jerr);
		ck_assert_msg(o != NULL, "line %zu is not JSON (%s): %.300s",
		    l->n + 1, jerr.text, l->raw + start);
		ck_assert_msg(
		    json_is_object(o), "line %zu is not an object", l->n + 1);
		l->linelen[l->n] = n + 1;
		l->obj[l->n++] = o;
		start += n + 1;
	}
}

static void
lines_free(struct lines *l)
{
	for (size_t i = 0; i < l->n; i++)
		json_decref(l->obj[i]);
	free(l->raw);
}

static const char *
jstr(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	ck_assert_msg(json_is_string(v), "\"%s\" is not a string", key);
	return json_string_value(v);
}

/* Whether any string in o (keys included) contains needle. */
static bool
json_has_substr(json_t *o, const char *needle)
{
	const char *key;
	json_t *v;

	json_object_foreach(o, key, v) {
		if (strstr(key, needle) != NULL)
			return true;
		if (json_is_string(v) &&
		    strstr(json_string_value(v), needle) != NULL)
			return true;
	}
	return false;
}

/* ---- shape ---- */

static bool
is_iso8601_ms(const char *s)
{
	static const char pat[] = "dddd-dd-ddTdd:dd:dd.dddZ";

	if (strlen(s) != sizeof(pat) - 1)
		return false;
	for (size_t i = 0; pat[i] != '\0'; i++) {
		if (pat[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != pat[i])
			return false;
	}
	return true;
}

START_TEST(test_line_shape)
{
	struct lines l;
	json_t *o;

	log_info("req_01ABC", "hello", LF_S("s", "value"), LF_I("i", -42),
	    LF_I("big", 9007199254740993LL), LF_D("d", 1.5), LF_B("yes", 1),
	    LF_B("no", 0), LF_S("null", NULL));
	lines_get(&l);
	ck_assert_uint_eq(l.n, 1);
	o = l.obj[0];
	ck_assert_msg(is_iso8601_ms(jstr(o, "ts")), "ts %s", jstr(o, "ts"));
	ck_assert_str_eq(jstr(o, "level"), "info");
	ck_assert_str_eq(jstr(o, "daemon"), "logtest");
	ck_assert_str_eq(jstr(o, "request_id"), "req_01ABC");
	ck_assert_str_eq(jstr(o, "msg"), "hello");
	ck_assert_str_eq(jstr(o, "s"), "value");
	ck_assert_int_eq(json_integer_value(json_object_get(o, "i")), -42);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(o, "big")), 9007199254740993LL);
	ck_assert_double_eq(json_number_value(json_object_get(o, "d")), 1.5);
	ck_assert(json_is_true(json_object_get(o, "yes")));
	ck_assert(json_is_false(json_object_get(o, "no")));
	ck_assert(json_is_null(json_object_get(o, "null")));
	ck_assert_uint_eq(json_object_size(o), 12);
	lines_free(&l);
}
END_TEST

START_TEST(test_no_request_id)
{
	struct lines l;

	log_warn(NULL, "no id");
	log_error("", "empty id", LF_I("n", 1));
	log_emitf(LOG_LVL_INFO, NULL, "formatted %d %s", 7, "x");
	lines_get(&l);
	ck_assert_uint_eq(l.n, 3);
	for (size_t i = 0; i < l.n; i++) {
		json_t *rid = json_object_get(l.obj[i], "request_id");

		ck_assert_msg(rid == NULL || json_is_null(rid),
		    "line %zu: request_id present", i);
	}
	ck_assert_str_eq(jstr(l.obj[0], "level"), "warn");
	ck_assert_str_eq(jstr(l.obj[1], "level"), "error");
	ck_assert_str_eq(jstr(l.obj[2], "msg"), "formatted 7 x");
	lines_free(&l);
}
END_TEST

/* Lines written from several threads at once never interleave. */
#define THR_N     4
#define THR_LINES 200

static void *
thr_log(void *arg)
{
	char val[1500];

	memset(val, 'a' + (int)(long)arg, sizeof(val) - 1);
	val[sizeof(val) - 1] = '\0';
	for (int i = 0; i < THR_LINES; i++)
		log_info("req_thr", "thread line", LF_I("t", (long)arg),
		    LF_I("i", i), LF_S("v", val));
	return NULL;
}

START_TEST(test_threads_no_interleave)
{
	pthread_t t[THR_N];
	struct lines *l = calloc(1, sizeof(*l));

	ck_assert_ptr_nonnull(l);
	for (long i = 0; i < THR_N; i++)
		ck_assert_int_eq(
		    pthread_create(&t[i], NULL, thr_log, (void *)i), 0);
	for (int i = 0; i < THR_N; i++)
		pthread_join(t[i], NULL);
	lines_get(l);
	ck_assert_uint_eq(l->n, THR_N * THR_LINES);
	for (size_t i = 0; i < l->n; i++)
		ck_assert_uint_eq(strlen(jstr(l->obj[i], "v")), 1499);
	lines_free(l);
	free(l);
}
END_TEST

/* ---- escaping ---- */

static const char *const esc_cases[] = {
    "say \"hi\"",
    "back\\slash \\\" \\\\",
    "new\nline",
    "cr\rret",
    "tab\there",
    "ctl \x01\x02\x1b\x1f end",
    "del \x7f",
    "utf-8 \xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80",
    "</script><!-- {\"a\":1} -->",
    "",
};

START_TEST(test_escape)
{
	const char *s = esc_cases[_i];
	struct lines l;
	json_t *o;

	log_info(s, s, LF_S("f", s), LF_S(s[0] ? s : "k", "key"));
	lines_get(&l);
	ck_assert_uint_eq(l.n, 1);
	o = l.obj[0];
	ck_assert_str_eq(jstr(o, "msg"), s);
	ck_assert_str_eq(jstr(o, "f"), s);
	ck_assert_str_eq(jstr(o, s[0] ? s : "k"), "key");
	if (s[0] != '\0')
		ck_assert_str_eq(jstr(o, "request_id"), s);
	/* One line: no raw newline inside. */
	ck_assert_uint_eq(l.linelen[0], l.len);
	lines_free(&l);
}
END_TEST

/*
 * Bytes that are not UTF-8 (a client's header, an upstream's garbage) must
 * not make the line invalid JSON.
 */
static const char *const bad_utf8_cases[] = {
    "lone \xff byte",
    "cut \xe6\x97",
    "overlong \xc0\xaf",
    "surrogate \xed\xa0\x80",
};

START_TEST(test_escape_invalid_utf8)
{
	struct lines l;

	log_info("req_1", bad_utf8_cases[_i], LF_S("ua", bad_utf8_cases[_i]));
	lines_get(&l);
	ck_assert_uint_eq(l.n, 1);
	lines_free(&l);
}
END_TEST

/* ---- levels ---- */

START_TEST(test_level_filter)
{
	enum log_level min = (enum log_level)_i;
	struct lines l;

	log_set_level(min);
	ck_assert_int_eq(log_get_level(), min);
	for (int lv = 0; lv < LOG_LVL_MAX; lv++)
		ck_assert_int_eq(
		    log_enabled((enum log_level)lv), lv >= (int)min);
	log_debug("r", "d");
	log_info("r", "i");
	log_warn("r", "w");
	log_error("r", "e");
	log_emitf(LOG_LVL_DEBUG, "r", "fd %d", 1);
	log_emitf(LOG_LVL_ERROR, "r", "fe %d", 1);
	lines_get(&l);
	ck_assert_uint_eq(
	    l.n, (size_t)(LOG_LVL_MAX - min) + 1 + (min == LOG_LVL_DEBUG));
	for (size_t i = 0; i < l.n; i++) {
		enum log_level lv;

		ck_assert_int_eq(
		    log_level_parse(jstr(l.obj[i], "level"), &lv), 0);
		ck_assert_int_ge(lv, min);
	}
	lines_free(&l);
}
END_TEST

static const struct {
	const char *s;
	int rv;
	enum log_level lv;
} level_names[] = {
    {"debug", 0, LOG_LVL_DEBUG},
    {"INFO", 0, LOG_LVL_INFO},
    {"warn", 0, LOG_LVL_WARN},
    {"warning", 0, LOG_LVL_WARN},
    {"Error", 0, LOG_LVL_ERROR},
    {"verbose", -EINVAL, LOG_LVL_MAX},
    {"", -EINVAL, LOG_LVL_MAX},
    {"info ", -EINVAL, LOG_LVL_MAX},
};

START_TEST(test_level_parse)
{
	enum log_level lv = LOG_LVL_MAX;

	ck_assert_int_eq(
	    log_level_parse(level_names[_i].s, &lv), level_names[_i].rv);
	ck_assert_int_eq(lv, level_names[_i].lv);
	if (level_names[_i].rv == 0)
		ck_assert_int_eq(log_level_parse(log_level_str(lv), &lv), 0);
}
END_TEST

START_TEST(test_level_str)
{
	ck_assert_str_eq(log_level_str(LOG_LVL_DEBUG), "debug");
	ck_assert_str_eq(log_level_str(LOG_LVL_INFO), "info");
	ck_assert_str_eq(log_level_str(LOG_LVL_WARN), "warn");
	ck_assert_str_eq(log_level_str(LOG_LVL_ERROR), "error");
	ck_assert_str_eq(log_level_str(LOG_LVL_MAX), "unknown");
}
END_TEST

/* ---- secrets ---- */

#define SECRET "sk-ant-api03-Zq9XvT2mKpL7wR4n"

START_TEST(test_secret_redacted)
{
	struct lines l;

	ck_assert_int_eq(log_add_secret(SECRET), 0);
	log_info("rid-" SECRET, "key is " SECRET "!",
	    LF_S("auth", "Bearer " SECRET), LF_S(SECRET, "as a key"),
	    LF_S("twice", SECRET SECRET "x" SECRET), LF_I("n", 1));
	log_emitf(LOG_LVL_ERROR, NULL, "formatted %s and %s", SECRET, SECRET);
	lines_get(&l);
	ck_assert_uint_eq(l.n, 2);
	ck_assert_msg(
	    !uc_contains(l.raw, l.len, SECRET), "secret logged: %s", l.raw);
	ck_assert(uc_contains(l.raw, l.len, "[redacted]"));
	for (size_t i = 0; i < l.n; i++)
		ck_assert(!json_has_substr(l.obj[i], SECRET));
	/* What is not secret survives. */
	ck_assert_str_eq(jstr(l.obj[0], "auth"), "Bearer [redacted]");
	ck_assert_int_eq(json_integer_value(json_object_get(l.obj[0], "n")), 1);
	lines_free(&l);
}
END_TEST

/* Shortest secrets (8, 9 chars) are shorter than the mark. */
START_TEST(test_secret_short)
{
	struct lines l;

	ck_assert_int_eq(log_add_secret("A1b2C3d4"), 0);
	ck_assert_int_eq(log_add_secret("Z9y8X7w6V"), 0);
	log_info(NULL, "a A1b2C3d4 b Z9y8X7w6V c", LF_S("f", "A1b2C3d4"));
	lines_get(&l);
	ck_assert_uint_eq(l.n, 1);
	ck_assert(!uc_contains(l.raw, l.len, "A1b2C3d4"));
	ck_assert(!uc_contains(l.raw, l.len, "Z9y8X7w6V"));
	lines_free(&l);
}
END_TEST

START_TEST(test_secret_limits)
{
	char name[32];

	ck_assert_int_eq(log_add_secret(NULL), -EINVAL);
	ck_assert_int_eq(log_add_secret("1234567"), -EINVAL);
	for (int i = 0;; i++) {
		int rv;

		snprintf(name, sizeof(name), "secret-number-%d", i);
		rv = log_add_secret(name);
		if (rv != 0) {
			ck_assert_int_eq(rv, -ENOSPC);
			ck_assert_int_ge(i, 1);
			break;
		}
		ck_assert_int_lt(i, 1000);
	}
	log_clear_secrets();
	ck_assert_int_eq(log_add_secret("secret-after-clear"), 0);
}
END_TEST

START_TEST(test_secret_cleared)
{
	struct lines l;

	ck_assert_int_eq(log_add_secret(SECRET), 0);
	log_clear_secrets();
	log_info(NULL, SECRET);
	lines_get(&l);
	ck_assert(uc_contains(l.raw, l.len, SECRET));
	lines_free(&l);
}
END_TEST

/*
 * A secret made of characters JSON escapes (a JWT secret may well hold a
 * quote or a backslash) must not be readable in the decoded line either.
 */
static const char *const special_secrets[] = {
    "pa\"ss\\word-123",
    "tab\tsecret-456",
    "nl\nsecret-7890",
};

START_TEST(test_secret_escaped)
{
	const char *sec = special_secrets[_i];
	struct lines l;

	ck_assert_int_eq(log_add_secret(sec), 0);
	log_info(NULL, "auth failed", LF_S("key", sec));
	lines_get(&l);
	ck_assert_uint_eq(l.n, 1);
	ck_assert_msg(
	    !json_has_substr(l.obj[0], sec), "secret readable in %s", l.raw);
	lines_free(&l);
}
END_TEST

/* log_emitf's message limit must not cut a secret so that a long piece of
 * it escapes redaction. */
START_TEST(test_secret_cut_by_format)
{
	const size_t slen = strlen(SECRET);
	struct lines l;
	char *pad;

	ck_assert_int_eq(log_add_secret(SECRET), 0);
	for (size_t keep = 8; keep < slen; keep += 4) {
		size_t npad = 2047 - keep;

		pad = malloc(npad + 1);
		ck_assert_ptr_nonnull(pad);
		memset(pad, '.', npad);
		pad[npad] = '\0';
		log_emitf(LOG_LVL_INFO, NULL, "%s%s", pad, SECRET);
		free(pad);
	}
	lines_get(&l);
	for (size_t keep = 8; keep <= slen; keep++) {
		char piece[64];

		snprintf(piece, sizeof(piece), "%.*s", (int)keep, SECRET);
		ck_assert_msg(!uc_contains(l.raw, l.len, piece),
		    "first %zu characters of the secret logged", keep);
	}
	lines_free(&l);
}
END_TEST

/* ---- fatal ---- */

/* Runs fatal(fmt, a, b) in a child; returns its output (caller frees) and
 * exit status. */
static char *
fatal_in_child(const char *a, const char *b, int *ret_status)
{
	int fds[2], status;
	size_t len = 0, cap = 65536;
	char *out = malloc(cap);
	pid_t pid;
	ssize_t r;

	ck_assert_ptr_nonnull(out);
	ck_assert_int_eq(pipe(fds), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(fds[0]);
		log_set_fd(fds[1]);
		fatal("%s%s", a, b);
	}
	close(fds[1]);
	while ((r = read(fds[0], out + len, cap - 1 - len)) > 0)
		len += (size_t)r;
	close(fds[0]);
	out[len] = '\0';
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	*ret_status = WEXITSTATUS(status);
	return out;
}

START_TEST(test_fatal)
{
	json_t *o;
	char *out;
	int status;

	out = fatal_in_child("cannot start: ", "no key", &status);
	ck_assert_int_eq(status, 1);
	o = json_loads(out, 0, NULL);
	ck_assert_msg(o != NULL, "not JSON: %s", out);
	ck_assert_str_eq(jstr(o, "level"), "error");
	ck_assert_str_eq(jstr(o, "msg"), "cannot start: no key");
	json_decref(o);
	free(out);
}
END_TEST

/* Like log_emitf, fatal's message limit must not let a piece of a secret
 * through. */
START_TEST(test_fatal_secret_cut)
{
	const size_t slen = strlen(SECRET);
	char *pad, *out;
	int status;

	ck_assert_int_eq(log_add_secret(SECRET), 0);
	for (size_t keep = 8; keep < slen; keep += 6) {
		size_t npad = 2047 - keep;

		pad = malloc(npad + 1);
		ck_assert_ptr_nonnull(pad);
		memset(pad, '.', npad);
		pad[npad] = '\0';
		size_t leaked = 0;

		out = fatal_in_child(pad, SECRET, &status);
		free(pad);
		for (size_t k = 8; k <= slen; k++) {
			char piece[64];

			snprintf(piece, sizeof(piece), "%.*s", (int)k, SECRET);
			if (strstr(out, piece) != NULL)
				leaked = k;
		}
		free(out);
		ck_assert_int_eq(status, 1);
		ck_assert_msg(leaked == 0,
		    "first %zu characters of the secret logged", leaked);
	}
}
END_TEST

/* ---- truncation ---- */

static char *
str_of(size_t n, const char *unit)
{
	size_t ulen = strlen(unit);
	char *s = malloc(n * ulen + 1);

	ck_assert_ptr_nonnull(s);
	for (size_t i = 0; i < n; i++)
		memcpy(s + i * ulen, unit, ulen);
	s[n * ulen] = '\0';
	return s;
}

START_TEST(test_huge_field)
{
	char *huge = str_of(100000, "a");
	struct lines l;
	json_t *o;

	log_info("req_big", "big field", LF_I("before", 1), LF_S("body", huge),
	    LF_I("after", 2));
	free(huge);
	lines_get(&l);
	ck_assert_uint_eq(l.n, 1);
	ck_assert_uint_le(l.linelen[0], LINE_MAX_BYTES);
	o = l.obj[0];
	ck_assert_str_eq(jstr(o, "msg"), "big field");
	ck_assert_str_eq(jstr(o, "request_id"), "req_big");
	ck_assert_int_eq(json_integer_value(json_object_get(o, "before")), 1);
	ck_assert(json_is_true(json_object_get(o, "truncated")));
	lines_free(&l);
}
END_TEST

/* Around the limit, with characters that grow when escaped. */
static const char *const fill_units[] = {"a", "\"", "\x01", "\xc3\xa9", "\\"};

START_TEST(test_truncation_boundary)
{
	struct lines *l = calloc(1, sizeof(*l));

	ck_assert_ptr_nonnull(l);
	for (size_t n = 1200; n < 8400; n += 37) {
		char *s = str_of(n, fill_units[_i]);

		log_info("req_edge", "edge", LF_S("v", s), LF_I("n", (long)n));
		free(s);
	}
	lines_get(l);
	ck_assert_uint_gt(l->n, 100);
	for (size_t i = 0; i < l->n; i++) {
		json_t *v = json_object_get(l->obj[i], "v");
		json_t *n = json_object_get(l->obj[i], "n");

		ck_assert_uint_le(l->linelen[i], LINE_MAX_BYTES);
		/* Either the fields are whole or the line says they are not. */
		if (v == NULL || n == NULL) {
			ck_assert_msg(json_is_true(json_object_get(
					  l->obj[i], "truncated")),
			    "line %zu lost a field without a mark", i);
			continue;
		}
		ck_assert_uint_eq(json_string_length(v),
		    (size_t)json_integer_value(n) * strlen(fill_units[_i]));
	}
	lines_free(l);
	free(l);
}
END_TEST

START_TEST(test_huge_msg)
{
	char *huge = str_of(20000, "m");
	struct lines l;

	log_info("req_m", huge, LF_I("n", 1));
	log_emitf(LOG_LVL_INFO, "req_f", "%s", huge);
	free(huge);
	lines_get(&l);
	ck_assert_uint_eq(l.n, 2);
	ck_assert_str_eq(jstr(l.obj[0], "request_id"), "req_m");
	ck_assert_uint_le(l.linelen[0], LINE_MAX_BYTES);
	lines_free(&l);
}
END_TEST

START_TEST(test_huge_key)
{
	char *huge = str_of(20000, "k");
	struct lines l;

	log_info("req_k", "huge key", LF_S(huge, "v"), LF_I("n", 1));
	free(huge);
	lines_get(&l);
	ck_assert_uint_eq(l.n, 1);
	ck_assert_str_eq(jstr(l.obj[0], "msg"), "huge key");
	lines_free(&l);
}
END_TEST

START_TEST(test_huge_request_id)
{
	char *huge = str_of(20000, "r");
	struct lines l;

	log_info(huge, "huge request id", LF_I("n", 1));
	free(huge);
	lines_get(&l);
	ck_assert_uint_eq(l.n, 1);
	ck_assert_uint_le(l.linelen[0], LINE_MAX_BYTES);
	lines_free(&l);
}
END_TEST

START_TEST(test_many_fields)
{
	struct log_field f[601];
	char keys[600][8];
	struct lines l;

	for (int i = 0; i < 600; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%d", i);
		f[i] = LF_S(keys[i], "0123456789");
	}
	f[600] = LF_END;
	log_emit(LOG_LVL_INFO, "req_many", "many", f);
	lines_get(&l);
	ck_assert_uint_eq(l.n, 1);
	ck_assert(json_is_true(json_object_get(l.obj[0], "truncated")));
	ck_assert_str_eq(jstr(l.obj[0], "k0"), "0123456789");
	lines_free(&l);
}
END_TEST

Suite *
log_suite(void)
{
	Suite *s = suite_create("log");
	TCase *tc;

	tc = tcase_create("shape");
	tcase_add_checked_fixture(tc, cap_setup, cap_teardown);
	tcase_add_test(tc, test_line_shape);
	tcase_add_test(tc, test_no_request_id);
	tcase_add_test(tc, test_threads_no_interleave);
	suite_add_tcase(s, tc);

	tc = tcase_create("escaping");
	tcase_add_checked_fixture(tc, cap_setup, cap_teardown);
	tcase_add_loop_test(
	    tc, test_escape, 0, sizeof(esc_cases) / sizeof(esc_cases[0]));
	tcase_add_loop_test(tc, test_escape_invalid_utf8, 0,
	    sizeof(bad_utf8_cases) / sizeof(bad_utf8_cases[0]));
	suite_add_tcase(s, tc);

	tc = tcase_create("levels");
	tcase_add_checked_fixture(tc, cap_setup, cap_teardown);
	tcase_add_loop_test(tc, test_level_filter, 0, LOG_LVL_MAX);
	tcase_add_loop_test(tc, test_level_parse, 0,
	    sizeof(level_names) / sizeof(level_names[0]));
	tcase_add_test(tc, test_level_str);
	suite_add_tcase(s, tc);

	tc = tcase_create("secrets");
	tcase_add_checked_fixture(tc, cap_setup, cap_teardown);
	tcase_add_test(tc, test_secret_redacted);
	tcase_add_test(tc, test_secret_short);
	tcase_add_test(tc, test_secret_limits);
	tcase_add_test(tc, test_secret_cleared);
	tcase_add_loop_test(tc, test_secret_escaped, 0,
	    sizeof(special_secrets) / sizeof(special_secrets[0]));
	tcase_add_test(tc, test_secret_cut_by_format);
	suite_add_tcase(s, tc);

	tc = tcase_create("fatal");
	tcase_add_checked_fixture(tc, cap_setup, cap_teardown);
	tcase_add_test(tc, test_fatal);
	tcase_add_test(tc, test_fatal_secret_cut);
	suite_add_tcase(s, tc);

	tc = tcase_create("truncation");
	tcase_add_checked_fixture(tc, cap_setup, cap_teardown);
	tcase_add_test(tc, test_huge_field);
	tcase_add_loop_test(tc, test_truncation_boundary, 0,
	    sizeof(fill_units) / sizeof(fill_units[0]));
	tcase_add_test(tc, test_huge_msg);
	tcase_add_test(tc, test_huge_key);
	tcase_add_test(tc, test_huge_request_id);
	tcase_add_test(tc, test_many_fields);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return uc_run(log_suite());
}
