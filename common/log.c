/*
 * One JSON object per line, written with a single write(2) so lines from
 * several threads never interleave.
 */
#include "log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"

#define LOG_LINE_MAX    8192
#define LOG_SECRETS_MAX 16

static const char *log_daemon = "aiproxy";
static atomic_int log_level = LOG_LVL_INFO;
static atomic_int log_fd = STDERR_FILENO;
static char *log_secrets[LOG_SECRETS_MAX];
static size_t log_nsecrets;

static const char *const log_level_names[LOG_LVL_MAX] = {
    [LOG_LVL_DEBUG] = "debug",
    [LOG_LVL_INFO] = "info",
    [LOG_LVL_WARN] = "warn",
    [LOG_LVL_ERROR] = "error",
};

struct line {
	char buf[LOG_LINE_MAX];
	size_t len;
	int truncated;
};

void
log_init(const char *daemon, enum log_level level)
{
	log_daemon = daemon;
	log_level = level;
}

void
log_set_level(enum log_level level)
{
	log_level = level;
}

enum log_level
log_get_level(void)
{
	return log_level;
}

bool
log_enabled(enum log_level level)
{
	return (int)level >= log_level;
}

void
log_set_fd(int fd)
{
	log_fd = fd < 0 ? STDERR_FILENO : fd;
}

int
log_level_parse(const char *s, enum log_level *ret)
{
	static const struct {
		const char *name;
		enum log_level level;
	} names[] = {
	    {"debug", LOG_LVL_DEBUG},
	    {"info", LOG_LVL_INFO},
	    {"warn", LOG_LVL_WARN},
	    {"warning", LOG_LVL_WARN},
	    {"error", LOG_LVL_ERROR},
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcasecmp(s, names[i].name) == 0) {
			*ret = names[i].level;
			return 0;
		}
	}
	return -EINVAL;
}

const char *
log_level_str(enum log_level level)
{
	if (level >= LOG_LVL_MAX)
		return "unknown";
	return log_level_names[level];
}

static void line_put_json_str(struct line *l, const char *s);

int
log_add_secret(const char *s)
{
	struct line l;

	if (s == NULL || strlen(s) < 8)
		return -EINVAL;
	if (log_nsecrets + 2 > LOG_SECRETS_MAX)
		return -ENOSPC;
	/* Lines hold strings JSON-escaped: match that form too. */
	l.len = 0;
	l.truncated = 0;
	line_put_json_str(&l, s);
	if (l.truncated || l.len < 2)
		return -EINVAL;
	l.buf[l.len - 1] = '\0';
	if ((log_secrets[log_nsecrets] = strdup(s)) == NULL)
		return -ENOMEM;
	log_nsecrets++;
	if (strcmp(l.buf + 1, s) != 0) {
		if ((log_secrets[log_nsecrets] = strdup(l.buf + 1)) == NULL)
			return -ENOMEM;
		log_nsecrets++;
	}
	return 0;
}

void
log_clear_secrets(void)
{
	for (size_t i = 0; i < log_nsecrets; i++) {
		free(log_secrets[i]);
		log_secrets[i] = NULL;
	}
	log_nsecrets = 0;
}

/* Room is kept for the closing "}\n" and a truncation marker. */
#define LINE_RESERVE 32

static void
line_put(struct line *l, const char *p, size_t n)
{
	if (l->truncated)
		return;
	if (l->len + n > sizeof(l->buf) - LINE_RESERVE) {
		l->truncated = 1;
		return;
	}
	memcpy(l->buf + l->len, p, n);
	l->len += n;
}

static void
line_puts(struct line *l, const char *s)
{
	line_put(l, s, strlen(s));
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong
 * forms, no surrogates, <= U+10FFFF), or 0. */
