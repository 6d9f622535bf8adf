#include "pw_sse.h"

#include <string.h>

#define PW_SSE_EVENT_NAME_MAX 256

void
pw_sse_init(struct pw_sse *s, size_t max, pw_sse_event_fn fn, void *arg)
{
	memset(s, 0, sizeof(*s));
	s->fn = fn;
	s->arg = arg;
	buf_init(&s->line, max);
	buf_init(&s->event, PW_SSE_EVENT_NAME_MAX);
	buf_init(&s->data, max);
}

void
pw_sse_free(struct pw_sse *s)
{
	buf_free(&s->line);
	buf_free(&s->event);
	buf_free(&s->data);
}

static void
sse_event_reset(struct pw_sse *s)
{
	buf_reset(&s->event);
	buf_reset(&s->data);
	s->has_data = false;
	s->has_fields = false;
	s->event_skip = false;
}

static void
sse_dispatch(struct pw_sse *s)
{
	if (s->event_skip) {
		s->skipped++;
	} else if (s->has_data) {
		size_t n = s->data.len;

		/* Every data line added a '\n'; the last one is not data. */
		if (n > 0) {
			n--;
			s->data.data[n] = '\0';
		}
		s->events++;
		s->fn(s->arg, s->event.data != NULL ? s->event.data : "",
		    s->data.data != NULL ? s->data.data : "", n);
	}
	sse_event_reset(s);
}

static void
sse_line(struct pw_sse *s, const char *p, size_t n)
{
	const char *colon, *val;
	size_t flen, vlen;

	if (n == 0) {
		sse_dispatch(s);
		return;
	}
	if (p[0] == ':')
		return; /* comment */
	s->has_fields = true;
	if ((colon = memchr(p, ':', n)) != NULL) {
		flen = (size_t)(colon - p);
		val = colon + 1;
		vlen = n - flen - 1;
		if (vlen > 0 && val[0] == ' ') {
			val++;
			vlen--;
		}
	} else {
		flen = n;
		val = p + n;
		vlen = 0;
	}
	if (flen == 5 && memcmp(p, "event", 5) == 0) {
		buf_reset(&s->event);
		if (buf_append(&s->event, val, vlen) != 0)
			s->event_skip = true;
	} else if (flen == 4 && memcmp(p, "data", 4) == 0) {
		s->has_data = true;
		if (buf_append(&s->data, val, vlen) != 0 ||
		    buf_append(&s->data, "\n", 1) != 0)
			s->event_skip = true;
	}
	/* "id", "retry" and unknown fields do not matter here. */
}

/* Index of the first '\r' or '\n' in p[0..n), or n. */
static size_t
sse_eol(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] == '\n' || p[i] == '\r')
			return i;
	return n;
}

void
pw_sse_feed(struct pw_sse *s, const char *p, size_t n)
{
	while (n > 0) {
		size_t i;

		if (s->after_cr) {
			s->after_cr = false;
			if (p[0] == '\n') {
				p++;
				n--;
				continue;
			}
		}
		i = sse_eol(p, n);
		if (i == n) {
			/* An unfinished line: keep it for the next feed. */
			if (!s->line_skip && buf_append(&s->line, p, n) != 0) {
				s->line_skip = true;
				buf_reset(&s->line);
			}
			return;
		}
		if (s->line_skip) {
			s->line_skip = false;
			s->has_fields = true;
			s->event_skip = true;
		} else if (s->line.len == 0) {
			sse_line(s, p, i); /* whole line in this feed */
		} else if (buf_append(&s->line, p, i) != 0) {
			s->has_fields = true;
			s->event_skip = true;
		} else {
			sse_line(s, s->line.data, s->line.len);
		}
		buf_reset(&s->line);
		if (p[i] == '\r')
			s->after_cr = true;
		p += i + 1;
		n -= i + 1;
	}
}

bool
pw_sse_at_boundary(const struct pw_sse *s)
{
	return s->line.len == 0 && !s->line_skip && !s->has_fields;
}