static size_t
utf8_seq_len(const unsigned char *p)
{
	unsigned c = p[0];
	size_t n, i;
	unsigned cp;

	if (c >= 0xc2 && c <= 0xdf)
		n = 2, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, cp = c & 0x07;
	else
		return 0;
	for (i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

static void
line_put_json_str(struct line *l, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	char esc[6];

	line_put(l, "\"", 1);
	for (; *p != '\0'; p++) {
		switch (*p) {
		case '"':
			line_put(l, "\\\"", 2);
			break;
		case '\\':
			line_put(l, "\\\\", 2);
			break;
		case '\n':
			line_put(l, "\\n", 2);
			break;
		case '\r':
			line_put(l, "\\r", 2);
			break;
		case '\t':
			line_put(l, "\\t", 2);
			break;
		default:
			if (*p < 0x20 || *p == 0x7f) {
				memcpy(esc, "\\u00", 4);
				esc[4] = hex[*p >> 4];
				esc[5] = hex[*p & 0xf];
				line_put(l, esc, 6);
			} else if (*p < 0x80) {
				line_put(l, (const char *)p, 1);
			} else {
				size_t n = utf8_seq_len(p);

				if (n == 0) {
					/* Not UTF-8: keep the line valid. */
					line_put(l, "\\ufffd", 6);
				} else {
					line_put(l, (const char *)p, n);
					p += n - 1;
				}
			}
		}
	}
	line_put(l, "\"", 1);
}

static void
line_put_key(struct line *l, const char *key)
{
	line_put(l, ",", 1);
	line_put_json_str(l, key);
	line_put(l, ":", 1);
}

static void
line_redact(struct line *l)
{
	static const char mark[] = "[redacted]";

	for (size_t i = 0; i < log_nsecrets; i++) {
		size_t n = strlen(log_secrets[i]);
		char *hit;

		while (
		    (hit = memmem(l->buf, l->len, log_secrets[i], n)) != NULL) {
			/* The mark is never longer than a secret (>= 8). */
			size_t m = n < sizeof(mark) - 1 ? n : sizeof(mark) - 1;
			size_t tail = l->len - (size_t)(hit - l->buf) - n;

			memcpy(hit, mark, m);
			memmove(hit + m, hit + n, tail);
			l->len -= n - m;
		}
	}
}

void
log_emit(enum log_level level, const char *request_id, const char *msg,
    const struct log_field *fields)
{
	struct line l;
	char ts[32], num[64];
	ssize_t w;
	size_t off, mark;

	if (!log_enabled(level))
		return;
	l.len = 0;
	l.truncated = 0;
	clock_fmt_iso8601(clock_real_ms(), ts, sizeof(ts));
	line_puts(&l, "{\"ts\":\"");
	line_puts(&l, ts);
	line_puts(&l, "\",\"level\":\"");
	line_puts(&l, log_level_str(level));
	line_puts(&l, "\",\"daemon\":");
	line_put_json_str(&l, log_daemon);
	mark = l.len;
	if (request_id != NULL && request_id[0] != '\0') {
		line_put_key(&l, "request_id");
		line_put_json_str(&l, request_id);
	}
	if (!l.truncated)
		mark = l.len;
	line_put_key(&l, "msg");
	line_put_json_str(&l, msg);
	for (; fields != NULL && fields->kind != LOG_F_END && !l.truncated;
	     fields++) {
		mark = l.len;
		line_put_key(&l, fields->key);
		switch (fields->kind) {
		case LOG_F_STR:
			if (fields->s == NULL)
				line_puts(&l, "null");
			else
				line_put_json_str(&l, fields->s);
			break;
		case LOG_F_INT:
			snprintf(num, sizeof(num), "%lld", fields->i);
			line_puts(&l, num);
			break;
		case LOG_F_DBL:
			snprintf(num, sizeof(num), "%.6g", fields->d);
			line_puts(&l, num);
			break;
		case LOG_F_BOOL:
			line_puts(&l, fields->i ? "true" : "false");
			break;
		case LOG_F_END:
			break;
		}
	}
	if (l.truncated) {
		/* Drop the field that did not fit, keep the line valid; the
		 * reserve always has room for the marker. */
		static const char tmark[] = ",\"truncated\":true";

		l.len = mark;
		memcpy(l.buf + l.len, tmark, sizeof(tmark) - 1);
		l.len += sizeof(tmark) - 1;
	}
	line_redact(&l);
	l.buf[l.len++] = '}';
	l.buf[l.len++] = '\n';
	for (off = 0; off < l.len; off += (size_t)w) {
		w = write(log_fd, l.buf + off, l.len - off);
		if (w < 0 && errno == EINTR) {
			w = 0;
			continue;
		}
		if (w <= 0)
			break;
	}
}

void
log_emitf(enum log_level level, const char *request_id, const char *fmt, ...)
{
	char *msg = NULL;
	va_list ap;
	int n;

	if (!log_enabled(level))
		return;
	/* Formatted whole (never cut), so redaction sees every secret. */
	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	log_emit(level, request_id, msg, NULL);
	free(msg);
}

void
fatal(const char *fmt, ...)
{
	char *msg = NULL;
	va_list ap;

	/* Formatted whole, as in log_emitf(), so no secret is ever cut. */
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	log_emit(LOG_LVL_ERROR, NULL, msg ? msg : fmt, NULL);
	free(msg);
	exit(1);
}
